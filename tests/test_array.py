"""The Array-LSTM family against a step-by-step reference of Rocki's equations."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import Tensor

from builders import DOUBLE, assert_matches_reference
from lstm import LSTM, ArrayLSTM, StochasticArrayLSTM, create, stochastic_output_pooling
from reference import Step, zeros_initial

K = 3


def array_step(model: ArrayLSTM) -> Step:
    """One step of one cell, lane by lane, on 1-D vectors; the state is the lanes' (k, H).

    Lane j of a cell uses rows [4Hj, 4H(j+1)) of i2h and h2h, blocks f, i, o, g;
    c^j = f^j c^j + i^j g^j and h = sum_j o^j tanh(c^j).
    """

    def step(layer: int, direction: int, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        parts = model.cell_parts(layer, direction)
        i2h, h2h = parts["i2h"], parts["h2h"]
        size = h.shape[0]
        a = i2h.weight @ x + i2h.bias + h2h.weight @ h + h2h.bias
        new_h, lanes = x.new_zeros(size), []
        for j in range(c.shape[0]):
            block = a[4 * size * j : 4 * size * (j + 1)]
            f = torch.sigmoid(block[:size])
            i = torch.sigmoid(block[size : 2 * size])
            o = torch.sigmoid(block[2 * size : 3 * size])
            g = torch.tanh(block[3 * size :])
            lanes.append(f * c[j] + i * g)
            new_h = new_h + o * torch.tanh(lanes[j])
        return new_h, torch.stack(lanes)

    return step


@pytest.mark.parametrize("engine", ["auto", "reference"])
@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True)])
def test_matches_reference_equations(num_layers: int, bidirectional: bool, engine: str) -> None:
    model = ArrayLSTM(3, 4, K, num_layers=num_layers, bidirectional=bidirectional, dtype=DOUBLE)
    model.engine = engine
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    initial = zeros_initial(x, 4, (K, 4))
    assert_matches_reference(model, x, array_step(model), initial, [5, 2, 4, 1])


def test_one_lane_is_the_lstm() -> None:
    array = ArrayLSTM(3, 4, 1, num_layers=2, bidirectional=True, dtype=DOUBLE)
    plain = LSTM(3, 4, num_layers=2, bidirectional=True, dtype=DOUBLE)
    plain.load_state_dict(array.state_dict())
    x = torch.randn(2, 6, 3, dtype=DOUBLE)
    torch.testing.assert_close(array(x), plain(x), rtol=0, atol=1e-12)


def test_original_checkpoint_loads_and_k_is_recoverable() -> None:
    hidden_size = 4
    checkpoint = {
        "i2h.weight": torch.randn(4 * hidden_size * K, 3, dtype=DOUBLE),
        "i2h.bias": torch.randn(4 * hidden_size * K, dtype=DOUBLE),
        "h2h.weight": torch.randn(4 * hidden_size * K, hidden_size, dtype=DOUBLE),
        "h2h.bias": torch.randn(4 * hidden_size * K, dtype=DOUBLE),
    }
    k = checkpoint["i2h.weight"].shape[0] // (4 * hidden_size)  # as the original's clients do
    model = ArrayLSTM(3, hidden_size, k, dtype=DOUBLE)
    model.load_state_dict(checkpoint, strict=True)
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    _, (hidden, state) = model(x)
    assert hidden.shape == (1, 2, hidden_size)
    assert state.shape == (K, 2, hidden_size)
    initial = zeros_initial(x, hidden_size, (K, hidden_size))
    assert_matches_reference(model, x, array_step(model), initial)


def test_input_projection_is_hoisted_unless_forward_cell_is_overridden(
    linear_calls: Counter[int],
) -> None:
    calls = linear_calls
    model = ArrayLSTM(3, 4, K)
    model(torch.randn(2, 7, 3))
    assert (calls[id(model.i2h)], calls[id(model.h2h)]) == (1, 7)

    class Doubled(ArrayLSTM):
        def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
            hidden, state = super().forward_cell(x, hidden, state)
            return 2 * hidden, state

    calls.clear()
    custom = Doubled(3, 4, K)
    custom(torch.randn(2, 7, 3))
    assert calls[id(custom.i2h)] == 7


def test_forget_bias_is_set_in_every_lane() -> None:
    model = ArrayLSTM(3, 4, K, forget_bias=1.0)
    blocks = model.i2h.bias.detach().view(K, 4, 4)
    assert torch.equal(blocks[:, 0], torch.ones(K, 4))
    assert torch.equal(model.h2h.bias.detach().view(K, 4, 4)[:, 0], torch.zeros(K, 4))


def test_create_passes_k_to_lane_cells_only() -> None:
    model = create("array", 3, 4, k=5)
    assert isinstance(model, ArrayLSTM)
    assert model.k == 5
    with pytest.raises(ValueError, match=r"^cell 'lstm' has no lanes; expected k=None, got k=2$"):
        create("lstm", 3, 4, k=2)


@pytest.mark.parametrize(
    ("k", "error", "pattern"),
    [
        (0, ValueError, r"^ArrayLSTM: expected k >= 1, got 0$"),
        (-2, ValueError, r"^ArrayLSTM: expected k >= 1, got -2$"),
        (2.0, TypeError, r"^ArrayLSTM: expected k to be an int, got float 2.0$"),
        ("4", TypeError, r"^ArrayLSTM: expected k to be an int, got str '4'$"),
    ],
)
def test_bad_k(k: object, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        ArrayLSTM(3, 4, k)  # type: ignore[arg-type]


def test_wrong_state_shape_names_the_lanes() -> None:
    model = ArrayLSTM(3, 4, K)
    hidden = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match=r"expected state of shape \(3, 2, 4\) .*got \(1, 2, 4\)"):
        model(torch.randn(2, 5, 3), (hidden, torch.zeros(1, 2, 4)))


def test_not_convertible_to_torch() -> None:
    with pytest.raises(
        TypeError, match="ArrayLSTM which overrides build_cell, forward_cell, init_hidden"
    ):
        ArrayLSTM(3, 4, K).to_torch()


# ------------------------------------------------------------------ stochastic output pooling


def _lane_values(gates: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """From the equations: every lane's output gate, new cell state and candidate output."""
    lanes, batch, size = state.shape
    blocks = gates.view(batch, lanes, 4, size).transpose(0, 1)  # (k, B, 4, H)
    f, i, o = (torch.sigmoid(blocks[:, :, n]) for n in range(3))
    c = f * state + i * torch.tanh(blocks[:, :, 3])
    return o, c, o * torch.tanh(c)


def test_stochastic_pooling_in_eval_takes_each_units_likeliest_lane() -> None:
    model = StochasticArrayLSTM(3, 4, K, num_layers=2, bidirectional=True, dtype=DOUBLE).eval()
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    out, (hidden, state) = model(x)
    # Step by step by hand: at every step, per unit, the lane with the largest output gate.
    plain = ArrayLSTM(3, 4, K, num_layers=2, bidirectional=True, dtype=DOUBLE)
    plain.load_state_dict(model.state_dict())
    steps = 0

    def by_hand(self: ArrayLSTM, x_t: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        nonlocal steps
        steps += 1
        o, new_c, candidates = _lane_values(self.i2h(x_t) + self.h2h(h), c)
        best = o.argmax(dim=0)  # (B, H)
        chosen = torch.stack(
            [
                candidates[best[b, u], b, u]
                for b in range(best.shape[0])
                for u in range(best.shape[1])
            ]
        ).view(best.shape)
        return chosen, new_c

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ArrayLSTM, "forward_cell", by_hand)
        plain.engine = "reference"
        want = plain(x)
    assert steps == 2 * 2 * 5
    torch.testing.assert_close((out, (hidden, state)), want, rtol=0, atol=1e-12)


def test_stochastic_pooling_draws_lanes_from_the_softmax_of_output_gates() -> None:
    torch.manual_seed(0)
    lanes, size, draws = 3, 4, 20000
    gates = torch.randn(1, lanes * 4 * size, dtype=DOUBLE).expand(draws, -1)
    state = torch.randn(lanes, 1, size, dtype=DOUBLE).expand(-1, draws, -1)
    hidden, new_state = stochastic_output_pooling(gates, state, sample=True)
    o, c, candidates = _lane_values(gates[:1], state[:, :1])
    torch.testing.assert_close(new_state[:, :1], c, rtol=0, atol=1e-12)  # lanes all update
    # Each unit's output is one lane's candidate; count which.
    matches = (hidden.unsqueeze(0) - candidates).abs() < 1e-12  # (k, draws, H)
    assert torch.equal(matches.sum(0), torch.ones(draws, size, dtype=torch.long))
    frequencies = matches.double().mean(dim=1)  # (k, H)
    expected = torch.softmax(o[:, 0], dim=0)  # (k, H)
    torch.testing.assert_close(frequencies, expected, rtol=0, atol=0.02)


def test_stochastic_pooling_trains() -> None:
    model = StochasticArrayLSTM(3, 4, K).train()
    out, _ = model(torch.randn(2, 5, 3))
    out.sum().backward()
    assert model.i2h.weight.grad is not None
    assert model.i2h.weight.grad.abs().sum() > 0
