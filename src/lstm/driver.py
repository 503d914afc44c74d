"""The driver: :class:`Recurrent`, the one time loop that runs any cell over sequences.

A cell (a subclass) says which parameters one cell has (:meth:`Recurrent.build_cell`), how
one step works (:meth:`Recurrent.forward_cell`) and, if its state is not ``(batch,
hidden_size)``, how it starts (:meth:`Recurrent.init_hidden`). The state is opaque to the
driver: a tensor or a tuple of tensors with the batch at dimension -2.

The driver composes one module per concern: :mod:`lstm.layout` (input and output layouts),
:mod:`lstm.state` (states, initial states), :mod:`lstm.engines` (which engine runs, and why),
:mod:`lstm.scan` (the time loop), :mod:`lstm.checks` (checks as pure functions) and
:mod:`lstm.parameters` (parameter names per layer and direction).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from lstm import checks, parameters
from lstm.engines import ENGINES, Engine, StepSource, prepare_call, run_engine, step_source
from lstm.layout import write_output
from lstm.parameters import CellPart, Device, DType, cell_suffix, linear_maps
from lstm.state import State, map_state

# Recurrent, and names that lived here before the driver was split (still importable).
__all__ = ["ENGINES", "CellPart", "Recurrent", "State", "cell_suffix"]
__all__ += ["linear_maps", "map_state"]

_DEFAULTS = {"num_layers": 1, "bias": True, "batch_first": True, "dropout": 0.0}
_DEFAULTS |= {"bidirectional": False, "recurrent_dropout": 0.0, "zoneout": 0.0}
"""The options whose default ``repr`` leaves out."""


class Recurrent(nn.Module):
    r"""Base class of every recurrent module in this package: the driver.

    A subclass defines :meth:`build_cell` and :meth:`forward_cell` (and, for a state that is
    not ``(batch, hidden_size)``, :meth:`init_hidden`); it then runs over sequences, stacks
    ``num_layers`` layers, runs both directions, applies dropout between layers and honours
    per-sequence lengths and ``PackedSequence`` input, with the interface of
    ``torch.nn.LSTM``.

    The arguments from ``input_size`` to ``bidirectional`` may be given positionally, in
    ``torch.nn.LSTM``'s order (``LSTM(16, 32, 2)`` is two layers); the rest are
    keyword-only. Unlike ``torch.nn.LSTM``, ``batch_first`` defaults to True.

    Parameters
    ----------
    input_size : int
        Number of features of each input step, ``>= 1``.
    hidden_size : int
        Number of features of the hidden output, ``>= 1``.
    num_layers : int, default 1
        Number of stacked layers; layer ``l > 0`` reads the (concatenated) outputs of layer
        ``l - 1``, of size ``num_directions * output_size``
        (:attr:`~lstm.driver.Recurrent.output_size`).
    bias : bool, default True
        Whether the cells' linear maps have biases.
    batch_first : bool, default True
        If True (the reference page's convention), input and output are
        ``(batch, seq_len, features)``; if False, ``(seq_len, batch, features)`` like
        ``torch.nn.LSTM``'s default. Unbatched input ``(seq_len, features)`` works either way.
    dropout : float, default 0.0
        Probability in ``[0, 1]`` of zeroing an output of each layer but the last, in
        training mode only (1.0 zeros them all, as in ``torch.nn.LSTM``).
    bidirectional : bool, default False
        If True, each layer also runs over the reversed sequences (each from its own true end
        when lengths are given) and the two outputs are concatenated.
    recurrent_dropout : float, default 0.0
        Variational dropout of the hidden state :meth:`forward_cell` receives, one mask per
        cell and sequence, in training mode (:func:`lstm.scan.recurrent_dropout_mask`).
    zoneout : float, default 0.0
        Probability that a unit of the hidden output or state keeps its previous value at a
        step in training; its expectation in eval mode (:func:`lstm.scan.zone_out`).
    device, dtype : optional
        Where and in which floating-point type the parameters are created.

    Attributes
    ----------
    engine : str
        ``"auto"`` (default): the fastest engine that applies (see :meth:`engine_for`);
        ``"reference"``: always :meth:`forward_cell` step by step; ``"hoisted"``: the same,
        with a plain ``nn.Linear`` ``i2h`` applied to all steps in one matrix product first
        (:mod:`lstm.engines`). All give the same results (1e-10 in float64).
    cell_names : tuple of str
        The names :meth:`build_cell` returns (``("i2h", "h2h")`` for the LSTM).
    cell_index : tuple of int
        ``(layer, direction)`` of the cell this object stands for: ``(0, 0)`` for the module,
        another for a :meth:`layer_cell` view.
    step_source : StepSource
        Class attribute set at class creation: whose step runs, and whether a fast path
        applies (:func:`lstm.engines.step_source`).
    """

    step_source: ClassVar[StepSource]
    gate_blocks: ClassVar[int] = 0
    """Blocks of ``hidden_size`` rows of ``i2h`` and ``h2h`` made by the default
    :meth:`build_cell` (4 for the LSTM); 0 for a class that defines its own."""
    stacked_states_only: ClassVar[bool] = False
    """True refuses initial states of one cell, ``(batch, features)`` (nn.LSTM's rule)."""
    state_rank: ClassVar[int] = 2
    """Rank of each tensor of one cell's state: 3 for ``(k, batch, features)``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.step_source = step_source(cls)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.input_size = checks.check_int(owner, "input_size", input_size, 1)
        self.hidden_size = checks.check_int(owner, "hidden_size", hidden_size, 1)
        self.num_layers = checks.check_int(owner, "num_layers", num_layers, 1)
        self.bias = checks.check_bool(owner, "bias", bias)
        self.batch_first = checks.check_bool(owner, "batch_first", batch_first)
        self.dropout = checks.check_probability(owner, "dropout", dropout, include_one=True)
        self.bidirectional = checks.check_bool(owner, "bidirectional", bidirectional)
        self.recurrent_dropout = checks.check_probability(
            owner, "recurrent_dropout", recurrent_dropout
        )
        self.zoneout = checks.check_probability(owner, "zoneout", zoneout)
        checks.check_factory(owner, device, dtype)
        checks.warn_unused_dropout(owner, self.dropout, self.num_layers)
        self.engine = "auto"
        self.cell_index = (0, 0)
        self.cell_names: tuple[str, ...] = ()
        self.cell_names = parameters.register_cells(self, device, dtype)

    # ------------------------------------------------------------------ what a cell says
    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Device = None, dtype: DType = None
    ) -> dict[str, CellPart]:
        """Create the parameters of one cell (one layer, one direction).

        Called by the constructor once per layer and direction; attributes it reads (such as
        a subclass's ``self.k``) must be set before ``super().__init__``. By default, for a
        class that sets :attr:`gate_blocks`: the reference page's ``i2h`` and ``h2h``,
        ``nn.Linear`` maps to ``gate_blocks * hidden_size`` features
        (:func:`~lstm.parameters.linear_maps`).

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
        if not self.gate_blocks:
            raise NotImplementedError(f"{type(self).__name__} must define build_cell()")
        size = self.gate_blocks * hidden_size
        return linear_maps(
            input_size, hidden_size, size, bias=self.bias, device=device, dtype=dtype
        )

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
        The built-in cells check their arguments first
        (:func:`lstm.checks.check_forward_cell`); the time loop skips that. Called directly,
        they also take the original implementation's layout, hidden ``(1, batch,
        hidden_size)``, and answer in it (:func:`lstm.state.from_original_layout`).
        """
        raise NotImplementedError(f"{type(self).__name__} must define forward_cell()")

    def init_hidden(self, x: Tensor) -> tuple[Tensor, Any]:
        """Initial ``(hidden, state)`` of one cell (on its :meth:`layer_cell` view).

        Parameters
        ----------
        x : Tensor of shape (batch, seq_len, input_size)
            The module's input, always batch-first here.

        Returns
        -------
        hidden : Tensor of shape ``(batch, output_size)``
            Zeros by default (``output_size`` is ``hidden_size`` but for a projected LSTM).
            An override may return the original implementation's ``(1, batch, features)``
            and state instead (:func:`lstm.state.from_original_layout`).
        state : Tensor of shape (batch, hidden_size)
            Zeros by default; any ``(*lead, batch, features)`` or a tuple of such.
        """
        batch = x.shape[0]
        return x.new_zeros(batch, self.output_size), x.new_zeros(batch, self.hidden_size)

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

    @property
    def output_size(self) -> int:
        """Features of one cell's hidden output ``h_t``: ``hidden_size`` here.

        A family whose hidden output is narrower than its state overrides it (the LSTM with
        ``proj_size > 0``, as ``torch.nn.LSTM``'s ``real_hidden_size``). The driver sizes the
        hidden tensors it passes and returns, and the input of deeper layers
        (``num_directions * output_size``), by it.
        """
        return self.hidden_size

    def layer_input_size(self, layer: int) -> int:
        """Features each cell of ``layer`` reads: the input's, or the layer below's output."""
        return self.input_size if layer == 0 else self.output_size * self.num_directions

    def cell_indices(self) -> Iterator[tuple[int, int]]:
        """``(layer, direction)`` of every cell, in the order of the stacked states."""
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                yield layer, direction

    def cell_suffix(self, layer: int, direction: int) -> str:
        """Suffix of cell ``(layer, direction)``'s parameter names: :func:`cell_suffix` here
        (``i2h``, ``i2h_reverse``, ``i2h_l1``); ``lstm.nn.LSTM``'s is nn.LSTM's (``_l0``)."""
        return cell_suffix(layer, direction)

    def cell_parts(self, layer: int = 0, direction: int = 0) -> dict[str, CellPart]:
        """The parts of cell ``(layer, direction)`` (0 forward, 1 reverse) under their plain names.

        e.g. ``{"i2h": Linear, "h2h": Linear}`` for the LSTM
        (:func:`lstm.parameters.cell_parts`).
        """
        owner, layers, directions = type(self).__name__, self.num_layers, self.num_directions
        checks.check_cell_index(owner, layer, direction, layers, directions)
        return parameters.cell_parts(self, self.cell_names, self.cell_suffix(layer, direction))

    def layer_cell(self, layer: int = 0, direction: int = 0) -> Recurrent:
        """This module as seen by one cell: ``self.<name>`` is that cell's part.

        The module itself for a cell whose names have no suffix (layer 0 forward, here);
        otherwise a view of the same class (:func:`lstm.parameters.view_with`, made per call,
        never stored) in which the names of :attr:`cell_names` are the parts of ``(layer,
        direction)``. The driver steps it, which is how a subclass that overrides only
        :meth:`forward_cell` gets stacked layers and both directions; a user can too:
        ``model.layer_cell(1).forward_cell(x, h, c)``.
        """
        if not self.cell_suffix(layer, direction):
            return self
        return parameters.view_with(self, self.cell_parts(layer, direction), (layer, direction))

    def reset_parameters(self) -> None:
        """Re-initialise every cell part that has a ``reset_parameters`` method.

        For the built-in cells these are ``nn.Linear`` layers, initialised as PyTorch does:
        weights and biases uniform in ``(-1/sqrt(in_features), 1/sqrt(in_features))``.
        """
        parameters.reset_parts(self.cell_parts(*index) for index in self.cell_indices())

    def flatten_parameters(self) -> None:
        """Do nothing and return None, as ``torch.nn.LSTM.flatten_parameters`` on the CPU: there
        is no cuDNN buffer to pack here. It exists so that code written for ``torch.nn.LSTM``
        (pytorch/examples' word_language_model calls it after loading) runs unchanged."""

    def extra_repr(self) -> str:
        changed = [(name, getattr(self, name)) for name in _DEFAULTS]
        shown = [f", {name}={value}" for name, value in changed if value != _DEFAULTS[name]]
        return f"{self.input_size}, {self.hidden_size}" + "".join(shown)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: Tensor | PackedSequence,
        hidden: tuple[Tensor, Any] | None = None,
        lengths: Tensor | Sequence[int] | None = None,
        return_all_states: bool = False,
    ) -> Any:
        r"""Run every sequence of ``x`` through every layer and direction.

        Parameters
        ----------
        x : Tensor or PackedSequence
            ``(batch, seq_len, input_size)`` if ``batch_first`` (the default), else
            ``(seq_len, batch, input_size)``; ``(seq_len, input_size)`` for one unbatched
            sequence; or a ``PackedSequence``, in which case the output is one too. The
            batch may be empty (empty outputs and states, as ``torch.nn.LSTM`` gives);
            ``seq_len`` must be at least 1 (:class:`~lstm.checks.ShapeError` otherwise).
        hidden : tuple (hidden, state), optional
            Initial states; :meth:`init_hidden` if None. Each ``(num_layers *
            num_directions, batch, hidden_size)`` as ``torch.nn.LSTM`` takes them (the state
            stacked likewise), or ``(batch, hidden_size)`` as the reference page documents
            it (one layer and direction; not where :attr:`stacked_states_only`); no batch
            dimension for unbatched input. The hidden tensor has
            :attr:`~lstm.driver.Recurrent.output_size` features (``proj_size`` for a
            projected LSTM).
        lengths : Tensor of shape (batch,), or list or tuple of ints, optional
            True length of each sequence, integers in ``1..seq_len`` (a list or tuple as
            ``pack_padded_sequence`` takes it). Steps past a sequence's
            end leave its state untouched and give zero outputs; the reverse direction starts
            at each sequence's true end. Not allowed with a ``PackedSequence``.
        return_all_states : bool, default False
            Also return the last layer's state at every step (pytorch#31423); this runs the
            reference path (or the hoisted one, if that is the engine). The engine that runs
            is the one :meth:`engine_for` names for the same arguments.

        Returns
        -------
        outputs : Tensor or PackedSequence
            ``(batch, seq_len, num_directions * hidden_size)`` (batch-first), the last layer's
            hidden output at each step, zero past each sequence's end (``output_size``
            features per direction where that is not ``hidden_size``).
        (hidden, state) : tuple
            Final states of every layer and direction, taken at each sequence's true end:
            hidden ``(num_layers * num_directions, batch, hidden_size)`` and state stacked
            the same way (``(num_layers * num_directions * k, batch, hidden_size)`` for a
            cell whose per-cell state is ``(k, batch, hidden_size)``). Index ``2 * l + d`` is
            layer ``l``, direction ``d``, as in ``torch.nn.LSTM``. Hidden has ``output_size``
            features where that is not ``hidden_size``.
        all_states : Tensor or tuple of Tensors, only with ``return_all_states=True``
            The last layer's state after every step, laid out like ``outputs`` (padded for a
            ``PackedSequence``), zero past each sequence's end: a cell's ``(*lead, batch,
            features)`` becomes ``(*lead, batch, seq_len, num_directions * features)``. For
            the LSTM: ``(batch, seq_len, num_directions * hidden_size)``, the cell state.
        """
        batch, initial, engine = prepare_call(
            self, x, lengths, hidden, all_states=return_all_states
        )
        collected: list[list[State]] | None = [] if return_all_states else None
        output, finals = run_engine(engine, self, batch.inputs, initial, batch.ragged, collected)
        return write_output(batch, output, finals, collected, self.batch_first)

    def engine_for(
        self,
        x: Tensor | PackedSequence,
        lengths: Tensor | Sequence[int] | None = None,
        hidden: tuple[Tensor, Any] | None = None,
        *,
        return_all_states: bool = False,
    ) -> Engine:
        """The engine ``forward`` runs for these arguments (checked as it checks them), and why.

        Call it in the same context as ``forward``: training mode, grad mode and autocast
        take part in the choice (:func:`lstm.engines.choose_engine`, whose rules
        docs/architecture.md tabulates).

        Returns
        -------
        Engine
            ``(name, reason)``: the engine (:class:`~lstm.engines.Engine`) and what decided it.

        Examples
        --------
        >>> import torch, lstm
        >>> lstm.LSTM(3, 4).engine_for(torch.randn(2, 5, 3)).name
        'kernel'
        """
        return prepare_call(self, x, lengths, hidden, all_states=return_all_states).engine


Recurrent.step_source = step_source(Recurrent)
