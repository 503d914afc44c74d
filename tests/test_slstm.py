"""The sLSTM (``lstm.cells.slstm``): the paper's equations, and the stabiliser that keeps its
exponential gates finite.

The equations are checked against a step-by-step reference without the stabiliser, in
float64, through two layers, both directions and ragged lengths: the stabilised c and n are
the paper's divided by exp(m), so their ratio (and the output) is the same. The stabiliser
is checked with gates saturated far beyond what exp() can represent in float32, over
``STEPS`` steps by default and ``LONG_STEPS`` in the tests marked ``slow``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from builders import DOUBLE, assert_matches_reference, build
from lstm import SLSTM, Recurrent
from reference import Step, zeros_initial

LENGTHS = [5, 2, 4, 1]
STEPS = 2_000
LONG_STEPS = 10_000
BATCH, INPUT, HIDDEN = 2, 4, 8
SATURATING = 1e4


def affine(part: Any, v: Tensor) -> Tensor:
    return part.weight @ v + (part.bias if part.bias is not None else 0)


def slstm_raw_step(model: Recurrent) -> Step:
    """The paper's equations without the stabiliser: exp gates, c and n (no m)."""

    def step(layer: int, direction: int, x: Tensor, h: Tensor, state: Any) -> tuple[Tensor, Any]:
        c, n = state
        parts = model.cell_parts(layer, direction)
        size = h.shape[0]
        a = affine(parts["i2h"], x) + affine(parts["h2h"], h)
        f, i = torch.exp(a[:size]), torch.exp(a[size : 2 * size])
        o, z = torch.sigmoid(a[2 * size : 3 * size]), torch.tanh(a[3 * size :])
        c = f * c + i * z
        n = f * n + i
        return o * c / n, (c, n)

    return step


def ratio(state: tuple[Tensor, ...]) -> tuple[Tensor]:
    """c / n: the same for the stabilised (c, n, m) and the paper's (c, n)."""
    return (state[0] / state[1],)


def test_equals_the_unstabilised_equations() -> None:
    model = build("slstm", 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    initial = zeros_initial(x, 4, (4,), (4,))
    assert_matches_reference(model, x, slstm_raw_step(model), initial, LENGTHS, state_view=ratio)


def test_stabiliser_keeps_saturating_inputs_finite_through_layers() -> None:
    model = SLSTM(3, 8, num_layers=2)
    x = torch.randn(2, 300, 3) * SATURATING
    out, (hidden, (cell, normaliser, stabiliser)) = model(x)
    for tensor in (out, hidden, cell, normaliser, stabiliser):
        assert torch.isfinite(tensor).all()
    assert stabiliser.abs().max() > 80  # exp of it would overflow float32 without the stabiliser


# Biases of the forget and input gates (blocks 0 and 1 of i2h.bias), and the scale of the
# input: each gate saturated open, shut, or both, far beyond what exp() can represent in
# float32 (exp(89) = inf, exp(-104) = 0); the last case saturates through the input instead.
GATE_BIASES = [
    (1e4, -1e4, 1.0),
    (-1e4, 1e4, 1.0),
    (1e4, 1e4, 1.0),
    (-1e4, -1e4, 1.0),
    (200.0, -200.0, 1.0),
    (0.0, 0.0, SATURATING),
]


def unstabilised_first_step(gates: Tensor) -> Tensor:
    """h_1 from the paper's gates without the stabiliser: i = exp(ĩ), n_0 = c_0 = 0."""
    _, input_gate, output, candidate = gates.chunk(4, dim=-1)
    input_gate = torch.exp(input_gate)
    return torch.sigmoid(output) * (input_gate * torch.tanh(candidate)) / input_gate


def run_stabilised(forget_bias: float, input_bias: float, scale: float, steps: int) -> None:
    model = SLSTM(INPUT, HIDDEN).eval()
    with torch.no_grad():
        blocks = model.i2h.bias.view(4, HIDDEN)  # f, i, o, z
        blocks[0], blocks[1] = forget_bias, input_bias
    x = scale * torch.randn(BATCH, steps, INPUT)
    with torch.no_grad():
        gates = model.i2h(x[:, 0]) + model.h2h(torch.zeros(BATCH, HIDDEN))
        # Without the stabiliser the first step already gives inf/inf or 0/0.
        assert not torch.isfinite(unstabilised_first_step(gates)).all()
        out, (hidden, state), (cell, normaliser, stabiliser) = model(x, return_all_states=True)
    for name, tensor in [("out", out), ("hidden", hidden), ("c", cell), ("n", normaliser)]:
        assert torch.isfinite(tensor).all(), f"{name} is not finite"
    assert torch.isfinite(stabiliser).all(), "m is not finite"
    assert all(torch.isfinite(part).all() for part in state)
    assert out.abs().max() <= 1.0  # h = o * c / n with |c| <= n
    # The invariants behind the stabiliser, at every step: n >= 1 and |c| <= n.
    assert normaliser.min() >= 1.0
    assert (cell.abs() <= normaliser).all()


@pytest.mark.parametrize(("forget_bias", "input_bias", "scale"), GATE_BIASES)
def test_stabiliser_keeps_exponential_gates_finite(
    forget_bias: float, input_bias: float, scale: float
) -> None:
    run_stabilised(forget_bias, input_bias, scale, STEPS)


@pytest.mark.slow
@pytest.mark.parametrize(("forget_bias", "input_bias", "scale"), GATE_BIASES)
def test_stabiliser_over_a_very_long_sequence(
    forget_bias: float, input_bias: float, scale: float
) -> None:
    run_stabilised(forget_bias, input_bias, scale, LONG_STEPS)
