"""Numerical robustness of every registered cell: long sequences, saturated gates, bf16.

Each test checks that outputs and states stay finite and that the hidden output stays within
the bound its equations give: ``|h| <= 1`` (an output gate in (0, 1) times a tanh, or the
sLSTM's ``c / n`` with ``|c| <= n``), ``|h| <= k`` for the Array-LSTM, whose output sums its
``k`` lanes; none for the mLSTM, whose read-out ``C q / max(|n.q|, e^-m)`` is unbounded
(finite is all it promises). The default suite runs sequences of ``STEPS`` steps; the
tests marked ``slow`` run ``LONG_STEPS`` (``python -m pytest -m slow``). The sLSTM's
stabiliser has its own saturation tests in ``test_slstm.py``, the mLSTM's in
``test_mlstm.py``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from builders import LANES, NAMES, UNBOUNDED, build, parts
from lstm import CELLS, ArrayLSTM, Recurrent, StochasticArrayLSTM

STEPS = 2_000
LONG_STEPS = 10_000
BATCH, INPUT, HIDDEN = 2, 4, 8
SATURATING = 1e4


def make(name: str) -> Recurrent:
    return build(name, INPUT, HIDDEN, dtype=torch.float32)


def bound(model: Recurrent) -> float:
    """The largest ``|h|`` the cell's equations allow (inf for :data:`builders.UNBOUNDED`)."""
    if any(type(model) is CELLS[name] for name in UNBOUNDED):
        return math.inf
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
