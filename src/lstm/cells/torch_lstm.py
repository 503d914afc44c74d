r"""``lstm.nn``: the LSTM with ``torch.nn.LSTM``'s and ``torch.nn.LSTMCell``'s own faces.

Code written for ``torch.nn`` changes one import and runs unchanged: the same constructor
signatures and defaults (``batch_first=False``), the parameters as real ``nn.Parameter``\ s
under torch's names, shapes and gate order (``weight_ih_l0``, ``bias_hh_l1_reverse``,
``weight_hr_l0``; ``weight_ih``, ...; gate blocks **i, f, g, o**), so state dicts cross both
ways and every write through a name (``nn.init``, ``.data`` slices, ``copy_``, assignment)
reaches the computation, as on torch's modules. The cell stays changeable: a subclass that
overrides :meth:`LSTM.forward_cell` runs its own step through this package's driver (layers,
directions, dropout, lengths, ``PackedSequence``, unbatched input).

The stock modules run torch's own kernels on their own weights, with nothing permuted:
``torch.lstm`` (:meth:`LSTM.fused_forward`) and ``torch.lstm_cell``. The reference page's
``lstm.LSTM`` (batch-first, ``i2h``/``h2h``, gate blocks f, i, o, g) is the other face of
the same family (:mod:`lstm.cells.lstm`); ``LSTM.from_torch`` converts between the two
layouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from lstm.cells.lstm import (
    PACKED_TRAINING_MAX_LEN,
    check_proj_size,
    lstm_cell,
    lstm_kernel,
    shared_options,
)
from lstm.checks import (
    ShapeError,
    check_bool,
    check_factory,
    check_forward_cell,
    check_int,
    check_step_arguments,
    check_tensor,
    shape_str,
)
from lstm.driver import Recurrent
from lstm.engines import ENGINES, Engine, FastPath
from lstm.parameters import CellPart, Device, DType, cell_parts, torch_suffix

GATE_ORDER = "ifgo"
"""The order of the four gate blocks in the rows of every weight and bias here, torch's:
input, forget, candidate (``g``), output (:func:`lstm.lstm_pointwise`'s ``order``)."""

PARTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
"""The names of one cell's parameters, ``torch.nn.LSTMCell``'s (and ``weight_hr``, the
projection of an LSTM with ``proj_size``): suffixed ``_l{k}[_reverse]`` on :class:`LSTM`,
plain inside :meth:`LSTM.forward_cell`."""


def _uniform_init(module: nn.Module, hidden_size: int) -> None:
    """Every parameter uniform in ``±1/sqrt(hidden_size)``, in ``parameters()`` order.

    As ``torch.nn.LSTM`` and ``torch.nn.LSTMCell`` draw them, so that the same seed gives
    the same weights bit for bit.
    """
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    for weight in module.parameters():
        nn.init.uniform_(weight, -bound, bound)


class LSTM(Recurrent):
    r"""``torch.nn.LSTM``'s face on this package's driver: one import changes, nothing else.

    At every step of every layer and direction, :meth:`forward_cell` computes, with the gate
    blocks in torch's order **i, f, g, o**:

    .. math::

        a_t &= W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh} \\
        i_t &= \sigma(a_{t,i}), \; f_t = \sigma(a_{t,f}), \; g_t = \tanh(a_{t,g}), \;
              o_t = \sigma(a_{t,o}) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t, \qquad h_t = o_t \odot \tanh(c_t)

    and, with ``proj_size > 0``, :math:`h_t = W_{hr} (o_t \odot \tanh(c_t))`.

    The constructor, its defaults (``batch_first=False``), the parameters (real
    ``nn.Parameter``\ s under nn.LSTM's names, shapes and order), ``state_dict()``,
    ``_flat_weights``, ``all_weights``, the initialisation (the same random draws: one seed
    gives nn.LSTM's weights bit for bit), ``forward(input, hx)`` and its results are
    ``torch.nn.LSTM``'s. So ``load_state_dict(nn_lstm.state_dict())`` works both ways, and
    ``nn.init.orthogonal_(model.weight_hh_l0)``, ``model.bias_ih_l0.data[H:2*H].fill_(1)``
    or assigning ``model.weight_ih_l0 = nn.Parameter(...)`` change the computation as they
    would on nn.LSTM. The stock class runs ``torch.lstm`` on these very tensors (no
    permutation); :meth:`engine_for` says which engine runs and why.

    **Changing the cell.** Override :meth:`forward_cell`: inside it, ``self.weight_ih``,
    ``self.weight_hh``, ``self.bias_ih``, ``self.bias_hh`` (None with ``bias=False``) and
    ``self.weight_hr`` (None without projections) are the parameters of the layer and
    direction being stepped (nn.LSTMCell's names), gate blocks i, f, g, o. The subclass
    keeps everything above and runs its own step (the reference engine).

    Parameters
    ----------
    input_size, hidden_size : int
        Features of the input and of the cell state.
    num_layers : int, default 1
    bias : bool, default True
    batch_first : bool, default False
        As ``torch.nn.LSTM``: input and output ``(seq_len, batch, features)`` by default.
    dropout : float, default 0.0
        Between layers, in training mode.
    bidirectional : bool, default False
    proj_size : int, default 0
        If ``> 0``, an LSTM with projections (``weight_hr_l{k}``), as nn.LSTM's.
    device, dtype : optional
        These ten may all be given positionally, in nn.LSTM's order.
    recurrent_dropout, zoneout : float, default 0.0
        Keyword-only: this package's per-step regularisers (:class:`lstm.Recurrent`).

    Attributes
    ----------
    weight_ih_l{k}[_reverse] : nn.Parameter of shape (4 * hidden_size, input_size)
        ``(4 * hidden_size, num_directions * output_size)`` for ``k > 0``.
    weight_hh_l{k}[_reverse] : nn.Parameter of shape (4 * hidden_size, output_size)
    bias_ih_l{k}[_reverse], bias_hh_l{k}[_reverse] : nn.Parameter of shape (4 * hidden_size,)
        Only with ``bias=True``.
    weight_hr_l{k}[_reverse] : nn.Parameter of shape (proj_size, hidden_size)
        Only with ``proj_size > 0``. Every parameter starts uniform in
        ``±1/sqrt(hidden_size)``; ``output_size`` is ``proj_size or hidden_size``.
    mode : str
        ``"LSTM"``, as nn.LSTM's.

    Examples
    --------
    >>> import torch, lstm
    >>> model = lstm.nn.LSTM(8, 16, num_layers=2)
    >>> [name for name, _ in model.named_parameters()][:4]
    ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0']
    >>> output, (hidden, state) = model(torch.randn(10, 4, 8))  # (seq_len, batch, features)
    >>> output.shape, hidden.shape
    (torch.Size([10, 4, 16]), torch.Size([2, 4, 16]))
    >>> _ = model.load_state_dict(torch.nn.LSTM(8, 16, num_layers=2).state_dict())
    """

    weight_ih: Tensor
    weight_hh: Tensor
    bias_ih: Tensor | None
    bias_hh: Tensor | None
    weight_hr: Tensor | None

    mode = "LSTM"
    stacked_states_only = True
    fast_path = FastPath(
        "kernel",
        "torch.lstm, the kernel of nn.LSTM, on the module's own weights (no gate permutation)",
        ragged_training_max_len=PACKED_TRAINING_MAX_LEN,
    )
    """The stock class runs ``torch.lstm`` on ``_flat_weights`` (:meth:`fused_forward`)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        owner = type(self).__name__
        self.proj_size = check_proj_size(
            owner, type(self), LSTM, proj_size, hidden_size, "weight_hr"
        )
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
            device=device,
            dtype=dtype,
        )
        self._all_weights = [
            [name for name in self._cell_names(*index) if name in self._parameters]
            for index in self.cell_indices()
        ]
        self._flat_weights_names = [name for names in self._all_weights for name in names]
        self.reset_parameters()

    # ------------------------------------------------------------------ what a cell says
    @property
    def output_size(self) -> int:
        """Features of the hidden output: ``proj_size`` if projecting, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    def cell_suffix(self, layer: int, direction: int) -> str:
        """nn.LSTM's suffix (:func:`lstm.parameters.torch_suffix`): ``_l0``, ``_l0_reverse``."""
        return torch_suffix(layer, direction)

    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Device = None, dtype: DType = None
    ) -> dict[str, CellPart]:
        """One cell's parameters, as nn.LSTM makes them (uninitialised until
        :meth:`reset_parameters`).

        Returns
        -------
        dict
            ``weight_ih`` ``(4H, input_size)``, ``weight_hh`` ``(4H, output_size)``,
            ``bias_ih`` and ``bias_hh`` ``(4H,)`` (None with ``bias=False``), ``weight_hr``
            ``(proj_size, H)`` (None without projections).
        """
        gates, factory = 4 * hidden_size, {"device": device, "dtype": dtype}

        def parameter(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape, **factory))  # type: ignore[arg-type]

        biases = (parameter(gates), parameter(gates)) if self.bias else (None, None)
        return {
            "weight_ih": parameter(gates, input_size),
            "weight_hh": parameter(gates, self.output_size),
            "bias_ih": biases[0],
            "bias_hh": biases[1],
            "weight_hr": parameter(self.proj_size, hidden_size) if self.proj_size else None,
        }

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step of one cell: :func:`lstm.lstm_cell` with torch's gate order.

        Parameters
        ----------
        x : Tensor of shape (batch, input_size)
            This cell's input (``num_directions * output_size`` features above layer 0).
        hidden : Tensor of shape (batch, output_size)
        state : Tensor of shape (batch, hidden_size)

        Returns
        -------
        hidden : Tensor of shape (batch, output_size)
        state : Tensor of shape (batch, hidden_size)

        Notes
        -----
        Reads ``self.weight_ih``, ``self.weight_hh``, ``self.bias_ih``, ``self.bias_hh`` and
        ``self.weight_hr``: the stepped cell's parameters (the driver steps
        :meth:`~lstm.driver.Recurrent.layer_cell` views); on the module itself they are layer
        0's forward cell's, so ``model.forward_cell(x, h, c)`` steps that cell.
        """
        check_forward_cell(self, x, hidden, state)
        weights = self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.weight_hr
        return lstm_cell(x, hidden, state, *weights, order=GATE_ORDER)

    def __getattr__(self, name: str) -> Any:
        """``nn.Module``'s look-up; then the plain names of :data:`PARTS` are layer 0's
        forward cell's parameters (``model.weight_ih`` is ``model.weight_ih_l0``)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name not in PARTS:
                raise
        return cell_parts(self, (name,), self.cell_suffix(0, 0))[name]

    # ------------------------------------------------------------------ nn.LSTM's surface
    @property
    def _flat_weights(self) -> list[Tensor | None]:
        """The tensors of :attr:`_flat_weights_names`, as they are now (None where deleted)."""
        parameters = self._parameters
        try:  # every call reads them: plain parameters straight from their dict
            return [parameters[name] for name in self._flat_weights_names]
        except KeyError:  # parametrized, assigned as plain tensors, or deleted
            return list(cell_parts(self, tuple(self._flat_weights_names), "").values())

    @property
    def all_weights(self) -> list[list[Tensor | None]]:
        """The tensors of ``_all_weights``, per layer and direction, as nn.LSTM's."""
        return [list(cell_parts(self, tuple(names), "").values()) for names in self._all_weights]

    def reset_parameters(self) -> None:
        """Every parameter uniform in ``±1/sqrt(hidden_size)``, drawn as nn.LSTM draws them."""
        _uniform_init(self, self.hidden_size)

    def extra_repr(self) -> str:
        """As nn.LSTM's repr, plus this package's options where they are set."""
        text = f"{self.input_size}, {self.hidden_size}"
        options: list[tuple[str, float]] = [("proj_size", 0), ("num_layers", 1), ("bias", True)]
        options += [("batch_first", False), ("dropout", 0.0), ("bidirectional", False)]
        options += [("recurrent_dropout", 0.0), ("zoneout", 0.0)]
        for name, default in options:
            value = getattr(self, name)
            text += f", {name}={value}" if value != default else ""
        return text

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: tuple[Tensor, Tensor] | None = None,
        lengths: Tensor | Sequence[int] | None = None,
        return_all_states: bool = False,
    ) -> Any:
        """nn.LSTM's call: ``output, (h_n, c_n) = model(input, (h_0, c_0))``.

        Parameters
        ----------
        input : Tensor or PackedSequence
            ``(seq_len, batch, input_size)`` (``(batch, seq_len, input_size)`` with
            ``batch_first=True``), ``(seq_len, input_size)`` unbatched, or packed.
        hx : (h_0, c_0), optional
            Each ``(num_layers * num_directions, batch, output_size)`` and ``(...,
            hidden_size)`` (no batch dimension for unbatched input); zeros if None.
        lengths, return_all_states
            This package's additions (:meth:`lstm.Recurrent.forward`).

        Returns
        -------
        output : Tensor or PackedSequence
            ``(seq_len, batch, num_directions * output_size)`` (batch first with
            ``batch_first=True``), packed if the input was.
        (h_n, c_n) : tuple of Tensor
            ``(num_layers * num_directions, batch, output_size)`` and ``(...,
            hidden_size)``.

        Raises
        ------
        AttributeError
            If a weight was deleted and not assigned again.
        lstm.ShapeError, TypeError, ValueError
            For bad input or states, naming the expected and the given value.
        """
        for name in self._flat_weights_names:
            # A parameter, a tensor assigned in its place, or a parametrization's property:
            # looked up without computing it (the kernel reads it once, below).
            if name in self._parameters or name in self.__dict__ or name in vars(type(self)):
                continue
            raise AttributeError(
                f"{type(self).__name__}: expected a tensor as {name}, got none (deleted); "
                f"assign one, e.g. model.{name} = nn.Parameter(...)"
            )
        return super().forward(input, hx, lengths, return_all_states)

    def fused_forward(
        self, inputs: Tensor, initial: Sequence[Any], lengths: Tensor | None
    ) -> tuple[Tensor, Sequence[Any]]:
        """The whole stack in one call of ``torch.lstm`` on :attr:`_flat_weights` as they are
        (:func:`lstm.cells.lstm.lstm_kernel`): nn.LSTM's own computation."""
        return lstm_kernel(self, self._flat_weights, inputs, initial, lengths)  # type: ignore[arg-type]

    def kernel_problem(self) -> str | None:
        """None: the kernel reads the weights as they are (parametrized ones computed)."""
        return None

    # ------------------------------------------------------------------ torch.nn.LSTM
    @classmethod
    def from_torch(cls, module: nn.LSTM) -> LSTM:
        """The same module as a ``torch.nn.LSTM``: its options, a copy of its state dict, its
        training mode.

        Raises
        ------
        TypeError
            If ``module`` is not a ``torch.nn.LSTM``.
        """
        if not isinstance(module, nn.LSTM):
            raise TypeError(
                f"{cls.__name__}.from_torch: expected a torch.nn.LSTM, got {type(module).__name__}"
            )
        converted = cls(module.input_size, module.hidden_size, **shared_options(module))
        converted.load_state_dict(module.state_dict())
        return converted.train(module.training)

    def to_torch(self) -> nn.LSTM:
        """A ``torch.nn.LSTM`` with this module's options, a copy of its state dict and its
        training mode (for a subclass with its own step: the plain LSTM on these weights)."""
        module = nn.LSTM(self.input_size, self.hidden_size, **shared_options(self))
        module.load_state_dict(self.state_dict())
        return module.train(self.training)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A module pickled without proj_size (as nn.LSTM's before torch 1.8) has none.
        state.setdefault("proj_size", 0)
        super().__setstate__(state)  # type: ignore[no-untyped-call]

    def _cell_names(self, layer: int, direction: int) -> list[str]:
        suffix = self.cell_suffix(layer, direction)
        return [name + suffix for name in self.cell_names]


class LSTMCell(nn.Module):
    r"""``torch.nn.LSTMCell``'s face: one step, ``h', c' = cell(x, (h, c))``, changeable.

    The same signature, defaults, parameters (``weight_ih`` ``(4H, input_size)``,
    ``weight_hh`` ``(4H, H)``, ``bias_ih`` and ``bias_hh`` ``(4H,)`` or None; gate blocks i,
    f, g, o), initialisation (same draws) and state dict as ``torch.nn.LSTMCell``. The stock
    class runs ``torch.lstm_cell``, nn.LSTMCell's own kernel; a subclass that overrides
    :meth:`forward_cell` runs its own step, reading the same names (a decoder or attention
    cell written once for its own loop). :meth:`engine_for` says which runs, and why.

    .. math::

        (i, f, g, o) = W_{ih} x + b_{ih} + W_{hh} h + b_{hh}, \quad
        c' = \sigma(f) \odot c + \sigma(i) \odot \tanh(g), \quad
        h' = \sigma(o) \odot \tanh(c')

    Parameters
    ----------
    input_size, hidden_size : int
    bias : bool, default True
    device, dtype : optional

    Attributes
    ----------
    weight_ih : nn.Parameter of shape (4 * hidden_size, input_size)
    weight_hh : nn.Parameter of shape (4 * hidden_size, hidden_size)
    bias_ih, bias_hh : nn.Parameter of shape (4 * hidden_size,), or None
        Every parameter starts uniform in ``±1/sqrt(hidden_size)``.
    engine : str
        ``"auto"`` (default) or ``"reference"`` (always :meth:`forward_cell`).

    Examples
    --------
    >>> import torch, lstm
    >>> cell = lstm.nn.LSTMCell(3, 5)
    >>> h, c = cell(torch.randn(2, 3))
    >>> h.shape, c.shape
    (torch.Size([2, 5]), torch.Size([2, 5]))
    """

    weight_ih: Tensor
    weight_hh: Tensor
    bias_ih: Tensor | None
    bias_hh: Tensor | None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        # nn.LSTMCell builds with either size 0 (and steps: (batch, 0) results); so does this.
        self.input_size = check_int(owner, "input_size", input_size, 0)
        self.hidden_size = check_int(owner, "hidden_size", hidden_size, 0)
        self.bias = check_bool(owner, "bias", bias)
        check_factory(owner, device, dtype)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        gates = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size, **factory))
        for name in ("bias_ih", "bias_hh"):
            value = nn.Parameter(torch.empty(gates, **factory)) if bias else None
            self.register_parameter(name, value)
        self.engine = "auto"
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter uniform in ``±1/sqrt(hidden_size)``, drawn as nn.LSTMCell draws."""
        _uniform_init(self, self.hidden_size)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        return text + ("" if self.bias else ", bias=False")

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step on batched tensors: :func:`lstm.lstm_cell` with torch's gate order.

        Parameters
        ----------
        x : Tensor of shape (batch, input_size)
        hidden, state : Tensor of shape (batch, hidden_size)

        Returns
        -------
        hidden, state : Tensor of shape (batch, hidden_size)
        """
        weights = self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
        return lstm_cell(x, hidden, state, *weights, order=GATE_ORDER)

    def engine_for(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> Engine:
        """What ``forward(input, hx)`` runs, and why (checked as ``forward`` checks it).

        Returns
        -------
        Engine
            ``kernel`` (``torch.lstm_cell``) for the stock step, else ``reference``
            (:meth:`forward_cell`), with the reason.
        """
        self._read_call(input, hx)
        return self._engine()

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """nn.LSTMCell's call.

        Parameters
        ----------
        input : Tensor of shape (batch, input_size) or (input_size,)
        hx : (h, c), optional
            Each ``(batch, hidden_size)``, or ``(hidden_size,)`` for unbatched input;
            zeros if None.

        Returns
        -------
        (h', c') : tuple of Tensor
            In the layout of ``input``: ``(batch, hidden_size)`` or ``(hidden_size,)``.

        Raises
        ------
        lstm.ShapeError
            For a rank or shape other than the above (a ``ValueError`` and a
            ``RuntimeError``), naming the expected and the given shape.
        TypeError, ValueError
            For a non-tensor, another dtype or device than the parameters'.
        """
        x, hidden, state, unbatched = self._read_call(input, hx)
        if self._engine().name == "kernel":
            weights = self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
            hidden, state = torch.lstm_cell(x, (hidden, state), *weights)
        else:
            hidden, state = self.forward_cell(x, hidden, state)
        if unbatched:
            return hidden.squeeze(0), state.squeeze(0)
        return hidden, state

    def _engine(self) -> Engine:
        owner, step = type(self).__name__, type(self).forward_cell
        if self.engine not in ENGINES[:2]:
            raise ValueError(f"{owner}: expected engine in {ENGINES[:2]}, got {self.engine!r}")
        if self.engine == "reference":
            return Engine("reference", "engine='reference' is set on the module")
        if step is not LSTMCell.forward_cell:
            definer = next(k for k in type(self).__mro__ if "forward_cell" in vars(k))
            reason = f"{definer.__name__} overrides forward_cell of LSTMCell: it runs its own step"
            return Engine("reference", reason)
        return Engine("kernel", "LSTMCell's own step: torch.lstm_cell, the kernel of nn.LSTMCell")

    def _read_call(self, input: Any, hx: Any) -> tuple[Tensor, Tensor, Tensor, bool]:
        """The call's tensors, batched, after nn.LSTMCell's checks (and this package's)."""
        owner = type(self).__name__
        x = check_tensor(owner, "input", input)
        if x.dim() not in (1, 2):
            raise ShapeError(
                f"{owner}: expected input of rank 1 ({self.input_size},) or rank 2 "
                f"{shape_str(['batch', self.input_size])}, got rank {x.dim()} with shape "
                f"{shape_str(x.shape)}"
            )
        unbatched = x.dim() == 1
        batch = 1 if unbatched else x.shape[0]
        if hx is None:
            zeros = x.new_zeros(batch, self.hidden_size)
            hx = (zeros, zeros) if not unbatched else (zeros[0], zeros[0])
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"{owner}: expected hx to be a (h, c) tuple, got {type(hx).__name__}")
        wanted = (self.hidden_size,) if unbatched else (batch, self.hidden_size)
        for index, value in enumerate(hx):
            value = check_tensor(owner, f"hx[{index}]", value)
            if tuple(value.shape) != wanted:
                layout = "unbatched" if unbatched else "batched"
                raise ShapeError(
                    f"{owner}: expected hx[{index}] of shape {shape_str(wanted)} for {layout} "
                    f"input of shape {shape_str(x.shape)}, got {shape_str(value.shape)}"
                )
        hidden, state = (part.unsqueeze(0) if unbatched else part for part in hx)
        x = x.unsqueeze(0) if unbatched else x
        check_step_arguments(
            owner,
            x,
            hidden,
            state,
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            parameter=self.weight_ih,
            x_name="input",
        )
        return x, hidden, state, unbatched

    # ------------------------------------------------------------------ torch.nn.LSTMCell
    @classmethod
    def from_torch(cls, module: nn.LSTMCell) -> LSTMCell:
        """The same cell as a ``torch.nn.LSTMCell`` (options, a copy of its state dict).

        Raises
        ------
        TypeError
            If ``module`` is not a ``torch.nn.LSTMCell``.
        """
        if not isinstance(module, nn.LSTMCell):
            raise TypeError(
                f"{cls.__name__}.from_torch: expected a torch.nn.LSTMCell, got "
                f"{type(module).__name__}"
            )
        weight = module.weight_ih
        converted = cls(module.input_size, module.hidden_size, module.bias, weight.device)
        converted.to(weight.dtype).load_state_dict(module.state_dict())
        return converted.train(module.training)

    def to_torch(self) -> nn.LSTMCell:
        """A ``torch.nn.LSTMCell`` with this cell's options and a copy of its state dict."""
        weight = self.weight_ih
        module = nn.LSTMCell(self.input_size, self.hidden_size, self.bias, weight.device)
        module.to(weight.dtype).load_state_dict(self.state_dict())
        return module.train(self.training)
