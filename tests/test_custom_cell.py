"""A subclass that overrides only ``forward_cell`` gets layers, directions and lengths.

The subclass below is the coupled input-forget gate variant (i = 1 - f), written the way a
user would: override one method of ``lstm.LSTM``. It is checked against an independent
per-sequence reference of its own equations in a 2-layer bidirectional model with lengths.
"""

from __future__ import annotations

import torch
from torch import Tensor

from conftest import DOUBLE
from lstm import LSTM


class CoupledGateLSTM(LSTM):
    """c' = f ⊙ c + (1 - f) ⊙ g; the input block of the gates is left unused."""

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        forget, _, output, candidate = (self.i2h(x) + self.h2h(hidden)).chunk(4, dim=-1)
        forget = torch.sigmoid(forget)
        state = forget * state + (1 - forget) * torch.tanh(candidate)
        return torch.sigmoid(output) * torch.tanh(state), state


def coupled_reference(
    model: CoupledGateLSTM, x: Tensor, lengths: list[int]
) -> tuple[Tensor, Tensor, Tensor]:
    """Sequence by sequence, step by step, on 1-D vectors, from the equations above."""
    size = model.hidden_size
    directions = model.num_directions
    outputs = x.new_zeros(x.shape[0], x.shape[1], directions * size)
    h_n = x.new_zeros(model.num_layers * directions, x.shape[0], size)
    c_n = torch.zeros_like(h_n)
    for b, n in enumerate(lengths):
        layer_input = [x[b, t] for t in range(n)]
        for layer in range(model.num_layers):
            results = []
            for direction in range(directions):
                parts = model.cell_parts(layer, direction)
                w_ih, b_ih = parts["i2h"].weight, parts["i2h"].bias  # type: ignore[union-attr]
                w_hh, b_hh = parts["h2h"].weight, parts["h2h"].bias  # type: ignore[union-attr]
                h = x.new_zeros(size)
                c = x.new_zeros(size)
                out = [h] * n
                for t in reversed(range(n)) if direction else range(n):
                    a = w_ih @ layer_input[t] + b_ih + w_hh @ h + b_hh
                    f, o, g = (
                        torch.sigmoid(a[:size]),
                        torch.sigmoid(a[2 * size : 3 * size]),
                        torch.tanh(a[3 * size :]),
                    )
                    c = f * c + (1 - f) * g
                    h = o * torch.tanh(c)
                    out[t] = h
                results.append(out)
                h_n[layer * directions + direction, b] = h
                c_n[layer * directions + direction, b] = c
            layer_input = [torch.cat([r[t] for r in results]) for t in range(n)]
        for t in range(n):
            outputs[b, t] = layer_input[t]
    return outputs, h_n, c_n


def test_forward_cell_override_gets_layers_directions_and_lengths() -> None:
    model = CoupledGateLSTM(3, 4, num_layers=2, bidirectional=True, dtype=DOUBLE)
    x = torch.randn(4, 6, 3, dtype=DOUBLE)
    lengths = [6, 3, 1, 4]
    out, (hidden, state) = model(x, lengths=torch.tensor(lengths))
    ref_out, ref_hidden, ref_state = coupled_reference(model, x, lengths)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(hidden, ref_hidden, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=1e-12)
    # And it really is different math from the plain LSTM with the same weights.
    plain = LSTM(3, 4, num_layers=2, bidirectional=True, dtype=DOUBLE)
    plain.load_state_dict(model.state_dict())
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
