"""A subclass that overrides only ``forward_cell`` gets layers, directions and lengths.

``toy_cells.CoupledGateLSTM`` is the coupled input-forget gate variant (i = 1 - f), written
the way a user would: override one method of ``lstm.LSTM``. It is checked against the
independent per-sequence reference run on its own equations, in a 2-layer bidirectional
model with lengths: outputs, states and gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from builders import DOUBLE, assert_matches_reference
from lstm import LSTM
from reference import Step, zeros_initial
from toy_cells import CoupledGateLSTM


def coupled_step(model: CoupledGateLSTM) -> Step:
    """One step on 1-D vectors, from the equations of the class's docstring."""

    def step(layer: int, direction: int, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        parts = model.cell_parts(layer, direction)
        size = h.shape[0]
        a = parts["i2h"].weight @ x + parts["i2h"].bias + parts["h2h"].weight @ h
        a = a + parts["h2h"].bias
        f = torch.sigmoid(a[:size])
        o = torch.sigmoid(a[2 * size : 3 * size])
        g = torch.tanh(a[3 * size :])
        c = f * c + (1 - f) * g
        return o * torch.tanh(c), c

    return step


def test_forward_cell_override_gets_layers_directions_and_lengths() -> None:
    model = CoupledGateLSTM(3, 4, num_layers=2, bidirectional=True, dtype=DOUBLE)
    x = torch.randn(4, 6, 3, dtype=DOUBLE)
    lengths = [6, 3, 1, 4]
    assert_matches_reference(model, x, coupled_step(model), zeros_initial(x, 4, (4,)), lengths)
    # And it really is different math from the plain LSTM with the same weights.
    plain = LSTM(3, 4, num_layers=2, bidirectional=True, dtype=DOUBLE)
    plain.load_state_dict(model.state_dict())
    out, _ = model(x, lengths=torch.tensor(lengths))
    assert not torch.allclose(plain(x, lengths=torch.tensor(lengths))[0], out)


def test_forward_cell_override_trains() -> None:
    model = CoupledGateLSTM(3, 4, num_layers=2, bidirectional=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.03)
    x = torch.randn(8, 5, 3)
    target = torch.randn(8, 5, 8).tanh()
    losses = []
    for _ in range(60):
        optimiser.zero_grad()
        out, _ = model(x)
        loss = torch.nn.functional.mse_loss(out, target)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert model.i2h_l1_reverse.weight.grad is not None  # every cell's parameters learn
