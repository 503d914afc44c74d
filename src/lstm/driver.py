"""The driver: one time loop that runs any cell over sequences.

:class:`Recurrent` owns everything that is the same for every recurrent cell: argument
checks, ``batch_first`` and unbatched input, the initial state, stacking layers, both
directions, dropout between layers, per-sequence lengths and ``PackedSequence``. A cell
(a subclass) only says

* which parameters one cell has: :meth:`Recurrent.build_cell`, called once per layer and
  direction;
* how one step works: :meth:`Recurrent.forward_cell`;
* and, if its state is not a ``(batch, hidden_size)`` tensor, how the state starts:
  :meth:`Recurrent.init_hidden`.

The state a cell carries is opaque to the driver: a tensor, or a tuple of tensors, whose
second-to-last dimension is the batch (``(batch, hidden_size)`` for the LSTM, ``(k, batch,
hidden_size)`` for an Array-LSTM with k lanes). The driver only selects along that
dimension (to hold finished sequences) and stacks it across layers and directions.

Parameters of layer ``l`` and direction ``d`` are registered under the names that
:meth:`build_cell` returns plus a suffix, as ``torch.nn.LSTM`` names its weights:
``""`` for layer 0 forward (so a single-layer LSTM has exactly the keys ``i2h.weight``,
``i2h.bias``, ``h2h.weight``, ``h2h.bias``), ``"_reverse"``, ``"_l1"``, ``"_l1_reverse"``,
and so on. Inside :meth:`forward_cell`, ``self.i2h`` always means the current layer and
direction's ``i2h``: the driver calls it on :meth:`layer_cell`, a view of the module that
maps the plain names onto that cell's parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstm._checks import (
    check_bool,
    check_device,
    check_int,
    check_lengths,
    check_probability,
    check_tensor,
    describe,
    shape_str,
)

State: TypeAlias = Tensor | tuple[Tensor, ...]
"""What a cell carries besides its hidden output: a tensor or tuple of tensors, batch at dim -2."""

CellPart: TypeAlias = nn.Module | nn.Parameter

ENGINES = ("auto", "reference", "hoisted")
"""Values of :attr:`Recurrent.engine`."""


def cell_suffix(layer: int, direction: int) -> str:
    """Suffix of the parameter names of one cell, in ``torch.nn.LSTM``'s convention.

    Parameters
    ----------
    layer : int
        Layer index, from 0.
    direction : int
        0 for forward, 1 for reverse.

    Returns
    -------
    str
        ``""`` for (0, 0), ``"_reverse"`` for (0, 1), ``"_l{layer}"`` and
        ``"_l{layer}_reverse"`` for deeper layers.

    Examples
    --------
    >>> cell_suffix(0, 0), cell_suffix(0, 1), cell_suffix(2, 1)
    ('', '_reverse', '_l2_reverse')
    """
    layer_part = f"_l{layer}" if layer > 0 else ""
    return layer_part + ("_reverse" if direction == 1 else "")


def linear_maps(
    input_size: int,
    hidden_size: int,
    width: int,
    *,
    bias: bool,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, CellPart]:
    """The two maps of the reference page's cell, for :meth:`Recurrent.build_cell`.

    Parameters
    ----------
    input_size, hidden_size : int
        In-features of ``i2h`` and ``h2h``.
    width : int
        Out-features of both: ``4 * hidden_size`` for the LSTM's four gate blocks.
    bias : bool
    device, dtype : optional

    Returns
    -------
    dict
        ``{"i2h": nn.Linear(input_size, width), "h2h": nn.Linear(hidden_size, width)}``.
    """
    return {
        "i2h": nn.Linear(input_size, width, bias=bias, device=device, dtype=dtype),
        "h2h": nn.Linear(hidden_size, width, bias=bias, device=device, dtype=dtype),
    }


def map_state(fn: Callable[[Tensor], Tensor], state: State) -> State:
    """Apply ``fn`` to the tensor, or to each tensor of the tuple, that makes up ``state``."""
    if isinstance(state, tuple):
        return tuple(fn(part) for part in state)
    return fn(state)


def _state_parts(state: State) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _from_parts(parts: list[Tensor] | tuple[Tensor, ...], like: State) -> State:
    return tuple(parts) if isinstance(like, tuple) else parts[0]


def _combine_states(fn: Callable[[Tensor, Tensor], Tensor], old: State, new: State) -> State:
    """``fn(old_part, new_part)`` for each tensor of two states of the same structure."""
    parts = zip(_state_parts(old), _state_parts(new), strict=True)
    return _from_parts([fn(old_part, new_part) for old_part, new_part in parts], new)


class Recurrent(nn.Module):
    r"""Base class of every recurrent module in this package: the driver.

    A subclass defines :meth:`build_cell` and :meth:`forward_cell` (and, for a state that is
    not ``(batch, hidden_size)``, :meth:`init_hidden`); it then runs over sequences, stacks
    ``num_layers`` layers, runs both directions, applies dropout between layers and honours
    per-sequence lengths and ``PackedSequence`` input, with the interface of
    ``torch.nn.LSTM``.

    Parameters
    ----------
    input_size : int
        Number of features of each input step, ``>= 1``.
    hidden_size : int
        Number of features of the hidden output, ``>= 1``.
    num_layers : int, default 1
        Number of stacked layers; layer ``l > 0`` reads the (concatenated) outputs of layer
        ``l - 1``, of size ``num_directions * hidden_size``.
    bias : bool, default True
        Whether the cells' linear maps have biases.
    batch_first : bool, default True
        If True (the reference page's convention), input and output are
        ``(batch, seq_len, features)``; if False, ``(seq_len, batch, features)`` like
        ``torch.nn.LSTM``'s default. Unbatched input ``(seq_len, features)`` works either way.
    dropout : float, default 0.0
        Probability in ``[0, 1)`` of zeroing an output of each layer but the last, in
        training mode only.
    bidirectional : bool, default False
        If True, each layer also runs over the reversed sequences (each from its own true end
        when lengths are given) and the two outputs are concatenated.
    recurrent_dropout : float, default 0.0
        Variational dropout of the recurrent input (Gal & Ghahramani 2016): in training mode,
        one mask per cell and sequence, drawn at each ``forward`` and used at every step,
        multiplies the hidden state that :meth:`forward_cell` receives (scaled by
        ``1 / (1 - p)``). The hidden output itself is not masked. Off in eval mode.
    zoneout : float, default 0.0
        Zoneout (Krueger et al. 2017): in training mode, each unit of the hidden output and
        of every state tensor keeps its previous value with probability ``zoneout`` at each
        step (independent masks). In eval mode, as in the paper, the expectation is used:
        ``new + zoneout * (previous - new)``.
    device, dtype : optional
        Where and in which floating-point type the parameters are created.

    Attributes
    ----------
    engine : str
        ``"auto"`` (default): use the cell family's :meth:`fused_forward` when it has one
        and applies, else the reference path; ``"reference"``: always run
        :meth:`forward_cell` step by step; ``"hoisted"`` (opt-in, for cells that override
        :meth:`forward_cell`): the reference path, but a plain ``nn.Linear`` ``i2h`` is
        applied to all steps in one matrix product before the loop and ``self.i2h(x)``
        inside :meth:`forward_cell` returns the precomputed row. All give the same results
        (tested to 1e-10 in float64); set it on an instance.
    cell_names : tuple of str
        The names :meth:`build_cell` returns (``("i2h", "h2h")`` for the LSTM).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.input_size = check_int(owner, "input_size", input_size, 1)
        self.hidden_size = check_int(owner, "hidden_size", hidden_size, 1)
        self.num_layers = check_int(owner, "num_layers", num_layers, 1)
        self.bias = check_bool(owner, "bias", bias)
        self.batch_first = check_bool(owner, "batch_first", batch_first)
        self.dropout = check_probability(owner, "dropout", dropout)
        self.bidirectional = check_bool(owner, "bidirectional", bidirectional)
        self.recurrent_dropout = check_probability(owner, "recurrent_dropout", recurrent_dropout)
        self.zoneout = check_probability(owner, "zoneout", zoneout)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(
                f"{owner}: expected dtype to be a floating-point torch.dtype, got {dtype!r}"
            )
        check_device(owner, device)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                f"{owner}: dropout={self.dropout} acts between layers, so it has no effect "
                "with num_layers=1",
                UserWarning,
                stacklevel=2,
            )
        self.engine = "auto"
        self.cell_names: tuple[str, ...] = ()
        # What _check_step_input needs: the features of forward_cell's x for the cell this
        # object stands for (a layer_cell view of a deeper layer sets its own), and whether
        # to check at all (not in the time loop, whose arguments forward has checked).
        self._step_input_size = self.input_size
        self._check_steps = True
        for layer, direction in self._cell_indices():
            width = self._layer_input_size(layer)
            parts = self.build_cell(width, self.hidden_size, device=device, dtype=dtype)
            self._register_cell(parts, layer, direction)

    # ------------------------------------------------------------------ what a cell says
    def build_cell(
        self,
        input_size: int,
        hidden_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, CellPart]:
        """Create the parameters of one cell (one layer, one direction).

        Called by the constructor once per layer and direction. Attributes it reads (such as
        ``self.bias``, or a subclass's ``self.k``) must be set before ``super().__init__``.

        Parameters
        ----------
        input_size : int
            Features this cell reads: ``input_size`` for layer 0, else
            ``num_directions * hidden_size``.
        hidden_size : int
            The module's ``hidden_size``.
        device, dtype : optional
            Factory arguments to pass on to every module and parameter created.

        Returns
        -------
        dict of str to nn.Module or nn.Parameter
            The same names for every cell; inside :meth:`forward_cell` they are reachable as
            ``self.<name>``.
        """
        raise NotImplementedError(f"{type(self).__name__} must define build_cell()")

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Advance one cell by one step.

        Parameters
        ----------
        x : Tensor of shape (batch, input_size)
            Input of this step (for layers above the first: the previous layer's output).
        hidden : Tensor of shape (batch, hidden_size)
            Hidden output of the previous step.
        state : Tensor or tuple of Tensors, batch at dim -2
            The cell's state, as :meth:`init_hidden` shapes it.

        Returns
        -------
        hidden : Tensor of shape (batch, hidden_size)
        state : same structure and shapes as the ``state`` argument

        Notes
        -----
        The built-in cells check their arguments first (shapes, dtype, device), so that a
        direct call with wrong ones raises a ValueError or TypeError that names them; the
        time loop of ``forward``, whose arguments are checked once up front, skips that.
        """
        raise NotImplementedError(f"{type(self).__name__} must define forward_cell()")

    def init_hidden(self, x: Tensor) -> tuple[Tensor, Any]:
        """Initial ``(hidden, state)`` of one cell when ``forward`` is given none.

        Called once per layer and direction, on that cell's :meth:`layer_cell` view.

        Parameters
        ----------
        x : Tensor of shape (batch, seq_len, input_size)
            The module's input, always batch-first here.

        Returns
        -------
        hidden : Tensor of shape (batch, hidden_size)
            Zeros by default.
        state : Tensor of shape (batch, hidden_size)
            Zeros by default. A cell may return any shape ``(*lead, batch, features)`` or a
            tuple of such tensors.
        """
        zeros = x.new_zeros(x.shape[0], self.hidden_size)
        return zeros, zeros.clone()

    def initHidden(self, x: Tensor) -> tuple[Tensor, Any]:
        """Alias of :meth:`init_hidden` under the original implementation's name.

        The driver calls this name, so a subclass that overrides either name changes the
        default initial state (this one defers to :meth:`init_hidden` unless overridden).
        """
        return self.init_hidden(x)

    # ------------------------------------------------------------------ structure
    @property
    def num_directions(self) -> int:
        """2 if the module is bidirectional, else 1."""
        return 2 if self.bidirectional else 1

    def _layer_input_size(self, layer: int) -> int:
        """Features each cell of ``layer`` reads: the input's, or the layer below's output."""
        return self.input_size if layer == 0 else self.hidden_size * self.num_directions

    def _cell_indices(self) -> Iterator[tuple[int, int]]:
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                yield layer, direction

    def _register_cell(self, parts: dict[str, CellPart], layer: int, direction: int) -> None:
        owner = type(self).__name__
        if not isinstance(parts, dict) or not parts:
            raise TypeError(
                f"{owner}.build_cell: expected a non-empty dict of name -> nn.Module or "
                f"nn.Parameter, got {type(parts).__name__}"
            )
        names = tuple(parts)
        if self.cell_names and names != self.cell_names:
            raise ValueError(
                f"{owner}.build_cell: expected the same names for every cell, "
                f"got {names} after {self.cell_names}"
            )
        self.cell_names = names
        suffix = cell_suffix(layer, direction)
        for name, part in parts.items():
            if isinstance(part, nn.Parameter):
                self.register_parameter(name + suffix, part)
            elif isinstance(part, nn.Module):
                self.add_module(name + suffix, part)
            else:
                raise TypeError(
                    f"{owner}.build_cell: expected {name!r} to be an nn.Module or nn.Parameter, "
                    f"got {type(part).__name__}"
                )

    def cell_parts(self, layer: int = 0, direction: int = 0) -> dict[str, CellPart]:
        """The parameters and modules of one cell, under their plain names.

        Parameters
        ----------
        layer : int, default 0
        direction : int, default 0
            0 forward, 1 reverse.

        Returns
        -------
        dict of str to nn.Module or nn.Parameter
            e.g. ``{"i2h": Linear, "h2h": Linear}`` for the LSTM.
        """
        self._check_cell_index(layer, direction)
        suffix = cell_suffix(layer, direction)
        parts: dict[str, CellPart] = {}
        for name in self.cell_names:
            if name + suffix in self._parameters:
                parts[name] = cast(nn.Parameter, self._parameters[name + suffix])
            else:
                parts[name] = self._modules[name + suffix]  # type: ignore[assignment]
        return parts

    def layer_cell(self, layer: int = 0, direction: int = 0) -> Recurrent:
        """This module as seen by one cell: ``self.<name>`` is that cell's part.

        For layer 0 forward this is the module itself. Otherwise it is a shallow view of the
        same class sharing every attribute, in which the names of :attr:`cell_names` refer
        to the parameters of ``(layer, direction)``. The driver calls :meth:`forward_cell`
        and :meth:`init_hidden` on it, which is how a subclass that overrides only
        :meth:`forward_cell` gets stacked layers and both directions. It also lets a user
        step one cell by hand: ``model.layer_cell(1).forward_cell(x, hidden, state)``.

        A view is made per call and never stored: it holds no state of its own.
        """
        self._check_cell_index(layer, direction)
        if layer == 0 and direction == 0:
            return self
        view = self._view(self.cell_parts(layer, direction))
        view.__dict__["_step_input_size"] = self._layer_input_size(layer)
        return view

    def _view(self, parts: dict[str, CellPart]) -> Recurrent:
        """A shallow copy of this module in which ``self.<name>`` is ``parts[name]``."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        parameters = dict(self._parameters)
        modules = dict(self._modules)
        for name, part in parts.items():
            if isinstance(part, nn.Parameter):
                parameters[name] = part
            else:
                modules[name] = part
        view.__dict__["_parameters"] = parameters
        view.__dict__["_modules"] = modules
        return view

    def _hoist_input_projection(
        self, cell: Recurrent, inputs: Tensor, steps: tuple[Tensor, ...]
    ) -> Recurrent:
        """The ``"hoisted"`` engine: one GEMM for ``i2h`` over all steps instead of one per step.

        Returns a view of ``cell`` whose ``i2h`` answers ``i2h(steps[t])`` with row ``t`` of
        ``i2h(inputs)``, and computes anything else it is given as before. Only a plain
        ``nn.Linear`` without hooks is hoisted (it acts on each step independently, so the
        batched call is the same function); otherwise ``cell`` is returned unchanged.
        """
        projection = cell._modules.get("i2h")
        if (
            type(projection) is not nn.Linear
            or projection._forward_hooks
            or projection._forward_pre_hooks
        ):
            return cell
        projected = projection(inputs).unbind(1)  # T x (B, out_features)
        return cell._view({"i2h": _StepAnswers(projection, steps, projected)})

    def _check_cell_index(self, layer: int, direction: int) -> None:
        owner = type(self).__name__
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"{owner}: expected layer in 0..{self.num_layers - 1}, got {layer}")
        if not 0 <= direction < self.num_directions:
            raise ValueError(
                f"{owner}: expected direction in 0..{self.num_directions - 1}, got {direction}"
            )

    def reset_parameters(self) -> None:
        """Re-initialise every cell part that has a ``reset_parameters`` method.

        For the built-in cells these are ``nn.Linear`` layers, initialised as PyTorch does:
        weights and biases uniform in ``(-1/sqrt(in_features), 1/sqrt(in_features))``.
        """
        for layer, direction in self._cell_indices():
            for part in self.cell_parts(layer, direction).values():
                reset = getattr(part, "reset_parameters", None)
                if callable(reset):
                    reset()

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if not self.batch_first:
            text += ", batch_first=False"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        if self.recurrent_dropout:
            text += f", recurrent_dropout={self.recurrent_dropout}"
        if self.zoneout:
            text += f", zoneout={self.zoneout}"
        return text

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: Tensor | PackedSequence,
        hidden: tuple[Tensor, Any] | None = None,
        lengths: Tensor | None = None,
        return_all_states: bool = False,
    ) -> Any:
        r"""Run every sequence of ``x`` through every layer and direction.

        Parameters
        ----------
        x : Tensor or PackedSequence
            ``(batch, seq_len, input_size)`` if ``batch_first`` (the default), else
            ``(seq_len, batch, input_size)``; ``(seq_len, input_size)`` for one unbatched
            sequence; or a ``PackedSequence``, in which case the output is one too.
        hidden : tuple (hidden, state), optional
            Initial states; zeros (:meth:`init_hidden`) if None. ``hidden`` is
            ``(num_layers * num_directions, batch, hidden_size)`` as ``torch.nn.LSTM`` takes
            it, or ``(batch, hidden_size)`` as the reference page documents it (one layer,
            one direction only). ``state`` is stacked the same way: for the LSTM
            ``(num_layers * num_directions, batch, hidden_size)``, or ``(batch,
            hidden_size)``. For unbatched input leave out the batch dimension.
        lengths : Tensor of shape (batch,), optional
            True length of each sequence, integers in ``1..seq_len``. Steps past a sequence's
            end leave its state untouched and give zero outputs; the reverse direction starts
            at each sequence's true end. Not allowed with a ``PackedSequence``.
        return_all_states : bool, default False
            Also return the last layer's state at every step (pytorch#31423); this runs the
            reference path (or the hoisted one, if that is the engine).

        Returns
        -------
        outputs : Tensor or PackedSequence
            ``(batch, seq_len, num_directions * hidden_size)`` (batch-first), the last layer's
            hidden output at each step, zero past each sequence's end.
        (hidden, state) : tuple
            Final states of every layer and direction, taken at each sequence's true end:
            hidden ``(num_layers * num_directions, batch, hidden_size)`` and state stacked
            the same way (``(num_layers * num_directions * k, batch, hidden_size)`` for a
            cell whose per-cell state is ``(k, batch, hidden_size)``). Index ``2 * l + d`` is
            layer ``l``, direction ``d``, as in ``torch.nn.LSTM``.
        all_states : Tensor or tuple of Tensors, only with ``return_all_states=True``
            The last layer's state after every step, laid out like ``outputs``: a state
            tensor of one cell, ``(*lead, batch, features)``, becomes ``(*lead, batch,
            seq_len, num_directions * features)`` (``(*lead, seq_len, batch, ·)`` when not
            ``batch_first``; no batch dimension for unbatched input; padded, not packed, for a
            ``PackedSequence``), zero past each sequence's end. For the LSTM: ``(batch,
            seq_len, num_directions * hidden_size)``, the cell state :math:`c_t`.
        """
        owner = type(self).__name__
        if not isinstance(self.engine, str) or self.engine not in ENGINES:
            raise ValueError(f"{owner}: expected engine in {ENGINES}, got {self.engine!r}")
        if not isinstance(return_all_states, bool):
            raise TypeError(
                f"{owner}: expected return_all_states to be a bool, got "
                f"{type(return_all_states).__name__}"
            )
        packed = x if isinstance(x, PackedSequence) else None
        if packed is not None:
            if lengths is not None:
                raise ValueError(
                    f"{owner}: a PackedSequence carries its own lengths; expected lengths=None, "
                    f"got a {type(lengths).__name__}"
                )
            data = check_tensor(owner, "PackedSequence data", packed.data)
            if data.dim() != 2 or data.shape[-1] != self.input_size:
                raise ValueError(
                    f"{owner}: expected PackedSequence data of shape "
                    f"{shape_str(['total_steps', self.input_size])}, got {shape_str(data.shape)}"
                )
            inputs, lengths = pad_packed_sequence(packed, batch_first=True)
            unbatched = False
        else:
            inputs, unbatched = self._batch_first_input(x)
        self._check_input_matches_parameters(inputs)
        batch, seq_len = inputs.shape[0], inputs.shape[1]
        if lengths is not None:
            lengths = check_lengths(owner, lengths, batch, seq_len)
        initial = self._initial_states(inputs, hidden, unbatched)
        # Sequences that all run to seq_len need no masking or packing.
        ragged = lengths if lengths is not None and int(lengths.min()) < seq_len else None
        collected: list[list[State]] | None = [] if return_all_states else None
        fused = None
        if self.engine == "auto" and collected is None:
            fused = self.fused_forward(inputs, initial, ragged)
        if fused is None:
            hoist = self.engine == "hoisted"
            fused = self._reference_forward(inputs, initial, ragged, hoist, collected)
        output, finals = fused  # (B, T, D*H), one (hidden, state) per cell

        hidden_n = torch.stack([h for h, _ in finals])  # (L*D, B, H)
        state_n = self._stack_states([s for _, s in finals], batch)
        all_states = None if collected is None else self._per_step_states(collected)
        result: tuple[Any, ...]
        if packed is not None:
            result = (self._repack(output, packed, lengths), (hidden_n, state_n))
        elif unbatched:
            result = (
                output.squeeze(0),
                (hidden_n.squeeze(-2), map_state(lambda s: s.squeeze(-2), state_n)),
            )
            if all_states is not None:
                all_states = map_state(lambda s: s.squeeze(-3), all_states)
        else:
            if not self.batch_first:
                output = output.transpose(0, 1)
                if all_states is not None:
                    all_states = map_state(lambda s: s.transpose(-3, -2), all_states)
            result = (output, (hidden_n, state_n))
        return result if all_states is None else (*result, all_states)

    def fused_forward(
        self, inputs: Tensor, initial: list[tuple[Tensor, State]], lengths: Tensor | None
    ) -> tuple[Tensor, list[tuple[Tensor, State]]] | None:
        """A whole-stack fast path, or None to use the reference path.

        The base class has none. A cell family overrides this to run its built-in math
        faster; it must return None whenever the module's cell methods are overridden, so
        that a subclass's :meth:`forward_cell` is never bypassed. Its results must equal the
        reference path's (see :attr:`engine`).

        Parameters
        ----------
        inputs : Tensor of shape (batch, seq_len, input_size)
        initial : list of (hidden, state)
            One per cell, in the order layer 0 forward, layer 0 reverse, layer 1 forward, ...
        lengths : Tensor of shape (batch,) on the CPU, or None
            None when every sequence runs to seq_len.

        Returns
        -------
        outputs : Tensor of shape (batch, seq_len, num_directions * hidden_size)
            Zero past each sequence's end.
        finals : list of (hidden, state)
            One per cell, in the order of ``initial``.
        """
        return None

    def _reference_forward(
        self,
        inputs: Tensor,
        initial: list[tuple[Tensor, State]],
        lengths: Tensor | None,
        hoist: bool = False,
        collect: list[list[State]] | None = None,
    ) -> tuple[Tensor, list[tuple[Tensor, State]]]:
        """The reference path: :meth:`forward_cell` at every step of every layer and direction.

        Same arguments and results as :meth:`fused_forward`; with ``hoist``, a plain
        ``nn.Linear`` ``i2h`` is applied to all steps at once first (the hoisted engine).
        With ``collect``, one list per direction of the last layer's per-step states (in
        time order) is appended to it.
        """
        seq_len = inputs.shape[1]
        mask = None  # mask[t]: which sequences are still running at step t
        if lengths is not None:
            positions = torch.arange(seq_len).unsqueeze(1)  # (T, 1)
            mask = (positions < lengths.unsqueeze(0)).unsqueeze(-1).to(inputs.device)  # (T, B, 1)
        finals: list[tuple[Tensor, State]] = []
        layer_input = inputs  # (B, T, F)
        for layer in range(self.num_layers):
            outputs = []
            steps = layer_input.unbind(1)  # T x (B, F): unbind, not x[:, t], keeps backward O(T)
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                cell = self.layer_cell(layer, direction)
                if hoist:
                    cell = self._hoist_input_projection(cell, layer_input, steps)
                record: list[State] | None = None
                if collect is not None and layer == self.num_layers - 1:
                    record = []
                    collect.append(record)
                out, final = self._run_cell(
                    cell, steps, initial[index], mask, direction == 1, record
                )
                outputs.append(out)  # (B, T, H)
                finals.append(final)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        return layer_input, finals

    def _run_cell(
        self,
        cell: Recurrent,
        steps: tuple[Tensor, ...],
        initial: tuple[Tensor, State],
        mask: Tensor | None,
        reverse: bool,
        record: list[State] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, State]]:
        """The reference path: ``cell.forward_cell`` at every step, in Python.

        ``steps`` holds T tensors (B, F); ``mask`` is (T, B, 1) or None. Returns outputs
        (B, T, H) and the final (hidden, state); appends the state after every step to
        ``record`` (in time order, zero past each sequence's end) if given.
        """
        hidden, state = initial
        # forward has checked the arguments of every step already (and the first step's
        # results are checked below), so the cell stepped here skips forward_cell's own
        # argument checks, which would cost more than a small cell's arithmetic.
        cell = cell._view({})
        cell.__dict__["_check_steps"] = False
        order = range(len(steps) - 1, -1, -1) if reverse else range(len(steps))
        outputs: list[Tensor] = []  # in processing order; reversed at the end for reverse
        recurrent_mask = self._recurrent_dropout_mask(hidden)  # (B, H) or None
        checked = False
        for t in order:
            hidden_in = hidden if recurrent_mask is None else hidden * recurrent_mask
            new_hidden, new_state = cell.forward_cell(steps[t], hidden_in, state)
            if not checked:
                self._check_step_output(new_hidden, new_state, hidden, state)
                checked = True
            if self.zoneout > 0:
                new_hidden = self._zone_out(hidden, new_hidden)
                new_state = _combine_states(self._zone_out, state, new_state)
            if mask is None:
                hidden, state = new_hidden, new_state
                outputs.append(hidden)
                if record is not None:
                    record.append(state)
            else:
                running = mask[t]  # (B, 1): sequences whose step t is real

                def advance(old: Tensor, new: Tensor, running: Tensor = running) -> Tensor:
                    return torch.where(running, new, old)

                def zero_past_end(part: Tensor, running: Tensor = running) -> Tensor:
                    return torch.where(running, part, 0.0)

                outputs.append(zero_past_end(new_hidden))
                if record is not None:
                    record.append(map_state(zero_past_end, new_state))
                hidden = advance(hidden, new_hidden)
                state = _combine_states(advance, state, new_state)
        if reverse:
            outputs.reverse()
            if record is not None:
                record.reverse()
        return torch.stack(outputs, dim=1), (hidden, state)

    # ------------------------------------------------------------------ regularisers
    def _recurrent_dropout_mask(self, hidden: Tensor) -> Tensor | None:
        """One variational dropout mask for a whole sequence, or None when inactive."""
        if not self.training or self.recurrent_dropout == 0:
            return None
        keep = 1.0 - self.recurrent_dropout
        return torch.bernoulli(torch.full_like(hidden, keep)) / keep

    def _zone_out(self, previous: Tensor, new: Tensor) -> Tensor:
        """Keep each unit's previous value with probability ``zoneout`` (its mean in eval)."""
        if self.training:
            keep_previous = torch.bernoulli(torch.full_like(new, self.zoneout)).bool()
            return torch.where(keep_previous, previous, new)
        return torch.lerp(new, previous, self.zoneout)

    # ------------------------------------------------------------------ input checks
    def _batch_first_input(self, x: Any) -> tuple[Tensor, bool]:
        owner = type(self).__name__
        x = check_tensor(owner, "input", x)
        layout = (
            "(batch, seq_len, input_size)" if self.batch_first else "(seq_len, batch, input_size)"
        )
        if x.dim() not in (2, 3):
            raise ValueError(
                f"{owner}: expected input of rank 3 {layout} or rank 2 (seq_len, input_size), "
                f"got rank {x.dim()} with shape {shape_str(x.shape)}"
            )
        unbatched = x.dim() == 2
        names = ["seq_len"] if unbatched else ["batch", "seq_len"]
        if not self.batch_first:
            names.reverse()
        if x.shape[-1] != self.input_size:
            wanted = shape_str([*names, self.input_size])
            raise ValueError(f"{owner}: expected input of shape {wanted}, got {shape_str(x.shape)}")
        if x.shape[names.index("seq_len")] == 0:
            raise ValueError(
                f"{owner}: expected seq_len >= 1, got an input of shape {shape_str(x.shape)}"
            )
        if not unbatched and x.shape[names.index("batch")] == 0:
            raise ValueError(
                f"{owner}: expected batch >= 1, got an input of shape {shape_str(x.shape)}"
            )
        if unbatched:
            x = x.unsqueeze(0)  # (1, T, F): unbatched input is (seq_len, input_size) either way
        elif not self.batch_first:
            x = x.transpose(0, 1)  # (B, T, F)
        return x, unbatched

    def _check_input_matches_parameters(self, inputs: Tensor) -> None:
        owner = type(self).__name__
        reference = next(self.parameters(), None)
        if reference is None:
            return
        if inputs.device != reference.device:
            raise ValueError(
                f"{owner}: expected input on {reference.device} (where the parameters are), "
                f"got {inputs.device}"
            )
        if inputs.dtype != reference.dtype and not torch.is_autocast_enabled(inputs.device.type):
            raise TypeError(
                f"{owner}: expected input of dtype {reference.dtype} (the parameters' dtype), "
                f"got {inputs.dtype}"
            )

    def _default_state(self, cell: Recurrent, inputs: Tensor) -> tuple[Tensor, State]:
        owner = type(self).__name__
        # initHidden, not init_hidden: a subclass may override either name, and the base
        # initHidden defers to init_hidden (see initHidden).
        result = cell.initHidden(inputs)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise TypeError(
                f"{owner}.init_hidden: expected a (hidden, state) pair, got {type(result).__name__}"
            )
        hidden, state = result
        batch = inputs.shape[0]
        if not isinstance(hidden, Tensor) or hidden.shape != (batch, self.hidden_size):
            got = shape_str(hidden.shape) if isinstance(hidden, Tensor) else type(hidden).__name__
            raise ValueError(
                f"{owner}.init_hidden: expected hidden of shape "
                f"{shape_str([batch, self.hidden_size])}, got {got}"
            )
        if isinstance(state, list):
            state = tuple(state)
        for part in _state_parts(state):
            if not isinstance(part, Tensor) or part.dim() < 2 or part.shape[-2] != batch:
                got = shape_str(part.shape) if isinstance(part, Tensor) else type(part).__name__
                raise ValueError(
                    f"{owner}.init_hidden: expected state tensors of shape "
                    f"(..., {batch}, features) (batch at dim -2), got {got}"
                )
        return hidden, state

    def _initial_states(
        self, inputs: Tensor, hidden: Any, unbatched: bool
    ) -> list[tuple[Tensor, State]]:
        """Initial (hidden, state) of every cell, in the order layer 0 fwd, layer 0 rev, ..."""
        template = self._default_state(self, inputs)
        cells = list(self._cell_indices())
        if hidden is None:
            return [template] + [
                self._default_state(self.layer_cell(*index), inputs) for index in cells[1:]
            ]
        owner = type(self).__name__
        if not isinstance(hidden, (tuple, list)) or len(hidden) != 2:
            raise TypeError(
                f"{owner}: expected hidden to be a (hidden, state) tuple, got {describe(hidden)}"
            )
        count = len(cells)
        hidden_parts = self._split_stacked(
            "hidden", hidden[0], template[0], count, inputs, unbatched
        )
        template_state = template[1]
        given_state = hidden[1]
        if isinstance(template_state, tuple):
            if not isinstance(given_state, (tuple, list)) or len(given_state) != len(
                template_state
            ):
                raise TypeError(
                    f"{owner}: expected state to be a tuple of {len(template_state)} tensors, got "
                    f"{describe(given_state)}"
                )
            columns = [
                self._split_stacked(f"state[{i}]", part, like, count, inputs, unbatched)
                for i, (part, like) in enumerate(zip(given_state, template_state, strict=True))
            ]
            state_parts: list[State] = [tuple(row) for row in zip(*columns, strict=True)]
        else:
            state_parts = list(
                self._split_stacked("state", given_state, template_state, count, inputs, unbatched)
            )
        return list(zip(hidden_parts, state_parts, strict=True))

    def _split_stacked(
        self,
        name: str,
        given: Any,
        like: Tensor,
        count: int,
        inputs: Tensor,
        unbatched: bool,
    ) -> list[Tensor]:
        """Check a user-given stacked state against one cell's template and split it per cell.

        ``like`` is one cell's tensor, shape (*lead, B, X); the stacked form is
        (count * prod(lead), B, X), without B for unbatched input. The per-cell form ``like``
        itself is accepted when there is a single cell.
        """
        owner = type(self).__name__
        given = check_tensor(owner, name, given)
        lead = math.prod(like.shape[:-2])
        features = like.shape[-1]
        batch = like.shape[-2]
        accepted: list[tuple[int, ...]]
        if unbatched:
            accepted = [(count * lead, features)]
            meaning = "(num_layers*num_directions, hidden_size) for unbatched input"
        else:
            accepted = [(count * lead, batch, features)]
            meaning = "(num_layers*num_directions, batch, hidden_size)"
            if count == 1 and tuple(like.shape) not in accepted:
                accepted.append(tuple(like.shape))
        if tuple(given.shape) not in accepted:
            options = " or ".join(shape_str(shape) for shape in accepted)
            raise ValueError(
                f"{owner}: expected {name} of shape {options} {meaning}, "
                f"got {shape_str(given.shape)}"
            )
        if given.dtype != inputs.dtype:
            raise TypeError(
                f"{owner}: expected {name} of dtype {inputs.dtype} (the input's), got {given.dtype}"
            )
        if given.device != inputs.device:
            raise ValueError(
                f"{owner}: expected {name} on {inputs.device} (the input's), got {given.device}"
            )
        if unbatched:
            given = given.unsqueeze(-2)  # (count*lead, 1, X)
        if tuple(given.shape) == tuple(like.shape):
            return [given]
        return [chunk.reshape(like.shape) for chunk in given.split(lead)]

    def _check_step_input(
        self, x: Any, hidden: Any, state: Any, lead: tuple[int, ...] = (), parts: int = 0
    ) -> None:
        """Check the arguments of a built-in :meth:`forward_cell` before any arithmetic.

        ``x`` must be ``(batch, features)`` with this cell's input features, ``hidden``
        ``(batch, hidden_size)``, and the state one tensor ``(*lead, batch, hidden_size)`` or,
        with ``parts``, a tuple of that many; all on the parameters' device and, outside
        autocast, of the parameters' dtype: a direct call gets the same kind of error as
        ``forward`` instead of one from deep in torch. The time loop skips it.
        """
        if not self._check_steps:
            return
        owner = f"{type(self).__name__}.forward_cell"
        x = check_tensor(owner, "x", x)
        if x.dim() != 2 or x.shape[1] != self._step_input_size:
            wanted = shape_str(["batch", self._step_input_size])
            raise ValueError(f"{owner}: expected x of shape {wanted}, got {shape_str(x.shape)}")
        size = (x.shape[0], self.hidden_size)
        if parts:
            if not isinstance(state, (tuple, list)) or len(state) != parts:
                raise TypeError(
                    f"{owner}: expected state to be a tuple of {parts} tensors, got "
                    f"{describe(state)}"
                )
            states = [(f"state[{index}]", part) for index, part in enumerate(state)]
        else:
            states = [("state", state)]
        arguments = [("hidden", hidden, size)] + [
            (name, part, (*lead, *size)) for name, part in states
        ]
        for name, value, shape in arguments:
            value = check_tensor(owner, name, value)
            if value.shape != shape:
                raise ValueError(
                    f"{owner}: expected {name} of shape {shape_str(shape)}, "
                    f"got {shape_str(value.shape)}"
                )
        reference = next(self.parameters(), None)
        if reference is None:
            return
        tensors = [("x", x), *((name, value) for name, value, _ in arguments)]
        for name, value in tensors:
            if value.device != reference.device:
                raise ValueError(
                    f"{owner}: expected {name} on {reference.device} (where the parameters "
                    f"are), got {value.device}"
                )
        for name, value in tensors:
            if value.dtype != reference.dtype and not torch.is_autocast_enabled(x.device.type):
                raise TypeError(
                    f"{owner}: expected {name} of dtype {reference.dtype} (the parameters' "
                    f"dtype), got {value.dtype}"
                )

    def _check_step_output(
        self, hidden: Any, state: Any, old_hidden: Tensor, old_state: State
    ) -> None:
        owner = type(self).__name__
        if not isinstance(hidden, Tensor) or hidden.shape != old_hidden.shape:
            got = shape_str(hidden.shape) if isinstance(hidden, Tensor) else type(hidden).__name__
            raise ValueError(
                f"{owner}.forward_cell: expected hidden of shape "
                f"{shape_str(old_hidden.shape)}, got {got}"
            )
        new_parts, old_parts = _state_parts(state), _state_parts(old_state)
        if len(new_parts) != len(old_parts) or any(
            not isinstance(new, Tensor) or new.shape != old.shape
            for new, old in zip(new_parts, old_parts, strict=False)
        ):
            shapes = [
                shape_str(p.shape) if isinstance(p, Tensor) else type(p).__name__ for p in new_parts
            ]
            raise ValueError(
                f"{owner}.forward_cell: expected state shaped like "
                f"{[shape_str(p.shape) for p in old_parts]}, got {shapes}"
            )

    # ------------------------------------------------------------------ output assembly
    @staticmethod
    def _per_step_states(per_direction: list[list[State]]) -> State:
        """Per-step states (*lead, B, X) of each direction into (*lead, B, T, D*X)."""
        first = per_direction[0][0]
        columns = []
        for index in range(len(_state_parts(first))):
            directions = [
                torch.stack([_state_parts(state)[index] for state in steps], dim=-2)
                for steps in per_direction
            ]  # each (*lead, B, T, X)
            columns.append(directions[0] if len(directions) == 1 else torch.cat(directions, -1))
        return _from_parts(columns, first)

    @staticmethod
    def _stack_states(states: list[State], batch: int) -> State:
        """Concatenate per-cell states (*lead, B, X) into (cells * prod(lead), B, X)."""
        first = states[0]
        columns = zip(*(_state_parts(s) for s in states), strict=True)
        stacked = [
            torch.cat([part.reshape(-1, batch, part.shape[-1]) for part in column])
            for column in columns
        ]
        return _from_parts(stacked, first)

    @staticmethod
    def _repack(output: Tensor, packed: PackedSequence, lengths: Tensor | None) -> PackedSequence:
        """Pack (B, T, ·) outputs in the same order and with the same indices as the input."""
        assert lengths is not None  # pad_packed_sequence always gives lengths
        if packed.sorted_indices is not None:
            index = packed.sorted_indices.to(output.device)
            output = output.index_select(0, index)
            lengths = lengths.index_select(0, packed.sorted_indices.cpu())
        data = pack_padded_sequence(output, lengths, batch_first=True, enforce_sorted=True).data
        return PackedSequence(
            data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
        )


class _StepAnswers(nn.Module):
    """Stands in for ``i2h`` on the hoisted engine: ``i2h(steps[t])`` is ``projected[t]``.

    The step tensor is recognised by identity, never by value; any other input is passed to
    the real module, so a cell that applies ``i2h`` to something else stays correct.
    """

    projection: nn.Module

    def __init__(
        self, projection: nn.Module, steps: tuple[Tensor, ...], projected: tuple[Tensor, ...]
    ) -> None:
        super().__init__()
        self.__dict__["projection"] = projection  # not registered: the view owns no parameters
        self._answers = {id(step): (step, row) for step, row in zip(steps, projected, strict=True)}

    def forward(self, x: Tensor) -> Tensor:
        answer = self._answers.get(id(x))
        if answer is not None and answer[0] is x:
            return answer[1]
        result: Tensor = self.projection(x)
        return result
