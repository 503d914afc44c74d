r"""The Array-LSTM family (K. Rocki, *Recurrent Memory Array Structures*, arXiv:1607.03085,
2016): k memory cells ("lanes") per hidden unit.

Row layout of ``i2h`` and ``h2h`` (``4 * hidden_size * k`` rows): grouped by lane, lane ``j``
owning rows ``[4Hj, 4H(j + 1))``, each lane's block laid out f, i, o, g as in
:class:`lstm.LSTM`. This is the original implementation's layout, so its checkpoints load
unchanged, and a client recovers ``k`` as ``i2h.weight.shape[0] // (4 * hidden_size)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lstm.cells.lstm import LSTM, lstm_pointwise
from lstm.checks import check_forward_cell, check_int
from lstm.engines import FastPath
from lstm.parameters import CellPart, Device, DType, linear_maps
from lstm.state import takes_original_layout


def array_lstm_pointwise(gates: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    r"""The element-wise part of one Array-LSTM step.

    For every lane :math:`j = 1..k`, with pre-activations :math:`a^j` laid out f, i, o, g:

    .. math::

        c^j_t = \sigma(a^j_f) \odot c^j_{t-1} + \sigma(a^j_i) \odot \tanh(a^j_g), \qquad
        h_t = \sum_j \sigma(a^j_o) \odot \tanh(c^j_t)

    Parameters
    ----------
    gates : Tensor of shape (batch, k * 4 * hidden_size)
        Lane-major pre-activations ``i2h(x) + h2h(h)``.
    state : Tensor of shape (k, batch, hidden_size)
        The k cell states.

    Returns
    -------
    hidden : Tensor of shape (batch, hidden_size)
    state : Tensor of shape (k, batch, hidden_size)
    """
    lanes = state.shape[0]
    # Sizes spelled out, not -1: an empty batch leaves -1 undetermined.
    per_lane = gates.view(gates.shape[0], lanes, gates.shape[1] // lanes).transpose(
        0, 1
    )  # (k, B, 4H)
    lane_hidden, state = lstm_pointwise(per_lane, state)  # (k, B, H) each
    return lane_hidden.sum(0), state


class ArrayLSTM(LSTM):
    r"""Array-LSTM: an LSTM with ``k`` memory cells per hidden unit (Rocki 2016).

    Each lane :math:`j` has its own gates and cell state; the hidden output sums the lanes:

    .. math::

        a^j_t &= W^j_{ih} x_t + b^j_{ih} + W^j_{hh} h_{t-1} + b^j_{hh} \\
        c^j_t &= \sigma(a^j_{t,f}) \odot c^j_{t-1} + \sigma(a^j_{t,i}) \odot \tanh(a^j_{t,g}) \\
        h_t &= \textstyle\sum_{j=1}^{k} \sigma(a^j_{t,o}) \odot \tanh(c^j_t)

    With ``k = 1`` this is exactly :class:`lstm.LSTM`.

    Parameters
    ----------
    input_size, hidden_size : int
        As for :class:`lstm.LSTM`.
    k : int
        Number of lanes (memory cells per unit), ``>= 1``.
    **options
        The keyword options of :class:`lstm.LSTM` (``num_layers``, ``bias``, ``batch_first``,
        ``dropout``, ``bidirectional``, ``forget_bias`` (set in every lane), ``device``,
        ``dtype``).

    Attributes
    ----------
    k : int
        Number of lanes.
    i2h : nn.Linear
        ``(4 * hidden_size * k, input_size)`` weight, lane-major, each lane f, i, o, g.
    h2h : nn.Linear
        ``(4 * hidden_size * k, hidden_size)`` weight, laid out likewise.

    Notes
    -----
    The state of one cell is ``(k, batch, hidden_size)``; ``forward`` returns the states of
    every layer and direction stacked as ``(num_layers * num_directions * k, batch,
    hidden_size)`` and hidden as ``(num_layers * num_directions, batch, hidden_size)``.
    The input projection is computed for all steps at once (the hoisted engine) unless a
    subclass overrides :meth:`forward_cell`.

    Examples
    --------
    >>> import torch, lstm
    >>> model = lstm.ArrayLSTM(8, 16, k=4)
    >>> model.i2h.weight.shape
    torch.Size([256, 8])
    >>> out, (hidden, state) = model(torch.randn(2, 5, 8))
    >>> out.shape, hidden.shape, state.shape
    (torch.Size([2, 5, 16]), torch.Size([1, 2, 16]), torch.Size([4, 2, 16]))
    """

    fast_path = FastPath("hoisted", "i2h of all steps in one matrix product, then the lanes' steps")
    """This class's own step runs with its input projection hoisted out of the loop."""

    def __init__(self, input_size: int, hidden_size: int, k: int, **options: Any) -> None:
        self.k = check_int(type(self).__name__, "k", k, 1)  # build_cell reads it
        super().__init__(input_size, hidden_size, **options)

    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Device = None, dtype: DType = None
    ) -> dict[str, CellPart]:
        """``i2h``: Linear(input_size, 4Hk) and ``h2h``: Linear(hidden_size, 4Hk)."""
        width = 4 * hidden_size * self.k
        return linear_maps(
            input_size, hidden_size, width, bias=self.bias, device=device, dtype=dtype
        )

    @takes_original_layout
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step: x (batch, input_size), hidden (batch, H), state (k, batch, H)."""
        check_forward_cell(self, x, hidden, state, lead=(self.k,))
        return array_lstm_pointwise(self.i2h(x) + self.h2h(hidden), state)

    def init_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Zeros: hidden (batch, hidden_size), state (k, batch, hidden_size)."""
        batch = x.shape[0]
        return x.new_zeros(batch, self.hidden_size), x.new_zeros(self.k, batch, self.hidden_size)

    def forget_rows(self, rows: Tensor) -> Tensor:
        """The forget-gate entries of every lane: ``(k, hidden_size, ...)`` of a ``(4Hk, ...)``."""
        return rows.view(self.k, 4, self.hidden_size, *rows.shape[1:])[:, 0]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", k={self.k}"


def stochastic_output_pooling(gates: Tensor, state: Tensor, sample: bool) -> tuple[Tensor, Tensor]:
    r"""One Array-LSTM step whose hidden output comes from one lane per unit.

    The lanes' cell states update as in :func:`array_lstm_pointwise`. Then, for every unit,
    a lane :math:`j^*` is chosen from :math:`p_j = \mathrm{softmax}_j(o^j)` over the lanes'
    output gates :math:`o^j = \sigma(a^j_o)`: drawn from it when ``sample`` (training),
    its most likely lane otherwise, and :math:`h_t = o^{j^*} \odot \tanh(c^{j^*}_t)`.

    Parameters
    ----------
    gates : Tensor of shape (batch, k * 4 * hidden_size)
        Lane-major pre-activations, each lane f, i, o, g.
    state : Tensor of shape (k, batch, hidden_size)
    sample : bool
        Draw the lane (True) or take the most likely one (False).

    Returns
    -------
    hidden : Tensor of shape (batch, hidden_size)
    state : Tensor of shape (k, batch, hidden_size)
    """
    lanes, batch, size = state.shape
    per_lane = gates.view(batch, lanes, 4 * size).transpose(0, 1)  # (k, B, 4H)
    forget, input_gate, output = torch.sigmoid(per_lane[..., : 3 * size]).chunk(3, dim=-1)
    state = forget * state + input_gate * torch.tanh(per_lane[..., 3 * size :])
    if sample:
        probabilities = torch.softmax(output.detach(), dim=0)  # (k, B, H), over lanes
        flat = probabilities.permute(1, 2, 0).reshape(batch * size, lanes)  # (B*H, k)
        choice = torch.multinomial(flat, 1).view(1, batch, size)
    else:
        choice = output.argmax(dim=0, keepdim=True)  # softmax keeps the order
    selected_output = output.gather(0, choice).squeeze(0)  # (B, H)
    selected_state = state.gather(0, choice).squeeze(0)
    return selected_output * torch.tanh(selected_state), state


class StochasticArrayLSTM(ArrayLSTM):
    r"""Array-LSTM with stochastic output pooling (Rocki 2016).

    Every lane keeps its own cell state, but the hidden output of each unit comes from a
    single lane, chosen from the softmax of the lanes' output gates: drawn at random in
    training mode, the most likely lane in eval mode. See
    :func:`stochastic_output_pooling`.

    Parameters
    ----------
    input_size, hidden_size, k, **options
        As for :class:`ArrayLSTM`.

    Notes
    -----
    The lane is chosen per unit, as the paper describes. The original implementation summed
    the output gates over all units before the softmax, choosing one lane per sequence
    element for every unit at once, and always took the most likely lane; here eval mode
    takes the most likely lane (per unit) and training mode samples. No gradient flows
    through the choice itself.
    """

    @takes_original_layout
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step: lanes update, one lane per unit gives the output."""
        check_forward_cell(self, x, hidden, state, lead=(self.k,))
        gates = self.i2h(x) + self.h2h(hidden)
        return stochastic_output_pooling(gates, state, sample=self.training)
