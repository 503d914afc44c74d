"""The one way the tests build models and take their results apart.

``build`` makes any registered cell (``lstm.CELLS``) or test-only cell (``toy_cells``) by
name, with the driver's options, in float64 and eval mode unless told otherwise; ``parts``
and ``map_state`` unwrap a cell's opaque state (one tensor or a tuple of them); ``close``
is the exact comparison every parity test uses. Only the public API is used, so the tests
survive a rewrite of the core's private modules.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from lstm import CELLS, Recurrent
from reference import Initial, Step, run_reference, stack_states
from toy_cells import (
    HoistedLSTM,
    LaneCell,
    ReferenceLSTM,
    TorchFaceLSTM,
    TorchFaceStepLSTM,
    TupleStateCell,
)

DOUBLE = torch.float64
INPUT, HIDDEN, LANES = 3, 4, 3

GENERIC: dict[str, type[Recurrent]] = {
    **CELLS,
    "lstm-reference": ReferenceLSTM,
    "lstm-hoisted": HoistedLSTM,
    "toy-lanes": LaneCell,
    "toy-tuple": TupleStateCell,
    "nn-lstm": TorchFaceLSTM,
    "nn-lstm-step": TorchFaceStepLSTM,
}
"""Every registered cell, the LSTM held on its other two engines, the toy cells, and
``lstm.nn.LSTM`` (nn.LSTM's face) with a user's step on it."""

NAMES = sorted(CELLS)
GENERIC_NAMES = sorted(GENERIC)
PER_STEP_REGULARISERS_REFUSED = {"mlstm"}
"""Cells that refuse ``recurrent_dropout`` and ``zoneout`` (ValueError): the mLSTM reads no
hidden state, and its stabilised memory cannot be zoned out part by part."""
UNBOUNDED = {"mlstm"}
"""Cells whose output has no bound: the mLSTM reads out ``C q / max(|n.q|, e^-m)``."""
LANE_CHOICE = {"stochastic-array", "stochastic-memory-array"}
"""Cells that pick one lane per unit by its largest score (by default in both modes; they
draw at random only with ``sample_lanes=True``): a discontinuous function of the input, so
rounding (bf16) may pick another lane for a few units."""


def takes_lanes(cls: type[Recurrent]) -> bool:
    """Whether the class's constructor takes ``k`` (memory cells per unit)."""
    return "k" in inspect.signature(cls).parameters


def build(
    name: str,
    input_size: int = INPUT,
    hidden_size: int = HIDDEN,
    *,
    k: int = LANES,
    dtype: torch.dtype = DOUBLE,
    **options: Any,
) -> Recurrent:
    """The cell called ``name`` in :data:`GENERIC`, in eval mode; ``k`` goes to lane cells only.

    A cell with heads (the mLSTM) gets as many heads, up to 4, as divide ``hidden_size``.

    Eval mode, as the comparisons with a reference want (dropout and the like off);
    training-mode tests call ``.train()``.
    """
    cls = GENERIC[name]
    if takes_lanes(cls):
        options["k"] = k
    if "num_heads" in inspect.signature(cls).parameters:  # as many heads (<= 4) as divide H
        options.setdefault("num_heads", math.gcd(hidden_size, 4))
    return cls(input_size, hidden_size, dtype=dtype, **options).eval()


def parts(state: Any) -> tuple[Tensor, ...]:
    """A cell's state as a tuple of tensors, whether it is one tensor or a tuple."""
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def map_state(state: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``fn`` applied to every tensor of a state, keeping its structure."""
    return tuple(fn(part) for part in state) if isinstance(state, tuple) else fn(state)


def results(out: Tensor, final: tuple[Tensor, Any]) -> tuple[Tensor, ...]:
    """A forward's outputs, hidden and every state tensor, flat: ``(out, hidden, *state)``."""
    hidden, state = final
    return (out, hidden, *parts(state))


def close(got: Any, want: Any, atol: float = 1e-12) -> None:
    """Equal to ``atol`` (absolute, no relative slack); nested tuples compare element-wise."""
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


def projection(probes: Sequence[Tensor], tensors: Sequence[Tensor]) -> Tensor:
    """A random linear function of several outputs, to compare all their gradients at once."""
    return torch.stack([(p * t).sum() for p, t in zip(probes, tensors, strict=True)]).sum()


def gradients(tensors: Sequence[Tensor], inputs: Sequence[Tensor], seed: int = 0) -> list[Tensor]:
    """Gradients of a seeded random projection of ``tensors`` with respect to ``inputs``."""
    generator = torch.Generator().manual_seed(seed)
    probes = [torch.randn(t.shape, dtype=t.dtype, generator=generator) for t in tensors]
    return list(torch.autograd.grad(projection(probes, tensors), list(inputs)))


def lstm_weights(model: Recurrent) -> dict[tuple[int, int], tuple[Tensor, ...]]:
    """(W_ih, W_hh, b_ih, b_hh) of every cell of an LSTM-layout model; biases may be None."""
    weights = {}
    for layer in range(model.num_layers):
        for direction in range(model.num_directions):
            cell = model.cell_parts(layer, direction)
            i2h, h2h = cell["i2h"], cell["h2h"]
            weights[(layer, direction)] = (i2h.weight, h2h.weight, i2h.bias, h2h.bias)
    return weights


def assert_matches_reference(
    model: Recurrent,
    x: Tensor,
    step: Step,
    initial: Initial,
    lengths: list[int] | None = None,
    initial_state: Any = None,
    state_view: Callable[[Any], tuple[Tensor, ...]] = parts,
) -> None:
    """``model`` equals :func:`reference.run_reference` of its equations (``step``).

    Outputs, final hidden and final state to 1e-12; the gradients of a random projection of
    all of them with respect to the input and every parameter to 1e-10; all in float64.
    ``initial`` must give the reference what ``initial_state`` gives the model (default
    zeros); ``state_view`` maps either final state to the tensors compared (default: its
    tensors as they are).
    """
    x = x.detach().requires_grad_()
    given_lengths = None if lengths is None else torch.tensor(lengths)
    out, (hidden, state) = model(x, initial_state, lengths=given_lengths)
    ref_out, ref_hidden, ref_states = run_reference(
        x,
        step,
        initial,
        num_layers=model.num_layers,
        bidirectional=model.num_directions == 2,
        lengths=lengths,
    )
    ours = (out, hidden, *state_view(state))
    theirs = (ref_out, ref_hidden, *state_view(stack_states(ref_states)))
    close(ours, theirs, atol=1e-12)
    inputs = [x, *model.parameters()]
    close(gradients(ours, inputs), gradients(theirs, inputs), atol=1e-10)
