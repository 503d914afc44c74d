r"""The sLSTM of xLSTM (M. Beck et al., *xLSTM: Extended Long Short-Term Memory*,
arXiv:2405.04517, 2024): exponential gating with a normaliser and a stabiliser state."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lstm.checks import check_forward_cell
from lstm.driver import Recurrent
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
