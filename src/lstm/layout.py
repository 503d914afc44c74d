"""What ``forward`` takes and gives back, in the caller's layout.

Every engine works on one layout: ``inputs (batch, seq_len, input_size)`` and lengths on the
CPU (or None). :func:`read_input` brings ``batch_first=False``, unbatched and
``PackedSequence`` input to it, checking everything before any reshape;
:func:`write_output` stacks the final states of every cell and gives the outputs back in the
layout they came in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstm.checks import (
    ShapeError,
    check_lengths,
    check_like_parameters,
    check_tensor,
    first_parameter,
    shape_str,
)
from lstm.state import (
    CellState,
    State,
    map_state,
    per_step_states,
    stack_states,
    stacked_cells,
)

if TYPE_CHECKING:
    from lstm.driver import Recurrent


@dataclass(frozen=True)
class Batch:
    """``forward``'s input in the one layout the engines use.

    Attributes
    ----------
    inputs : Tensor of shape (batch, seq_len, input_size)
    lengths : Tensor of shape (batch,) on the CPU, or None
        The true lengths, as given or unpacked; None if none were given.
    packed : PackedSequence or None
        The input, if it came packed (the outputs are packed the same way).
    unbatched : bool
        Whether the input was one sequence without a batch dimension.
    ragged : Tensor of shape (batch,) on the CPU, or None
        ``lengths`` if some sequence ends before ``seq_len``, else None (no masking needed).
        Worked out once here: reading a tensor's value is a host sync, and a graph break
        under ``torch.compile``.
    """

    inputs: Tensor
    lengths: Tensor | None
    packed: PackedSequence | None
    unbatched: bool
    ragged: Tensor | None


def read_input(module: Recurrent, x: Any, lengths: Any) -> Batch:
    """Check ``forward``'s input and lengths and bring them to :class:`Batch`'s layout.

    Raises
    ------
    TypeError, ValueError
        Naming the module's class, the expected and the given value: lengths with a
        ``PackedSequence``, a wrong device or dtype, bad lengths; a wrong rank, width or
        shape of the input or the lengths is a :class:`~lstm.checks.ShapeError` (a
        ``ValueError`` that ``except RuntimeError`` catches too, as for ``torch.nn.LSTM``).
    """
    owner = type(module).__name__
    packed = x if isinstance(x, PackedSequence) else None
    if packed is not None:
        inputs, lengths = _unpack(owner, packed, lengths, module.input_size)
        unbatched = False
    else:
        inputs, unbatched = _batch_first(owner, x, module.input_size, module.batch_first)
    check_like_parameters(owner, [("input", inputs)], first_parameter(module))
    ragged = None
    if lengths is not None:
        lengths = check_lengths(owner, lengths, inputs.shape[0], inputs.shape[1])
        shorter = lengths.numel() > 0 and int(lengths.min()) < inputs.shape[1]
        ragged = lengths if shorter else None  # an empty batch has nothing to mask
    return Batch(inputs, lengths, packed, unbatched, ragged)


def _unpack(
    owner: str, packed: PackedSequence, lengths: Any, input_size: int
) -> tuple[Tensor, Tensor]:
    """Padded ``(B, T, F)`` inputs and the lengths of a ``PackedSequence``."""
    if lengths is not None:
        raise ValueError(
            f"{owner}: a PackedSequence carries its own lengths; expected lengths=None, "
            f"got a {type(lengths).__name__}"
        )
    data = check_tensor(owner, "PackedSequence data", packed.data)
    if data.dim() != 2 or data.shape[-1] != input_size:
        raise ShapeError(
            f"{owner}: expected PackedSequence data of shape "
            f"{shape_str(['total_steps', input_size])}, got {shape_str(data.shape)}"
        )
    inputs, lengths = pad_packed_sequence(packed, batch_first=True)
    return inputs, lengths


def _batch_first(owner: str, x: Any, input_size: int, batch_first: bool) -> tuple[Tensor, bool]:
    """``x`` as ``(B, T, F)``, and whether it was unbatched ``(T, F)``."""
    x = check_tensor(owner, "input", x)
    layout = "(batch, seq_len, input_size)" if batch_first else "(seq_len, batch, input_size)"
    if x.dim() not in (2, 3):
        raise ShapeError(
            f"{owner}: expected input of rank 3 {layout} or rank 2 (seq_len, input_size), "
            f"got rank {x.dim()} with shape {shape_str(x.shape)}"
        )
    unbatched = x.dim() == 2
    names = ["seq_len"] if unbatched else ["batch", "seq_len"]
    if not batch_first:
        names.reverse()
    if x.shape[-1] != input_size:
        wanted = shape_str([*names, input_size])
        raise ShapeError(f"{owner}: expected input of shape {wanted}, got {shape_str(x.shape)}")
    # An empty batch is fine (empty outputs, as torch.nn.LSTM gives); an empty sequence is
    # refused, as torch.nn.LSTM refuses it: there is no last step to take the states at.
    if x.shape[names.index("seq_len")] == 0:
        raise ShapeError(
            f"{owner}: expected seq_len >= 1, got an input of shape {shape_str(x.shape)}"
        )
    if unbatched:
        return x.unsqueeze(
            0
        ), True  # (1, T, F): unbatched input is (seq_len, input_size) either way
    return (x if batch_first else x.transpose(0, 1)), False  # (B, T, F)


def write_output(
    batch: Batch,
    output: Tensor,
    finals: Sequence[CellState],
    collected: list[list[State]] | None,
    batch_first: bool,
) -> tuple[Any, ...]:
    """``forward``'s results in the caller's layout.

    Parameters
    ----------
    batch : Batch
        The input as :func:`read_input` read it.
    output : Tensor of shape (batch, seq_len, num_directions * hidden_size)
    finals : list of (hidden, state)
        One per cell, layer 0 forward first.
    collected : list of lists of states, or None
        With ``return_all_states``: the last layer's state after every step, per direction.
    batch_first : bool
        The module's layout for batched tensor input.

    Returns
    -------
    tuple
        ``(outputs, (hidden, state))``, plus the per-step states if ``collected`` is given.
    """
    hidden: Tensor
    state: State
    stacks = stacked_cells(finals)  # the kernel's own (L*D, B, H) tensors
    if stacks is not None:
        hidden, state = stacks
    else:
        hidden = torch.stack([h for h, _ in finals])  # (L*D, B, H)
        state = stack_states([s for _, s in finals], batch.inputs.shape[0])
    all_states = None if collected is None else per_step_states(collected)
    outputs: Tensor | PackedSequence = output
    if batch.packed is not None:
        outputs = _repack(output, batch.packed, batch.lengths)
    elif batch.unbatched:
        outputs = output.squeeze(0)
        hidden, state = hidden.squeeze(-2), map_state(lambda s: s.squeeze(-2), state)
        if all_states is not None:
            all_states = map_state(lambda s: s.squeeze(-3), all_states)
    elif not batch_first:
        outputs = output.transpose(0, 1)
        if all_states is not None:
            all_states = map_state(lambda s: s.transpose(-3, -2), all_states)
    result = (outputs, (hidden, state))
    return result if all_states is None else (*result, all_states)


def _repack(output: Tensor, packed: PackedSequence, lengths: Tensor | None) -> PackedSequence:
    """Pack ``(B, T, ·)`` outputs in the same order and with the same indices as the input."""
    assert lengths is not None  # pad_packed_sequence always gives lengths
    if packed.sorted_indices is not None:
        index = packed.sorted_indices.to(output.device)
        output = output.index_select(0, index)
        lengths = lengths.index_select(0, packed.sorted_indices.cpu())
    data = pack_padded_sequence(output, lengths, batch_first=True, enforce_sorted=True).data
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
