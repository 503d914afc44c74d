"""The peephole and CIFG cells (``lstm.cells.variants``) against step-by-step references of
their papers' equations, in float64, through two layers, both directions and ragged lengths."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from builders import DOUBLE, assert_matches_reference, build
from lstm import CIFGLSTM, PeepholeLSTM
from reference import Step, zeros_initial

LENGTHS = [5, 2, 4, 1]
sigmoid, tanh = torch.sigmoid, torch.tanh


def affine(part: Any, v: Tensor) -> Tensor:
    """``W v + b`` of one ``nn.Linear``, by hand; no bias term when it has none."""
    return part.weight @ v + (part.bias if part.bias is not None else 0)


def peephole_step(model: PeepholeLSTM) -> Step:
    def step(layer: int, direction: int, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        parts = model.cell_parts(layer, direction)
        size = h.shape[0]
        a = affine(parts["i2h"], x) + affine(parts["h2h"], h)
        p = parts["peephole"]
        f = sigmoid(a[:size] + p[0] * c)
        i = sigmoid(a[size : 2 * size] + p[1] * c)
        c = f * c + i * tanh(a[3 * size :])
        o = sigmoid(a[2 * size : 3 * size] + p[2] * c)
        return o * tanh(c), c

    return step


def cifg_step(model: CIFGLSTM) -> Step:
    def step(layer: int, direction: int, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        parts = model.cell_parts(layer, direction)
        size = h.shape[0]
        a = affine(parts["i2h"], x) + affine(parts["h2h"], h)
        f, o, g = sigmoid(a[:size]), sigmoid(a[size : 2 * size]), tanh(a[2 * size :])
        c = f * c + (1 - f) * g
        return o * tanh(c), c

    return step


STEPS = {"peephole": peephole_step, "cifg": cifg_step}


# Both cells run on the compiled engine by default ("auto"); their fused rules and
# forward_cell, step by step ("reference"), are checked against the equations too.
@pytest.mark.parametrize("name", sorted(STEPS))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("engine", ["auto", "fused", "reference"])
def test_matches_reference_equations(name: str, bias: bool, engine: str) -> None:
    model = build(name, 3, 4, num_layers=2, bidirectional=True, bias=bias)
    model.engine = engine
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    assert model.engine_for(x, LENGTHS).name == ("compiled" if engine == "auto" else engine)
    assert_matches_reference(model, x, STEPS[name](model), zeros_initial(x, 4, (4,)), LENGTHS)


def test_peephole_weights_are_per_cell_and_reinitialised() -> None:
    model = PeepholeLSTM(3, 4, num_layers=2, bidirectional=True)
    names = [name for name, _ in model.named_parameters() if name.startswith("peephole")]
    assert names == ["peephole", "peephole_reverse", "peephole_l1", "peephole_l1_reverse"]
    bound = 1 / math.sqrt(4)
    with torch.no_grad():
        model.peephole.fill_(5.0)
    model.reset_parameters()
    assert model.peephole.abs().max() <= bound


def test_cifg_has_three_gate_blocks() -> None:
    model = CIFGLSTM(3, 4)
    assert model.i2h.weight.shape == (12, 3)
    assert model.h2h.weight.shape == (12, 4)
