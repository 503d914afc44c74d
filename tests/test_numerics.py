"""Numerical robustness of every registered cell: long sequences, saturated gates, bf16.

Each test checks that outputs and states stay finite and that the hidden output stays within
the bound its equations give: ``|h| <= 1`` (an output gate in (0, 1) times a tanh, or the
sLSTM's ``c / n`` with ``|c| <= n``), ``|h| <= k`` for the Array-LSTM, whose output sums its
``k`` lanes. The default suite runs sequences of ``STEPS`` steps; the tests marked ``slow``
run ``LONG_STEPS`` (``python -m pytest -m slow``).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from builders import LANES, NAMES, build, parts
from lstm import SLSTM, ArrayLSTM, Recurrent, StochasticArrayLSTM

STEPS = 2_000
LONG_STEPS = 10_000
BATCH, INPUT, HIDDEN = 2, 4, 8
SATURATING = 1e4


def make(name: str) -> Recurrent:
    return build(name, INPUT, HIDDEN, dtype=torch.float32)


def bound(model: Recurrent) -> float:
    """The largest ``|h|`` the cell's equations allow."""
    summed_lanes = isinstance(model, ArrayLSTM) and not isinstance(model, StochasticArrayLSTM)
    return float(LANES) if summed_lanes else 1.0


def assert_finite_and_bounded(
    model: Recurrent, out: Tensor, hidden: Tensor, state: Any, slack: float = 0.0
) -> None:
    for name, tensor in [("out", out), ("hidden", hidden)] + [
        (f"state[{index}]", part) for index, part in enumerate(parts(state))
    ]:
        assert torch.isfinite(tensor).all(), f"{name} is not finite"
    limit = bound(model) * (1 + slack)
    assert out.abs().max() <= limit, f"|h| = {out.abs().max()} > {limit}"


def saturating_input(steps: int) -> Tensor:
    """±1e4 at random: every gate pre-activation is saturated, in either direction."""
    return SATURATING * torch.randn(BATCH, steps, INPUT).sign()


def run_long(name: str, steps: int) -> None:
    model = make(name)
    with torch.no_grad():
        out, (hidden, state) = model(torch.randn(BATCH, steps, INPUT))
    assert out.shape == (BATCH, steps, HIDDEN)
    assert_finite_and_bounded(model, out, hidden, state)


@pytest.mark.parametrize("name", NAMES)
def test_long_sequence_stays_finite(name: str) -> None:
    run_long(name, STEPS)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_very_long_sequence_stays_finite(name: str) -> None:
    run_long(name, LONG_STEPS)


@pytest.mark.parametrize("name", NAMES)
def test_saturating_inputs_give_finite_results_and_gradients(name: str) -> None:
    model = make(name)
    x = saturating_input(STEPS // 4).requires_grad_()
    out, (hidden, state) = model(x, lengths=torch.tensor([STEPS // 4, STEPS // 8]))
    assert_finite_and_bounded(model, out, hidden, state)
    torch.stack([out.sum(), hidden.sum(), *(part.sum() for part in parts(state))]).sum().backward()
    assert x.grad is not None
    grads = [("input", x.grad)] + [(n, p.grad) for n, p in model.named_parameters()]
    for grad_name, grad in grads:
        assert grad is not None, f"{grad_name} got no gradient"
        assert torch.isfinite(grad).all(), f"{grad_name}.grad is not finite"


def run_bf16_autocast(name: str, steps: int) -> None:
    model = make(name)
    x = torch.randn(BATCH, steps, INPUT)
    x[:, ::2] *= SATURATING  # long and saturated, in bf16 matrix products
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, (hidden, state) = model(x)
    # bf16 rounds sigmoid and tanh to 8 bits: allow 1% over the bound.
    assert_finite_and_bounded(model, out.float(), hidden.float(), state, slack=1e-2)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_stays_finite(name: str) -> None:
    run_bf16_autocast(name, STEPS)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_stays_finite_over_a_very_long_sequence(name: str) -> None:
    run_bf16_autocast(name, LONG_STEPS)


# ------------------------------------------------------------------ the sLSTM's stabiliser

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
    assert_finite_and_bounded(model, out, hidden, state)
    for name, tensor in [("c", cell), ("n", normaliser), ("m", stabiliser)]:
        assert torch.isfinite(tensor).all(), f"{name} is not finite"
    # The invariants behind the stabiliser, at every step: n >= 1 and |c| <= n.
    assert normaliser.min() >= 1.0
    assert (cell.abs() <= normaliser).all()


@pytest.mark.parametrize(("forget_bias", "input_bias", "scale"), GATE_BIASES)
def test_slstm_stabiliser_keeps_exponential_gates_finite(
    forget_bias: float, input_bias: float, scale: float
) -> None:
    run_stabilised(forget_bias, input_bias, scale, STEPS)


@pytest.mark.slow
@pytest.mark.parametrize(("forget_bias", "input_bias", "scale"), GATE_BIASES)
def test_slstm_stabiliser_over_a_very_long_sequence(
    forget_bias: float, input_bias: float, scale: float
) -> None:
    run_stabilised(forget_bias, input_bias, scale, LONG_STEPS)
