r"""The sLSTM of xLSTM (M. Beck et al., *xLSTM: Extended Long Short-Term Memory*,
arXiv:2405.04517, 2024): exponential gating with a normaliser and a stabiliser state."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lstm.checks import check_forward_cell
from lstm.driver import Recurrent
from lstm.engines import FastPath
from lstm.fused import StepRule, Tensors
from lstm.state import takes_original_layout

SLSTMState = tuple[Tensor, Tensor, Tensor]
"""(c, n, m): cell, normaliser and stabiliser states, each (batch, hidden_size)."""


def slstm_pointwise(gates: Tensor, state: SLSTMState) -> tuple[Tensor, SLSTMState]:
    r"""The element-wise part of one sLSTM step, stabilised in log space.

    With pre-activations :math:`\tilde f, \tilde i, \tilde o, \tilde z` (blocks in that
    order) and exponential input and forget gates:

    .. math::

        m_t &= \max(\tilde f + m_{t-1},\ \tilde i) \\
        i' &= \exp(\tilde i - m_t), \qquad f' = \exp(\tilde f + m_{t-1} - m_t) \\
        c_t &= f' \odot c_{t-1} + i' \odot \tanh(\tilde z), \qquad
        n_t = f' \odot n_{t-1} + i' \\
        h_t &= \sigma(\tilde o) \odot c_t / n_t

    :math:`i', f'` are the paper's gates divided by :math:`\exp(m_t)`, which cancels in
    :math:`c_t / n_t`; both are at most 1, so nothing overflows. The stabiliser starts at
    :math:`m_0 = -\infty` (the log of an empty sum): then :math:`i' = 1` at the first step
    and, by induction, :math:`n_t \ge 1` at every step, so :math:`c_t / n_t` never divides
    by zero however saturated the gates are. (Starting from :math:`m_0 = 0` with
    :math:`\tilde f \gg \tilde i` underflows :math:`i'` and gives 0/0.)

    Parameters
    ----------
    gates : Tensor of shape (batch, 4 * hidden_size)
    state : tuple of Tensors (c, n, m), each (batch, hidden_size)

    Returns
    -------
    hidden : Tensor of shape (batch, hidden_size)
    state : tuple (c, n, m)
    """
    cell, normaliser, stabiliser = state
    forget, input_gate, output, candidate = gates.chunk(4, dim=-1)
    new_stabiliser = torch.maximum(forget + stabiliser, input_gate)
    input_gate = torch.exp(input_gate - new_stabiliser)
    forget = torch.exp(forget + stabiliser - new_stabiliser)
    cell = forget * cell + input_gate * torch.tanh(candidate)
    normaliser = forget * normaliser + input_gate
    hidden = torch.sigmoid(output) * cell / normaliser
    return hidden, (cell, normaliser, new_stabiliser)


class SLSTMRule(StepRule):
    r""":func:`slstm_pointwise` for the fused engine, with its backward by hand.

    Forward, with :math:`s = \tilde f + m_{t-1}` and the gates' logarithms
    :math:`\delta_f = s - m_t`, :math:`\delta_i = \tilde i - m_t`:

    .. math::

        m_t &= \max(s, \tilde i), \quad f' = e^{\delta_f}, \quad i' = e^{\delta_i}, \quad
        g = \tanh \tilde z, \quad o = \sigma(\tilde o) \\
        c_t &= f' c_{t-1} + i' g, \quad n_t = f' n_{t-1} + i', \quad
        q = c_t / n_t, \quad h_t = o\, q

    Backward, with incoming gradients :math:`\bar h, \bar c, \bar n, \bar m` of
    :math:`h_t, c_t, n_t, m_t`:

    .. math::

        u &= \bar h\, o / n_t, \quad \bar c' = \bar c + u, \quad \bar n' = \bar n - u\, q,
        \quad \bar a_o = \bar h\, q\, o (1 - o), \quad \bar a_z = \bar c' i' (1 - g^2) \\
        \bar\delta_f &= (\bar c' c_{t-1} + \bar n' n_{t-1})\, f', \quad
        \bar\delta_i = (\bar c' g + \bar n')\, i', \quad
        \bar m' = \bar m - \bar\delta_f - \bar\delta_i \\
        \bar a_f &= \bar m_{t-1} = \bar\delta_f + w\, \bar m', \quad
        \bar a_i = \bar\delta_i + (1 - w)\, \bar m', \quad
        \bar c_{t-1} = \bar c' f', \quad \bar n_{t-1} = \bar n' f'

    :math:`\bar m'` is the gradient of :math:`m_t` from all its uses (the carried state and
    both gates), and :math:`w` is how ``torch.maximum`` splits it: :math:`w = 1` where
    :math:`s > \tilde i`, :math:`0` where :math:`s < \tilde i`, and :math:`1/2` to each side
    on a tie (not rare: forget and input pre-activations of 0 tie at every step after the
    first). Since
    :math:`m_t` is one of :math:`s, \tilde i`, one of :math:`\delta_f, \delta_i` is exactly 0
    and :math:`\delta_f - \delta_i` has the sign of :math:`s - \tilde i`:
    :math:`w = (1 + \operatorname{sign}(\delta_f - \delta_i)) / 2`.

    From the default :math:`m_0 = -\infty`: :math:`s = \delta_f = -\infty`, :math:`f' = 0`
    and :math:`w = 0`, so :math:`\bar a_f = \bar m_0 = 0` at the first step, as autograd
    gives, and every gradient stays finite.

    The forward saves :math:`f', i', g, o, q, \delta_f, \delta_i` of each step and the states
    (which later steps hold anyway), not the pre-activations.
    """

    def forward(
        self, gates: Tensor, state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """One step: ``(hidden, (c, n, m), (f', i', g, o, c_{t-1}, n_{t-1}, q, n, δ_f, δ_i))``."""
        cell, normaliser, stabiliser = state
        width = cell.shape[-1]
        forget_log = gates[:, :width] + stabiliser  # s, then δ_f in place
        input_log = gates[:, width : 2 * width]
        new_stabiliser = torch.maximum(forget_log, input_log)
        forget_log -= new_stabiliser
        input_log = input_log - new_stabiliser
        forget, input_gate = torch.exp(forget_log), torch.exp(input_log)
        output = torch.sigmoid(gates[:, 2 * width : 3 * width])
        candidate = torch.tanh(gates[:, 3 * width :])
        new_cell = torch.addcmul(input_gate * candidate, forget, cell)
        new_normaliser = torch.addcmul(input_gate, forget, normaliser)
        ratio = new_cell / new_normaliser
        saved = (forget, input_gate, candidate, output, cell, normaliser, ratio, new_normaliser)
        return (
            output * ratio,
            (new_cell, new_normaliser, new_stabiliser),
            (*saved, forget_log, input_log),
        )

    def backward(
        self, saved: Tensors, d_hidden: Tensor, d_state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """Gradients of one step (the equations above)."""
        forget, input_gate, candidate, output, cell, normaliser, ratio, new_normaliser = saved[:8]
        forget_log, input_log = saved[8:]
        d_cell, d_normaliser, d_stabiliser = d_state
        width = cell.shape[-1]
        d_gates = d_hidden.new_empty(d_hidden.shape[0], 4 * width)
        scaled = d_hidden * output
        u = scaled / new_normaliser
        d_cell = d_cell + u
        d_normaliser = torch.addcmul(d_normaliser, u, ratio, value=-1)
        scaled *= ratio  # h̄ q
        torch.addcmul(scaled, scaled, output, value=-1, out=d_gates[:, 2 * width : 3 * width])
        d_candidate = d_cell * input_gate  # c̄' i'
        d_input = d_candidate * candidate
        torch.addcmul(d_candidate, d_input, candidate, value=-1, out=d_gates[:, 3 * width :])
        d_input = torch.addcmul(d_input, d_normaliser, input_gate)  # δ̄_i
        d_forget = torch.mul(d_cell, cell).addcmul_(d_normaliser, normaliser).mul_(forget)
        d_stabiliser = d_stabiliser - d_forget - d_input  # m̄'
        share = d_stabiliser * torch.sign(forget_log - input_log)  # (2w - 1) m̄'
        torch.add(d_forget, d_stabiliser + share, alpha=0.5, out=d_gates[:, :width])
        torch.add(d_input, d_stabiliser - share, alpha=0.5, out=d_gates[:, width : 2 * width])
        before = (d_cell * forget, d_normaliser * forget, d_gates[:, :width])
        return d_gates, before, ()

    def reference(self, gates: Tensor, state: Tensors, params: Tensors) -> tuple[Tensor, Tensors]:
        """:func:`slstm_pointwise`."""
        cell, normaliser, stabiliser = state
        hidden, new_state = slstm_pointwise(gates, (cell, normaliser, stabiliser))
        return hidden, new_state


class SLSTM(Recurrent):
    r"""sLSTM (Beck et al. 2024): exponential gates, a normaliser and a stabiliser state.

    See :func:`slstm_pointwise` for the step. ``i2h`` and ``h2h`` have ``4 * hidden_size``
    rows in blocks f, i, o, z. The state is the tuple ``(c, n, m)``; ``forward`` returns it
    stacked per component, each ``(num_layers * num_directions, batch, hidden_size)``.

    Parameters
    ----------
    input_size, hidden_size : int
    **options
        The driver's keyword options.

    Notes
    -----
    This is the sLSTM cell with a full recurrent matrix (one head) and exponential forget
    gate; the paper's block-diagonal multi-head recurrence, its sigmoid-forget option and
    the surrounding xLSTM block (convolution, projections) are not part of it.
    """

    i2h: nn.Linear
    h2h: nn.Linear

    gate_blocks = 4
    fast_path = FastPath("fused", "one autograd node per direction, backward by hand")
    step_rule = SLSTMRule()

    @takes_original_layout
    def forward_cell(
        self, x: Tensor, hidden: Tensor, state: SLSTMState
    ) -> tuple[Tensor, SLSTMState]:
        """One step; see :func:`slstm_pointwise`."""
        check_forward_cell(self, x, hidden, state, parts=3)
        return slstm_pointwise(self.i2h(x) + self.h2h(hidden), state)

    def init_hidden(self, x: Tensor) -> tuple[Tensor, SLSTMState]:
        """Zeros for hidden, c and n; -inf for the stabiliser m; all (batch, hidden_size)."""
        zeros = x.new_zeros(x.shape[0], self.hidden_size)
        return zeros, (zeros.clone(), zeros.clone(), torch.full_like(zeros, -math.inf))
