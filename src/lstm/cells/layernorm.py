r"""Layer-normalised LSTM (J. L. Ba, J. R. Kiros and G. E. Hinton, *Layer Normalization*,
arXiv:1607.06450, 2016; pytorch#6760)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lstm.checks import check_forward_cell
from lstm.driver import Recurrent
from lstm.parameters import CellPart, Device, DType, linear_maps
from lstm.state import takes_original_layout


class LayerNormLSTM(Recurrent):
    r"""LSTM with layer normalisation of the recurrent and input projections and the cell.

    .. math::

        a_t &= \mathrm{LN}_{ih}(W_{ih} x_t) + \mathrm{LN}_{hh}(W_{hh} h_{t-1}) \\
        c_t &= \sigma(a_{t,f}) \odot c_{t-1} + \sigma(a_{t,i}) \odot \tanh(a_{t,g}) \\
        h_t &= \sigma(a_{t,o}) \odot \tanh(\mathrm{LN}_{c}(c_t))

    Each :math:`\mathrm{LN}` normalises over its last dimension (all four gate blocks
    together for :math:`a_t`, as in the paper) and has its own gain and shift; the paper's
    bias :math:`b` is the sum of the two shifts, so the linear maps have no bias. The cell
    state carried to the next step is the un-normalised :math:`c_t`.

    Parameters
    ----------
    input_size, hidden_size : int
    **options
        The driver's keyword options; ``bias=False`` drops the normalisations' shifts.

    Attributes
    ----------
    i2h : nn.Linear
        ``(4 * hidden_size, input_size)``, no bias, blocks f, i, o, g.
    h2h : nn.Linear
        ``(4 * hidden_size, hidden_size)``, no bias.
    ln_ih, ln_hh : nn.LayerNorm
        Over ``4 * hidden_size`` features; gain 1, shift 0 at initialisation.
    ln_cell : nn.LayerNorm
        Over ``hidden_size`` features.
    """

    i2h: nn.Linear
    h2h: nn.Linear
    ln_ih: nn.LayerNorm
    ln_hh: nn.LayerNorm
    ln_cell: nn.LayerNorm

    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Device = None, dtype: DType = None
    ) -> dict[str, CellPart]:
        """Bias-free ``i2h``, ``h2h`` and the three layer norms."""
        width = 4 * hidden_size

        def norm(features: int) -> nn.LayerNorm:
            return nn.LayerNorm(features, bias=self.bias, device=device, dtype=dtype)

        return {
            **linear_maps(input_size, hidden_size, width, bias=False, device=device, dtype=dtype),
            "ln_ih": norm(width),
            "ln_hh": norm(width),
            "ln_cell": norm(hidden_size),
        }

    @takes_original_layout
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step: x (batch, input_size), hidden and state (batch, hidden_size)."""
        check_forward_cell(self, x, hidden, state)
        gates = self.ln_ih(self.i2h(x)) + self.ln_hh(self.h2h(hidden))  # (B, 4H)
        forget, input_gate, output, candidate = gates.chunk(4, dim=-1)
        state = torch.sigmoid(forget) * state + torch.sigmoid(input_gate) * torch.tanh(candidate)
        hidden = torch.sigmoid(output) * torch.tanh(self.ln_cell(state))
        return hidden, state
