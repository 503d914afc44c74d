r"""The LSTM family: the reference page's ``LSTM``, its step as a pure function, and
exact conversion to and from ``torch.nn.LSTM``.

Gate layout
-----------
The ``4 * hidden_size`` rows of ``i2h`` and ``h2h`` are four blocks of ``hidden_size`` rows,
in the order of the original implementation: **forget, input, output, candidate**
(f, i, o, g). ``torch.nn.LSTM`` orders them i, f, g, o; :meth:`LSTM.from_torch` and
:meth:`LSTM.to_torch` permute the blocks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstm.checks import check_forward_cell, check_int
from lstm.driver import Recurrent
from lstm.engines import FastPath, plain_linear_problem
from lstm.parameters import (
    CellPart,
    Device,
    DType,
    ReadOnlyCopy,
    cell_parts,
    cell_suffix,
    part_tensor,
)
from lstm.state import CellState, StackedCells, stacked_cells, takes_original_layout

GATES = ("forget", "input", "output", "candidate")
"""Order of the four gate blocks in ``i2h`` and ``h2h`` rows."""

# Block k of our layout is block TORCH_GATE_ORDER[k] of torch.nn.LSTM's (i, f, g, o).
# The permutation swaps 0<->1 and 2<->3, so it is its own inverse: one table serves both ways.
_TORCH_GATE_ORDER = (1, 0, 3, 2)


def lstm_pointwise(gates: Tensor, state: Tensor, order: str = "fiog") -> tuple[Tensor, Tensor]:
    r"""The element-wise part of one LSTM step, from pre-activations to the new state.

    .. math::

        f &= \sigma(a_f), \quad i = \sigma(a_i), \quad o = \sigma(a_o), \quad g = \tanh(a_g) \\
        c' &= f \odot c + i \odot g \\
        h' &= o \odot \tanh(c')

    Parameters
    ----------
    gates : Tensor of shape (batch, 4 * hidden_size)
        Pre-activations ``a = W_ih x + b_ih + W_hh h + b_hh``, four blocks in ``order``.
    state : Tensor of shape (batch, hidden_size)
        Cell state ``c`` of the previous step.
    order : str, default "fiog"
        The order of the gate blocks: ``"fiog"`` (forget, input, output, candidate: the
        reference page's layout, :class:`LSTM`) or ``"ifgo"`` (``torch.nn.LSTM``'s, the
        layout of :class:`lstm.nn.LSTM`).

    Returns
    -------
    hidden : Tensor of shape (batch, hidden_size)
    state : Tensor of shape (batch, hidden_size)

    Raises
    ------
    ValueError
        For another ``order``.
    """
    if order == "fiog":
        forget, input_gate, output, candidate = gates.chunk(4, dim=-1)
    elif order == "ifgo":
        input_gate, forget, candidate, output = gates.chunk(4, dim=-1)
    else:
        raise ValueError(f"lstm_pointwise: expected order 'fiog' or 'ifgo', got {order!r}")
    state = torch.sigmoid(forget) * state + torch.sigmoid(input_gate) * torch.tanh(candidate)
    hidden = torch.sigmoid(output) * torch.tanh(state)
    return hidden, state


def lstm_cell(
    x: Tensor,
    hidden: Tensor,
    state: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    weight_hr: Tensor | None = None,
    order: str = "fiog",
) -> tuple[Tensor, Tensor]:
    r"""One LSTM step as a pure function of its parameters.

    Without ``weight_hr``, the step of :func:`lstm_pointwise`; with it (an LSTM with
    projections, ``torch.nn.LSTM``'s ``proj_size``), the hidden output is projected:

    .. math::

        h_t = W_{hr} \, (o_t \odot \tanh(c_t))

    Parameters
    ----------
    x : Tensor of shape (batch, input_size)
    hidden : Tensor of shape (batch, hidden_size), or (batch, proj_size) with ``weight_hr``
    state : Tensor of shape (batch, hidden_size)
    weight_ih : Tensor of shape (4 * hidden_size, input_size)
    weight_hh : Tensor of shape (4 * hidden_size, hidden_size), or (4 * hidden_size, proj_size)
    bias_ih, bias_hh : Tensor of shape (4 * hidden_size,), optional
    weight_hr : Tensor of shape (proj_size, hidden_size), optional
    order : str, default "fiog"
        The order of the gate blocks in the rows of the weights and biases: ``"fiog"``
        (:class:`LSTM`'s) or ``"ifgo"`` (``torch.nn.LSTM``'s and :class:`lstm.nn.LSTM`'s).

    Returns
    -------
    hidden : Tensor of shape (batch, hidden_size), or (batch, proj_size) with ``weight_hr``
    state : Tensor of shape (batch, hidden_size)
        See :func:`lstm_pointwise` for the equations.
    """
    gates = nn.functional.linear(x, weight_ih, bias_ih) + nn.functional.linear(
        hidden, weight_hh, bias_hh
    )
    hidden, state = lstm_pointwise(gates, state, order)
    if weight_hr is not None:
        hidden = nn.functional.linear(hidden, weight_hr)  # (B, P)
    return hidden, state


PACKED_TRAINING_MAX_LEN = 256
"""Longest ragged batch (``seq_len``) that trains through the kernel's packed path.

``torch.lstm`` on packed data slices its input once per time step, and the backward of every
slice fills a gradient as large as the whole input, so a training step costs time growing
with seq_len x total steps (and so does ``nn.LSTM`` with a ``PackedSequence``). Above this
length the hoisted per-step path is used, whose time is linear in the total steps; inference,
and batches without ragged lengths, keep the kernel at every length. Measured on this
project's 2-core CPU with ``benchmarks/packed_training.py --always-step`` (batch 64,
lengths spread 1..T, forward + backward, time of the packed kernel / time of the hoisted
path, medians of 3-9 interleaved steps): hidden 256 -- 0.4x at T=50, 0.7x at 200, 1.0x at
257, 1.5x at 384, 2.9x at 1500; hidden 64 -- 0.6-0.8x up to 257, 0.9x at 400, 1.1-1.5x at
500, 4.3-4.7x at 2000.
The crossover lies at 250-450 steps; below it the kernel is at most 2.5x faster, above it
the hoisted path is faster without bound.
"""


def lstm_kernel(
    module: Recurrent,
    weights: list[Tensor],
    inputs: Tensor,
    initial: Sequence[CellState],
    lengths: Tensor | None,
) -> tuple[Tensor, Sequence[CellState]]:
    """The whole stack of an LSTM in one call of ATen's LSTM kernel.

    The kernel is the one ``torch.nn.LSTM`` calls (``torch.lstm``: oneDNN on CPU, cuDNN on
    CUDA). Ragged batches go through a ``PackedSequence``, which gives the driver's semantics
    (final states at each true end, zeros past it, the reverse direction starting at each
    true end). Dropout between layers uses the kernel's own masks (same distribution as the
    reference path, different random draws). With projections the kernel sees them from the
    hidden's width (``proj_size``) differing from the state's.

    Parameters
    ----------
    module : Recurrent
        Its ``bias``, ``num_layers``, ``dropout``, ``training`` and ``bidirectional``.
    weights : list of Tensor
        Per cell, in :meth:`~lstm.driver.Recurrent.cell_indices` order, ``w_ih, w_hh[,
        b_ih, b_hh][, w_hr]`` in ``torch.nn.LSTM``'s layout (gate blocks i, f, g, o): its
        ``_flat_weights``.
    inputs : Tensor of shape (batch, seq_len, input_size)
    initial : sequence of (hidden, state)
        One per cell; :class:`~lstm.state.StackedCells` are passed on as they are.
    lengths : Tensor of shape (batch,) on the CPU, or None
        None when every sequence runs to ``seq_len``.

    Returns
    -------
    outputs : Tensor of shape (batch, seq_len, num_directions * output_size)
    finals : StackedCells
        Hidden ``(L*D, batch, output_size)`` and state ``(L*D, batch, hidden_size)``.
    """
    stacks = stacked_cells(initial)  # as given, or zeros made for every cell at once
    if stacks is not None:
        hidden, state = stacks
    else:
        hidden = torch.stack([h for h, _ in initial])  # (L*D, B, output_size)
        state = torch.stack([cast(Tensor, c) for _, c in initial])  # (L*D, B, H)
    options: tuple[bool, int, float, bool, bool] = (
        module.bias,
        module.num_layers,
        module.dropout,
        module.training,
        module.bidirectional,
    )
    if lengths is None:
        output, hidden_n, state_n = torch.lstm(inputs, (hidden, state), weights, *options, True)
        return output, StackedCells(hidden_n, state_n)
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    assert packed.sorted_indices is not None
    assert packed.unsorted_indices is not None
    order = packed.sorted_indices.to(inputs.device)
    data, hidden_n, state_n = torch.lstm(
        packed.data,
        packed.batch_sizes,
        (hidden.index_select(1, order), state.index_select(1, order)),
        weights,
        *options,
    )
    result = PackedSequence(
        data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
    )
    output, _ = pad_packed_sequence(result, batch_first=True, total_length=inputs.shape[1])
    restore = packed.unsorted_indices.to(inputs.device)
    hidden_n, state_n = hidden_n.index_select(1, restore), state_n.index_select(1, restore)
    return output, StackedCells(hidden_n, state_n)


def _permute_gates(tensor: Tensor, hidden_size: int) -> Tensor:
    """Reorder the four gate blocks (dim 0) between our layout and torch.nn.LSTM's."""
    return _permute_all([tensor], hidden_size)[0]


def _permute_all(tensors: list[Tensor], hidden_size: int) -> list[Tensor]:
    """:func:`_permute_gates` of each tensor, in as few operations as autograd allows.

    This runs on every kernel call, four times per cell. Each tensor takes one
    ``index_select`` with a row index made once per size and device (:func:`_gate_index`),
    a third of what slices and a ``cat`` cost; where autograd records, all of them together
    are one node (:class:`_GatePermutation`), whose backward gathers each gradient with the
    same index, instead of a node per tensor whose backward scatter-adds into zeros. Under
    ``torch.compile`` and ``torch.jit.trace`` the slices and the ``cat`` are traced instead
    (no global tensor to guard on or to make while tracing, no Python function in the
    graph); under ``torch.func`` transforms, one ``index_select`` per tensor.
    """
    if torch.compiler.is_compiling() or torch._C._is_tracing():
        blocks = [torch.split(tensor, hidden_size) for tensor in tensors]
        return [torch.cat([split[index] for index in _TORCH_GATE_ORDER]) for split in blocks]
    record = torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors)
    if record and not torch._C._are_functorch_transforms_active():
        apply: Any = _GatePermutation.apply  # untyped in torch's stubs
        return list(apply(hidden_size, *tensors))
    return _select_gates(tensors, hidden_size)


def _select_gates(tensors: Sequence[Tensor], hidden_size: int) -> list[Tensor]:
    """Each tensor's rows in the other gate order: one ``index_select`` per tensor.

    Each with the index of its own device: a CPU tensor indexed by a meta tensor, say, does
    not raise but reads memory that was never written.
    """
    return [tensor.index_select(0, _gate_index(hidden_size, tensor.device)) for tensor in tensors]


class _GatePermutation(torch.autograd.Function):
    """The gate permutation of several tensors, as one autograd node.

    The permutation swaps blocks 0 and 1, 2 and 3: it is its own inverse, so the backward
    permutes each gradient with the same index (and is differentiable in turn, for double
    backward). The forward takes ``ctx`` itself: a separate ``setup_context`` would make
    every ``apply`` read the forward's signature with ``inspect`` (tens of microseconds),
    and is needed only under ``torch.func`` transforms, which :func:`_permute_all` keeps
    away from this class.
    """

    @staticmethod
    def forward(ctx: Any, hidden_size: int, *tensors: Tensor) -> tuple[Tensor, ...]:
        ctx.hidden_size = hidden_size
        ctx.set_materialize_grads(False)
        return tuple(_select_gates(tensors, hidden_size))

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        given = [grad for grad in grads if grad is not None]
        permuted = iter(_select_gates(given, ctx.hidden_size))
        return (None, *(None if grad is None else next(permuted) for grad in grads))


_GATE_INDEX: dict[tuple[int, torch.device], Tensor] = {}
"""Row indices of the gate permutation, per ``(hidden_size, device)`` (:func:`_gate_index`)."""


def _gate_index(hidden_size: int, device: torch.device) -> Tensor:
    """The rows ``index`` with ``permuted = tensor[index]`` for ``4 * hidden_size`` rows.

    Made once per size and device and kept: outside inference mode, so that a backward may
    save it; a tensor of a subclass (a fake tensor, made under a tracing mode) only serves
    the call that made it.
    """
    index = _GATE_INDEX.get((hidden_size, device))
    if index is None:
        with torch.inference_mode(False):
            rows = torch.arange(4 * hidden_size, device=device).view(4, hidden_size)
            index = torch.cat([rows[block] for block in _TORCH_GATE_ORDER])
        if type(index) is Tensor:
            _GATE_INDEX[hidden_size, device] = index
    return index


_TORCH_NAME = re.compile(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?")
"""A per-cell parameter name of ``torch.nn.LSTM`` (``weight_ih_l0``, ``bias_hh_l1_reverse``,
``weight_hr_l0`` with projections)."""

_TORCH_LISTS = ("all_weights", "_flat_weights", "_flat_weights_names", "_all_weights")
"""``torch.nn.LSTM``'s attributes that list its parameters, offered read-only."""

_SHARED_OPTIONS = ("num_layers", "bias", "batch_first", "dropout", "bidirectional")


def shared_options(module: nn.Module) -> dict[str, Any]:
    """The keyword options that ``LSTM`` and ``torch.nn.LSTM`` both take, read off either.

    The two classes name these attributes alike; device and dtype are those of the weights.
    ``proj_size`` is passed only where it is not 0.
    """
    weight = next(module.parameters())
    options = {name: getattr(module, name) for name in _SHARED_OPTIONS}
    options["dropout"] = float(options["dropout"])
    if module.proj_size:
        options["proj_size"] = module.proj_size
    return {**options, "device": weight.device, "dtype": weight.dtype}


def check_proj_size(
    owner: str,
    cls: type[Recurrent],
    family: type[Recurrent],
    proj_size: Any,
    hidden_size: Any,
    projection: str = "h2p",
) -> int:
    """``proj_size`` if it is an int in ``0..hidden_size - 1`` that ``cls`` can use.

    Parameters
    ----------
    owner : str
        The class name for messages.
    cls : type
        The class being built.
    family : type
        The class whose ``build_cell`` makes the projection (:class:`LSTM`, or
        :class:`lstm.nn.LSTM`): ``cls`` must build its cells with it.
    proj_size, hidden_size
        As given to the constructor.
    projection : str, default "h2p"
        The name of the family's projection, for the message.

    Raises
    ------
    TypeError
        If ``proj_size`` is not an ``int`` (``bool`` is refused).
    ValueError
        If it is negative or not below ``hidden_size`` (as ``torch.nn.LSTM`` refuses), or
        positive for a class that builds its own cells (without the family's projection).
    """
    size = check_int(owner, "proj_size", proj_size, 0)
    if size == 0:
        return 0
    valid_hidden = isinstance(hidden_size, int) and not isinstance(hidden_size, bool)
    if valid_hidden and size >= hidden_size:
        raise ValueError(
            f"{owner}: expected proj_size < hidden_size={hidden_size} (or 0 for no projection), "
            f"got proj_size={size}"
        )
    builder = cls.step_source.defined_by["build_cell"]
    if builder is not family:
        raise ValueError(
            f"{owner}: expected proj_size=0, got proj_size={size}: {owner} does not "
            f"support projections ({builder.__name__} builds its own cells, without "
            f"{family.__name__}'s {projection})"
        )
    return size


class LSTM(Recurrent):
    r"""LSTM implementation in pure PyTorch, batch-first, whose step a subclass can rewrite.

    At every step of every layer and direction, :meth:`forward_cell` computes

    .. math::

        a_t &= W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}
              \qquad (\texttt{i2h}(x_t) + \texttt{h2h}(h_{t-1})) \\
        f_t &= \sigma(a_{t,f}), \; i_t = \sigma(a_{t,i}), \; o_t = \sigma(a_{t,o}), \;
              g_t = \tanh(a_{t,g}) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t, \qquad h_t = o_t \odot \tanh(c_t)

    With ``proj_size > 0`` (an LSTM with projections, as ``torch.nn.LSTM`` defines it, Sak et
    al. 2014) the hidden output is projected, :math:`h_t = W_{hr} (o_t \odot \tanh(c_t))`
    (``h2p``), so :math:`h_t` has ``proj_size`` features while :math:`c_t` keeps
    ``hidden_size``; ``h2h`` reads :math:`h_{t-1}` of ``proj_size`` features.

    The ``4 * hidden_size`` rows of ``i2h`` and ``h2h`` are blocks in the order **forget,
    input, output, candidate** (f, i, o, g): the original implementation's layout, so its
    checkpoints load unchanged. ``torch.nn.LSTM`` uses i, f, g, o; use :meth:`from_torch` and
    :meth:`to_torch` to convert.

    Parameters
    ----------
    input_size : int
        Size of input dimension.
    hidden_size : int
        Size of hidden dimension.
    num_layers : int, default 1
        Stacked layers (these five may be given positionally, in ``torch.nn.LSTM``'s order;
        :class:`lstm.driver.Recurrent` describes each).
    bias : bool, default True
        Whether ``i2h`` and ``h2h`` have biases.
    batch_first : bool, default True
        Unlike ``torch.nn.LSTM``, True by default: ``(batch, seq_len, features)``.
    dropout : float, default 0.0
        Between layers, in training mode.
    bidirectional : bool, default False
        Also run each layer over the reversed sequences.
    proj_size : int, default 0
        Positional or keyword (eighth, as in ``torch.nn.LSTM``). If ``> 0``, each cell
        projects its hidden output to ``proj_size`` features (``0 < proj_size <
        hidden_size``): outputs are ``(batch, seq_len, num_directions * proj_size)``, the
        final hidden ``(num_layers * num_directions, batch, proj_size)`` (and an initial
        hidden must be too), the final state keeps ``hidden_size``; layer ``l > 0`` reads
        ``num_directions * proj_size`` features. Classes that build their own cells
        (``PeepholeLSTM``, ``ArrayLSTM``) refuse it. A subclass that overrides only
        :meth:`forward_cell` keeps ``h2p`` and receives and must return a hidden of
        ``proj_size`` features: ``super().forward_cell`` projects, a step of its own must
        apply ``self.h2p`` (else the first step fails with a shape error naming both shapes).
    device, dtype : optional
        Keyword-only, as every option below.
    recurrent_dropout, zoneout : float, default 0.0
        Regularisers of the recurrence, see :class:`lstm.driver.Recurrent`.
    forget_bias : float, optional
        If given, the forget-gate block of ``i2h.bias`` is set to this value and that of
        ``h2h.bias`` to zero at initialisation, so the forget gate starts at
        ``sigmoid(forget_bias)`` (1.0 is the usual choice, Jozefowicz et al. 2015). Needs
        ``bias=True``. None keeps PyTorch's default initialisation.

    Attributes
    ----------
    i2h : nn.Linear
        Linear layer transforming input to hidden state: weight ``(4 * hidden_size,
        input_size)``, bias ``(4 * hidden_size,)``. Layer ``l`` direction ``d`` has its own
        ``i2h{suffix}`` (``i2h_reverse``, ``i2h_l1``, ...), whose input size is
        ``num_directions * hidden_size`` for ``l > 0``.
    h2h : nn.Linear
        Linear layer updating hidden state to hidden state: weight ``(4 * hidden_size,
        hidden_size)`` (``(4 * hidden_size, proj_size)`` with projections), bias ``(4 *
        hidden_size,)``; suffixed likewise.
    h2p : nn.Linear, only with ``proj_size > 0``
        The projection :math:`W_{hr}` of the hidden output: weight ``(proj_size,
        hidden_size)``, no bias (``torch.nn.LSTM``'s ``weight_hr_l{k}``); suffixed likewise
        (``h2p_reverse``, ``h2p_l1``, ...).

    Notes
    -----
    Initialisation is ``nn.Linear``'s: every weight and bias of ``i2h`` uniform in
    ``±1/sqrt(in_features)`` (``in_features`` = the cell's input size), of ``h2h`` uniform
    in ``±1/sqrt(hidden_size)``, as in the original implementation; ``forget_bias`` then
    overrides the forget-gate biases. With projections, ``h2h`` is uniform in
    ``±1/sqrt(proj_size)`` (its in-features) and ``h2p`` in ``±1/sqrt(hidden_size)``
    (``torch.nn.LSTM`` draws every weight in ``±1/sqrt(hidden_size)``).

    Examples
    --------
    >>> import torch, lstm
    >>> model = lstm.LSTM(8, 16)
    >>> sorted(model.state_dict())
    ['h2h.bias', 'h2h.weight', 'i2h.bias', 'i2h.weight']
    >>> out, (hidden, state) = model(torch.randn(4, 10, 8))
    >>> out.shape, hidden.shape, state.shape
    (torch.Size([4, 10, 16]), torch.Size([1, 4, 16]), torch.Size([1, 4, 16]))
    >>> projected = lstm.LSTM(8, 16, proj_size=4)
    >>> out, (hidden, state) = projected(torch.randn(4, 10, 8))
    >>> out.shape, hidden.shape, state.shape
    (torch.Size([4, 10, 4]), torch.Size([1, 4, 4]), torch.Size([1, 4, 16]))
    """

    i2h: nn.Linear
    h2h: nn.Linear
    h2p: nn.Linear

    gate_blocks = 4

    fast_path = FastPath(
        "kernel",
        "torch.lstm, the kernel of nn.LSTM (plain nn.Linear maps, no hooks)",
        ragged_training_max_len=PACKED_TRAINING_MAX_LEN,
    )
    """This class's own step runs on ``torch.lstm`` (:meth:`fused_forward`)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        forget_bias: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        owner = type(self).__name__
        if forget_bias is not None:
            if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)):
                raise TypeError(
                    f"{owner}: expected forget_bias to be a float or None, got "
                    f"{type(forget_bias).__name__} {forget_bias!r}"
                )
            if not math.isfinite(forget_bias):
                raise ValueError(f"{owner}: expected a finite forget_bias, got {forget_bias}")
            if bias is False:
                raise ValueError(
                    f"{owner}: expected bias=True with forget_bias={forget_bias}, got bias=False"
                )
        self.proj_size = check_proj_size(owner, type(self), LSTM, proj_size, hidden_size)
        super().__init__(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
            device=device,
            dtype=dtype,
        )
        self.forget_bias = None if forget_bias is None else float(forget_bias)
        self._apply_forget_bias()

    @property
    def output_size(self) -> int:
        """Features of the hidden output: ``proj_size`` if projecting, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Device = None, dtype: DType = None
    ) -> dict[str, CellPart]:
        """``i2h`` and ``h2h`` with ``4 * hidden_size`` rows; ``h2p`` with projections.

        Parameters
        ----------
        input_size : int
            In-features of ``i2h``: ``input_size``, or ``num_directions * output_size``.
        hidden_size : int
            The module's ``hidden_size``.
        device, dtype : optional

        Returns
        -------
        dict
            ``i2h``: ``nn.Linear(input_size, 4 * hidden_size)``, ``h2h``:
            ``nn.Linear(output_size, 4 * hidden_size)`` and, if ``proj_size > 0``, ``h2p``:
            ``nn.Linear(hidden_size, proj_size, bias=False)``.
        """
        width, factory = 4 * hidden_size, {"device": device, "dtype": dtype}
        parts: dict[str, CellPart] = {
            "i2h": nn.Linear(input_size, width, bias=self.bias, **factory),
            "h2h": nn.Linear(self.proj_size or hidden_size, width, bias=self.bias, **factory),
        }
        if self.proj_size:
            parts["h2p"] = nn.Linear(hidden_size, self.proj_size, bias=False, **factory)
        return parts

    @takes_original_layout
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """Perform a single forward pass through the network.

        Parameters
        ----------
        x : Tensor of shape (batch, input_size)
            Tensor to pass through network (this cell's input size).
        hidden : Tensor of shape ``(batch, output_size)``
            Tensor containing the hidden state (``proj_size`` features with projections).
        state : Tensor of shape (batch, hidden_size)
            Tensor containing the cell state.

        Returns
        -------
        hidden : Tensor of shape ``(batch, output_size)``
            Tensor containing the next hidden state, ``h2p(o * tanh(c))`` with projections.
        state : Tensor of shape (batch, hidden_size)
            Tensor containing the next cell state.

        Notes
        -----
        The original implementation's layout works too: hidden and state
        ``(1, batch, hidden_size)`` give hidden and state ``(1, batch, hidden_size)``
        (:func:`lstm.state.takes_original_layout`).
        """
        check_forward_cell(self, x, hidden, state)
        gates = self.i2h(x) + self.h2h(hidden)  # (B, 4H), blocks f, i, o, g
        hidden, state = lstm_pointwise(gates, state)  # (B, H) each
        if self.proj_size:
            hidden = self.h2p(hidden)  # (B, P)
        return hidden, state

    def reset_parameters(self) -> None:
        """Re-initialise as at construction: ``nn.Linear`` defaults, then ``forget_bias``."""
        super().reset_parameters()
        self._apply_forget_bias()

    def _apply_forget_bias(self) -> None:
        if self.forget_bias is None:
            return
        with torch.no_grad():
            for layer, direction in self.cell_indices():
                parts = self.cell_parts(layer, direction)
                for name, value in (("i2h", self.forget_bias), ("h2h", 0.0)):
                    self.forget_rows(cast(nn.Linear, parts[name]).bias).fill_(value)

    def forget_rows(self, rows: Tensor) -> Tensor:
        """The forget-gate entries of a ``(4 * hidden_size,)`` bias (or rows of a weight).

        Parameters
        ----------
        rows : Tensor of shape (4 * hidden_size, ...)
            Blocks f, i, o, g.

        Returns
        -------
        Tensor of shape (hidden_size, ...)
            A view of the first block, which writes through.
        """
        return rows.view(4, self.hidden_size, *rows.shape[1:])[0]

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.proj_size:
            text += f", proj_size={self.proj_size}"
        if self.forget_bias is not None:
            text += f", forget_bias={self.forget_bias}"
        return text

    # ------------------------------------------------------------------ fast path
    def fused_forward(
        self, inputs: Tensor, initial: Sequence[CellState], lengths: Tensor | None
    ) -> tuple[Tensor, Sequence[CellState]]:
        """Run the whole stack in one call of ATen's LSTM kernel (:func:`lstm_kernel`).

        Given this module's weights with the gate blocks permuted from f, i, o, g to i, f, g,
        o; the permutation is part of the autograd graph, so gradients reach ``i2h`` and
        ``h2h``. With projections, each cell's weights end with ``h2p.weight`` (``w_hr``).
        The driver calls it only where :func:`lstm.engines.choose_engine` chose the kernel
        (``model.engine_for`` says when and why; :class:`lstm.engines.KernelFamily`).
        """
        return lstm_kernel(self, _kernel_weights(self), inputs, initial, lengths)

    def kernel_problem(self) -> str | None:
        """Why the kernel cannot read the parts as weights, or None.

        Every part must be a plain ``nn.Linear`` without hooks (a subclass or a
        parametrization of one, or a hook, may compute anything), and ``i2h`` and ``h2h``
        must have a bias exactly when ``bias=True`` (the projection ``h2p`` has none): a map
        swapped for one with or without a bias would be computed without it, or fail.
        """
        for layer, direction in self.cell_indices():
            suffix = self.cell_suffix(layer, direction)
            for name, part in cell_parts(self, self.cell_names, suffix).items():
                problem = plain_linear_problem(name + suffix, part)
                if problem is not None:
                    return problem
                wanted = self.bias and name in ("i2h", "h2h")
                has = part_tensor(part, "bias") is not None
                if has != wanted:
                    return (
                        f"{name + suffix} has {'a' if has else 'no'} bias, the kernel reads "
                        f"{'one' if wanted else 'none'} (bias={self.bias})"
                    )
        return None

    # ------------------------------------------------------------------ torch.nn.LSTM
    @classmethod
    def _check_convertible(cls, what: str) -> None:
        overridden = cls.step_source.overrides(LSTM)
        if overridden:
            raise TypeError(
                f"{what}: torch.nn.LSTM computes the plain LSTM; expected a class with LSTM's "
                f"build_cell, forward_cell and init_hidden, got {cls.__name__} which overrides "
                f"{', '.join(overridden)}"
            )

    @classmethod
    def from_torch(cls, module: nn.LSTM) -> LSTM:
        """Build an equivalent module from a ``torch.nn.LSTM``.

        Layers, directions, bias, ``batch_first``, dropout, ``proj_size``, device, dtype and
        training mode are copied; gate blocks are reordered from i, f, g, o to f, i, o, g, and
        ``weight_hr_l{k}`` becomes ``h2p`` as it is. The result gives the same outputs, final
        states and gradients (to rounding).

        Parameters
        ----------
        module : torch.nn.LSTM

        Returns
        -------
        LSTM
            A new module (of class ``cls``) with copies of the weights.

        Raises
        ------
        TypeError
            If ``module`` is not a ``torch.nn.LSTM``, or ``cls`` changes the LSTM's math.
        """
        cls._check_convertible(f"{cls.__name__}.from_torch")
        if not isinstance(module, nn.LSTM):
            raise TypeError(
                f"{cls.__name__}.from_torch: expected a torch.nn.LSTM, got {type(module).__name__}"
            )
        converted = cls(module.input_size, module.hidden_size, **shared_options(module))
        converted._copy_torch_weights(module, to_torch=False)
        converted.train(module.training)
        return converted

    def to_torch(self) -> nn.LSTM:
        """Return an equivalent ``torch.nn.LSTM`` (gate blocks reordered to i, f, g, o).

        Returns
        -------
        torch.nn.LSTM
            Same sizes, layers, directions, bias, ``batch_first``, dropout, ``proj_size``,
            device, dtype and training mode, with copies of the weights (``h2p`` as
            ``weight_hr_l{k}``).

        Raises
        ------
        TypeError
            If this module's class changes the LSTM's math (overrides its cell methods).
        """
        self._check_convertible(f"{type(self).__name__}.to_torch")
        module = nn.LSTM(self.input_size, self.hidden_size, **shared_options(self))
        self._copy_torch_weights(module, to_torch=True)
        module.train(self.training)
        return module

    def _copy_torch_weights(self, module: nn.LSTM, *, to_torch: bool) -> None:
        # (our part, its attribute, torch's name, whether the rows are gate blocks)
        names = [("i2h", "weight", "weight_ih", True), ("h2h", "weight", "weight_hh", True)]
        if self.bias:
            names += [("i2h", "bias", "bias_ih", True), ("h2h", "bias", "bias_hh", True)]
        if self.proj_size:
            names.append(("h2p", "weight", "weight_hr", False))
        with torch.no_grad():
            for layer, direction in self.cell_indices():
                parts = self.cell_parts(layer, direction)
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                for part, attribute, torch_name, gates in names:
                    ours: Tensor = getattr(parts[part], attribute)
                    theirs: Tensor = getattr(module, torch_name + suffix)
                    source, target = (ours, theirs) if to_torch else (theirs, ours)
                    target.copy_(_permute_gates(source, self.hidden_size) if gates else source)

    # ------------------------------------------------------------------ nn.LSTM's names
    def __getattr__(self, name: str) -> Any:
        """``torch.nn.LSTM``'s parameter names, as **read-only copies** in its layout.

        ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (with
        ``_reverse`` for the reverse direction; ``weight_hr_l{k}``, ``h2p``'s weight, with
        ``proj_size``) are computed from ``i2h`` and ``h2h`` of cell ``(k, direction)`` with
        the gate blocks reordered to nn.LSTM's i, f, g, o (as :meth:`to_torch` does), so
        their values and shapes equal those of ``self.to_torch()``. ``all_weights``,
        ``_flat_weights``, ``_all_weights`` and ``_flat_weights_names`` list them in
        nn.LSTM's order.

        They are copies, and **refuse every write** (:class:`lstm.parameters.ReadOnlyCopy`):
        ``nn.init.zeros_(model.weight_ih_l0)``, ``model.bias_ih_l0.data[4:8].fill_(1)``,
        ``.copy_``, setting ``.requires_grad``, reading ``.grad`` raise ``RuntimeError``
        naming :class:`lstm.nn.LSTM` (nn.LSTM's own parameters, which writes reach) and
        :meth:`to_torch`; assigning one of these names raises ``AttributeError``. Reading
        works. Every other name is looked up as ``nn.Module`` does.
        """
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name not in _TORCH_LISTS and not _TORCH_NAME.fullmatch(name):
                raise
        return _torch_layout_attribute(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if _TORCH_NAME.fullmatch(name) or name in _TORCH_LISTS:
            raise AttributeError(
                f"{type(self).__name__}: {name} is a read-only copy in torch.nn.LSTM's layout; "
                f"{_USE_INSTEAD}"
            )
        super().__setattr__(name, value)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Take a ``torch.nn.LSTM`` state dict as :meth:`from_torch` would, or refuse it.

        Keys under ``prefix`` with nn.LSTM's names (``weight_ih_l0``, ...) are converted in
        place to this module's (``i2h.weight``, gate blocks reordered) where this class
        computes the plain LSTM; otherwise they raise a ``ValueError`` naming
        :meth:`from_torch` and :class:`lstm.nn.LSTM`. Everything else is ``nn.Module``'s.
        """
        _convert_torch_state_dict(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# ---------------------------------------------------------------------- the kernel's weights
def _kernel_weights(module: LSTM) -> list[Tensor]:
    """Every cell's weights in the order and layout ``torch.lstm`` takes them.

    Per cell ``w_ih, w_hh[, b_ih, b_hh][, w_hr]``, gate blocks permuted to i, f, g, o
    (:func:`_permute_all`). Parts are read as ``module.cell_parts`` and ``part.weight``
    read them, without the attribute look-ups in between (this runs on every call).
    """
    names, gates = module.cell_names, ("weight", "bias") if module.bias else ("weight",)
    gated: list[Tensor] = []
    projections: list[Tensor] = []
    for layer, direction in module.cell_indices():
        parts = cell_parts(module, names, cell_suffix(layer, direction))
        gated += [part_tensor(parts[name], kind) for kind in gates for name in ("i2h", "h2h")]
        if module.proj_size:
            projections.append(part_tensor(parts["h2p"], "weight"))  # (P, H), w_hr
    permuted = _permute_all(gated, module.hidden_size)
    if not projections:
        return permuted
    width = 2 * len(gates)  # gated tensors per cell
    weights: list[Tensor] = []
    for cell, projection in enumerate(projections):
        weights += [*permuted[cell * width : (cell + 1) * width], projection]
    return weights


# ---------------------------------------------------------------------- nn.LSTM's names
def _torch_layout_attribute(module: LSTM, name: str) -> Any:
    """The value of one of nn.LSTM's names (see :meth:`LSTM.__getattr__`), or AttributeError."""
    owner = type(module).__name__
    if module.step_source.overrides(LSTM):
        raise AttributeError(
            f"{owner} has no attribute {name!r}: nn.LSTM's weight names exist only for a "
            "class that computes the plain LSTM"
        )
    names = [_torch_names(module, layer, direction) for layer, direction in module.cell_indices()]
    if name == "_all_weights":
        return names
    if name == "_flat_weights_names":
        return [entry for cell in names for entry in cell]
    if name == "all_weights":
        return [[_torch_weight(module, entry) for entry in cell] for cell in names]
    if name == "_flat_weights":
        return [_torch_weight(module, entry) for cell in names for entry in cell]
    if not any(name in cell for cell in names):
        raise AttributeError(
            f"{owner} has no attribute {name!r}: its nn.LSTM names are "
            f"{[entry for cell in names for entry in cell]}"
        )
    return _torch_weight(module, name)


def _torch_names(module: LSTM, layer: int, direction: int) -> list[str]:
    """nn.LSTM's names of cell ``(layer, direction)``, in its order."""
    suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if module.bias else [])
    if module.proj_size:
        kinds.append("weight_hr")
    return [kind + suffix for kind in kinds]


def _torch_weight(module: LSTM, name: str) -> Tensor:
    """A read-only copy of nn.LSTM's parameter ``name`` (a valid one), gate blocks i, f, g, o."""
    match = _TORCH_NAME.fullmatch(name)
    assert match is not None
    kind, which, layer, reverse = match.groups()
    part = _OUR_PARTS[which] + module.cell_suffix(int(layer), 1 if reverse else 0)
    with torch.no_grad():
        source: Tensor = getattr(getattr(module, part), kind)
        # the projection has no gate blocks to reorder
        copy = source.clone() if which == "hr" else _permute_gates(source, module.hidden_size)
    refusal = (
        f"{type(module).__name__}.{name} is a read-only copy of {part}.{kind} in "
        f"torch.nn.LSTM's layout (gates i, f, g, o; {part} has f, i, o, g): writing to it "
        f"would not change the model. {_USE_INSTEAD}"
    )
    return ReadOnlyCopy.wrap(copy, refusal)


_OUR_PARTS = {"ih": "i2h", "hh": "h2h", "hr": "h2p"}
"""The part of :class:`LSTM` behind each kind of nn.LSTM weight (``weight_ih`` -> ``i2h``)."""

_USE_INSTEAD = (
    "For nn.LSTM's own parameters, which writes reach (init functions, .data slices, copy_), "
    "use lstm.nn.LSTM; or edit model.to_torch() and convert it back with LSTM.from_torch(), "
    "or write to i2h/h2h (gate blocks f, i, o, g; forget_rows() picks the forget gate)."
)


def _convert_torch_state_dict(module: LSTM, state_dict: dict[str, Any], prefix: str) -> None:
    """Rename and reorder nn.LSTM's keys under ``prefix`` to ``module``'s, in place.

    Raises
    ------
    ValueError
        If ``module``'s class computes another cell than nn.LSTM's (naming
        :meth:`LSTM.from_torch` and ``lstm.nn.LSTM``), or if the state dict mixes nn.LSTM's
        names with this module's.
    """
    torch_keys = [
        key
        for key in state_dict
        if key.startswith(prefix) and _TORCH_NAME.fullmatch(key[len(prefix) :])
    ]
    if not torch_keys:
        return
    owner = type(module).__name__
    overridden = module.step_source.overrides(LSTM)
    if overridden:
        raise ValueError(
            f"{owner}.load_state_dict: got torch.nn.LSTM's keys ({', '.join(torch_keys[:4])}, "
            f"...), but {owner} overrides {', '.join(overridden)} of LSTM: its weights mean "
            "something else. Load the state dict into lstm.nn.LSTM (nn.LSTM's names and "
            "layout), or convert a torch.nn.LSTM with LSTM.from_torch() for the plain LSTM"
        )
    ours = [key for key in state_dict if key.startswith(prefix) and key not in torch_keys]
    ours = [key for key in ours if key[len(prefix) :].split(".")[0] in module._modules]
    if ours:
        raise ValueError(
            f"{owner}.load_state_dict: expected either torch.nn.LSTM's keys or this module's, "
            f"got both ({torch_keys[0]} and {ours[0]}); see LSTM.from_torch() and lstm.nn.LSTM"
        )
    for key in torch_keys:
        match = _TORCH_NAME.fullmatch(key[len(prefix) :])
        assert match is not None
        kind, which, layer, reverse = match.groups()
        suffix = module.cell_suffix(int(layer), 1 if reverse else 0)
        value = state_dict.pop(key)
        gated = which != "hr" and isinstance(value, Tensor)
        if gated and value.shape[:1] == (4 * module.hidden_size,):
            value = _permute_gates(value, module.hidden_size)  # a wrong size: torch says so
        state_dict[f"{prefix}{_OUR_PARTS[which]}{suffix}.{kind}"] = value
