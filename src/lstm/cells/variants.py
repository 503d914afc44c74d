r"""Gate variants of the LSTM (the search space of Greff et al. 2017): peephole connections
(Gers & Schmidhuber 2000) and the coupled input-forget gate."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lstm.cells.lstm import LSTM
from lstm.checks import check_forward_cell
from lstm.driver import Recurrent
from lstm.engines import FastPath
from lstm.fused import StepRule, Tensors
from lstm.parameters import CellPart, Device, DType
from lstm.state import takes_original_layout


def peephole_pointwise(gates: Tensor, state: Tensor, peephole: Tensor) -> tuple[Tensor, Tensor]:
    r"""The element-wise part of one peephole-LSTM step.

    .. math::

        f &= \sigma(a_f + p_f \odot c_{t-1}), \quad i = \sigma(a_i + p_i \odot c_{t-1}),
        \quad g = \tanh(a_g) \\
        c_t &= f \odot c_{t-1} + i \odot g, \quad
        o = \sigma(a_o + p_o \odot c_t), \quad h_t = o \odot \tanh(c_t)

    Parameters
    ----------
    gates : Tensor of shape (batch, 4 * hidden_size)
        Pre-activations, blocks f, i, o, g.
    state : Tensor of shape (batch, hidden_size)
    peephole : Tensor of shape (3, hidden_size)
        Diagonal peephole weights :math:`p_f, p_i, p_o`.

    Returns
    -------
    hidden, state : Tensor of shape (batch, hidden_size)
    """
    forget, input_gate, output, candidate = gates.chunk(4, dim=-1)
    forget = torch.sigmoid(forget + peephole[0] * state)
    input_gate = torch.sigmoid(input_gate + peephole[1] * state)
    state = forget * state + input_gate * torch.tanh(candidate)
    hidden = torch.sigmoid(output + peephole[2] * state) * torch.tanh(state)
    return hidden, state


class PeepholeRule(StepRule):
    r""":func:`peephole_pointwise` for the fused engine, with its backward by hand.

    With :math:`f, i, o` the sigmoids, :math:`g = \tanh(a_g)`, :math:`\tau = \tanh(c_t)` and
    incoming gradients :math:`\bar h, \bar c` of :math:`h_t, c_t`: the output gate reads
    :math:`c_t`, so the gradient of :math:`c_t` gains a term through :math:`a_o + p_o c_t`;
    the forget and input gates read :math:`c_{t-1}`, so its gradient gains two.

    .. math::

        \bar a_o &= \bar h \odot \tau \odot o (1 - o), \quad
        \bar c' = \bar c + \bar h \odot o \odot (1 - \tau^2) + \bar a_o \odot p_o \\
        \bar a_f &= \bar c' \odot c_{t-1} \odot f (1 - f), \quad
        \bar a_i = \bar c' \odot g \odot i (1 - i), \quad
        \bar a_g = \bar c' \odot i \odot (1 - g^2) \\
        \bar c_{t-1} &= \bar c' \odot f + \bar a_f \odot p_f + \bar a_i \odot p_i \\
        \bar p_f &= \textstyle\sum_b \bar a_f \odot c_{t-1}, \quad
        \bar p_i = \textstyle\sum_b \bar a_i \odot c_{t-1}, \quad
        \bar p_o = \textstyle\sum_b \bar a_o \odot c_t

    (sums over the batch: :math:`\bar p` has the peephole's shape ``(3, hidden_size)``).
    """

    def params(self, cell: Recurrent) -> Tensors:
        """``(cell.peephole,)``: the diagonal weights :math:`p_f, p_i, p_o`, (3, H)."""
        peephole = cell.peephole
        assert isinstance(peephole, Tensor)
        return (peephole,)

    def forward(
        self, gates: Tensor, state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """One step: ``(hidden, (c_t,), (f and i, f, i, o, g, c_{t-1}, c_t, tanh c_t))``."""
        (cell_state,), (peephole,) = state, params
        batch, width = cell_state.shape
        blocks = gates.reshape(batch, 4, width)  # f, i, o, g
        # f and i in one sigmoid over (B, 2, H): a + p * c_{t-1}, p broadcast over the batch.
        forget_input = torch.sigmoid(
            torch.addcmul(blocks[:, :2], peephole[:2], cell_state.unsqueeze(1))
        )
        forget, input_gate = forget_input.unbind(1)
        candidate = torch.tanh(blocks[:, 3])
        new_state = torch.addcmul(forget * cell_state, input_gate, candidate)
        output = torch.sigmoid(torch.addcmul(blocks[:, 2], peephole[2], new_state))
        squashed = torch.tanh(new_state)
        saved = forget_input, forget, input_gate, output, candidate, cell_state, new_state, squashed
        return output * squashed, (new_state,), saved

    def backward(
        self, saved: Tensors, d_hidden: Tensor, d_state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """Gradients of one step (the equations above)."""
        forget_input, forget, input_gate, output, candidate, cell_state, new_state, squashed = saved
        (peephole,) = params
        batch, width = cell_state.shape
        d_gates = d_hidden.new_empty(batch, 4, width)  # f, i, o, g
        d_forget_input, d_output, d_candidate = d_gates[:, :2], d_gates[:, 2], d_gates[:, 3]
        one = d_hidden.new_ones(())
        # s (1 - s) as addcmul(s, s, s, value=-1), 1 - t^2 as addcmul(1, t, t, value=-1).
        torch.mul(
            d_hidden * squashed, torch.addcmul(output, output, output, value=-1), out=d_output
        )
        d_cell = torch.addcmul(
            d_state[0], d_hidden * output, torch.addcmul(one, squashed, squashed, value=-1)
        ).addcmul_(d_output, peephole[2])
        torch.mul(  # f and i at once: d_cell * (c_{t-1}, g) * s (1 - s) over (B, 2, H)
            d_cell.unsqueeze(1) * torch.stack((cell_state, candidate), dim=1),
            torch.addcmul(forget_input, forget_input, forget_input, value=-1),
            out=d_forget_input,
        )
        torch.mul(
            d_cell * input_gate, torch.addcmul(one, candidate, candidate, value=-1), out=d_candidate
        )
        d_before = torch.addcmul((d_forget_input * peephole[:2]).sum(dim=1), d_cell, forget)
        # Each gate's pre-activation times the state its peephole reads, summed over the batch.
        reads = torch.stack((cell_state, cell_state, new_state), dim=1)  # (B, 3, H)
        d_peephole = (d_gates[:, :3] * reads).sum(dim=0)
        return d_gates.view(batch, 4 * width), (d_before,), (d_peephole,)

    def reference(self, gates: Tensor, state: Tensors, params: Tensors) -> tuple[Tensor, Tensors]:
        """:func:`peephole_pointwise`."""
        hidden, new_state = peephole_pointwise(gates, state[0], params[0])
        return hidden, (new_state,)


class PeepholeLSTM(LSTM):
    r"""LSTM whose gates also see the cell state (Gers & Schmidhuber 2000; pytorch#630).

    The forget and input gates read :math:`c_{t-1}`, the output gate reads :math:`c_t`,
    each through a diagonal (element-wise) weight; see :func:`peephole_pointwise`.

    Parameters
    ----------
    input_size, hidden_size : int
    **options
        The keyword options of :class:`lstm.LSTM`.

    Attributes
    ----------
    i2h, h2h : nn.Linear
        As in :class:`lstm.LSTM` (blocks f, i, o, g).
    peephole : nn.Parameter of shape (3, hidden_size)
        :math:`p_f, p_i, p_o`, uniform in ±1/sqrt(hidden_size) (suffixed per cell like the
        linear maps: ``peephole_reverse``, ``peephole_l1``, ...).

    Notes
    -----
    F. A. Gers and J. Schmidhuber, *Recurrent nets that time and count*, IJCNN 2000.
    """

    peephole: nn.Parameter
    fast_path = FastPath("fused", "one autograd node per direction, backward by hand")
    step_rule = PeepholeRule()

    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Device = None, dtype: DType = None
    ) -> dict[str, CellPart]:
        """``i2h`` and ``h2h`` as in :class:`lstm.LSTM`, and ``peephole`` (3, hidden_size)."""
        parts = super().build_cell(input_size, hidden_size, device=device, dtype=dtype)
        peephole = torch.empty(3, hidden_size, device=device, dtype=dtype)
        bound = 1 / math.sqrt(hidden_size)
        parts["peephole"] = nn.Parameter(peephole.uniform_(-bound, bound))
        return parts

    @takes_original_layout
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step; see :func:`peephole_pointwise`."""
        check_forward_cell(self, x, hidden, state)
        return peephole_pointwise(self.i2h(x) + self.h2h(hidden), state, self.peephole)

    def reset_parameters(self) -> None:
        """``nn.Linear`` defaults, ``forget_bias``, and peepholes uniform in ±1/sqrt(H)."""
        super().reset_parameters()
        bound = 1 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for layer, direction in self.cell_indices():
                peephole = self.cell_parts(layer, direction)["peephole"]
                assert isinstance(peephole, nn.Parameter)
                peephole.uniform_(-bound, bound)


def cifg_pointwise(gates: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    r"""The element-wise part of one coupled input-forget gate step.

    .. math::

        f = \sigma(a_f), \quad c_t = f \odot c_{t-1} + (1 - f) \odot \tanh(a_g), \quad
        h_t = \sigma(a_o) \odot \tanh(c_t)

    Parameters
    ----------
    gates : Tensor of shape (batch, 3 * hidden_size)
        Pre-activations, blocks f, o, g.
    state : Tensor of shape (batch, hidden_size)

    Returns
    -------
    hidden, state : Tensor of shape (batch, hidden_size)
    """
    forget, output, candidate = gates.chunk(3, dim=-1)
    forget = torch.sigmoid(forget)
    state = forget * state + (1 - forget) * torch.tanh(candidate)
    return torch.sigmoid(output) * torch.tanh(state), state


class CIFGRule(StepRule):
    r""":func:`cifg_pointwise` for the fused engine, with its backward by hand.

    With :math:`f, o` the sigmoids, :math:`g = \tanh(a_g)`, :math:`\tau = \tanh(c_t)` and
    incoming gradients :math:`\bar h, \bar c` of :math:`h_t, c_t`:

    .. math::

        \bar c' &= \bar c + \bar h \odot o \odot (1 - \tau^2), \quad
        \bar c_{t-1} = \bar c' \odot f \\
        \bar a_f &= \bar c' \odot (c_{t-1} - g) \odot f (1 - f), \quad
        \bar a_o = \bar h \odot \tau \odot o (1 - o), \quad
        \bar a_g = \bar c' \odot (1 - f) \odot (1 - g^2)
    """

    def forward(
        self, gates: Tensor, state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """One step: ``(hidden, (c_t,), (σ(f, o), g, c_{t-1} - g, tanh c_t))``."""
        (cell_state,) = state
        width = cell_state.shape[-1]
        pre_forget_output, pre_candidate = gates.split_with_sizes((2 * width, width), dim=1)
        forget_output = torch.sigmoid(pre_forget_output)  # (B, 2H): f, o
        forget, output = forget_output.chunk(2, dim=1)
        candidate = torch.tanh(pre_candidate)
        carried = cell_state - candidate
        new_state = torch.addcmul(candidate, forget, carried)  # f c + (1 - f) g
        squashed = torch.tanh(new_state)
        saved = (forget_output, candidate, carried, squashed)
        return output * squashed, (new_state,), saved

    def backward(
        self, saved: Tensors, d_hidden: Tensor, d_state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """Gradients of one step (the equations above), in few operations."""
        forget_output, candidate, carried, squashed = saved
        width = candidate.shape[-1]
        forget, output = forget_output.chunk(2, dim=1)
        one = squashed.new_ones(())
        d_cell = torch.addcmul(
            d_state[0], d_hidden * output, torch.addcmul(one, squashed, squashed, value=-1)
        )
        d_gates = d_hidden.new_empty(d_hidden.shape[0], 3 * width)
        d_forget_output, d_candidate = d_gates.split_with_sizes((2 * width, width), dim=1)
        # the sigmoids' outer gradients side by side, then their derivative s (1 - s) at once
        torch.cat((d_cell * carried, d_hidden * squashed), dim=1, out=d_forget_output)
        d_forget_output.mul_(forget_output).mul_(1 - forget_output)
        not_forget = 1 - forget
        torch.mul(d_cell * not_forget, torch.addcmul(one, candidate, candidate, value=-1),
                  out=d_candidate)  # fmt: skip
        return d_gates, (d_cell * forget,), ()

    def reference(self, gates: Tensor, state: Tensors, params: Tensors) -> tuple[Tensor, Tensors]:
        """:func:`cifg_pointwise`."""
        hidden, new_state = cifg_pointwise(gates, state[0])
        return hidden, (new_state,)


class CIFGLSTM(Recurrent):
    r"""Coupled input-forget gate LSTM: the input gate is :math:`1 - f` (Greff et al. 2017).

    One gate fewer than the LSTM: ``i2h`` and ``h2h`` have ``3 * hidden_size`` rows in
    blocks f, o, g. See :func:`cifg_pointwise` for the equations.

    Parameters
    ----------
    input_size, hidden_size : int
    **options
        The driver's keyword options (:class:`lstm.driver.Recurrent`).

    Attributes
    ----------
    i2h : nn.Linear
        ``(3 * hidden_size, input_size)`` weight, blocks f, o, g.
    h2h : nn.Linear
        ``(3 * hidden_size, hidden_size)`` weight, blocks f, o, g.

    Notes
    -----
    K. Greff, R. K. Srivastava, J. Koutník, B. R. Steunebrink and J. Schmidhuber,
    *LSTM: A Search Space Odyssey*, IEEE TNNLS 28(10), 2017.
    """

    i2h: nn.Linear
    h2h: nn.Linear
    gate_blocks = 3
    fast_path = FastPath("fused", "one autograd node per direction, backward by hand")
    step_rule = CIFGRule()

    @takes_original_layout
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step; see :func:`cifg_pointwise`."""
        check_forward_cell(self, x, hidden, state)
        return cifg_pointwise(self.i2h(x) + self.h2h(hidden), state)
