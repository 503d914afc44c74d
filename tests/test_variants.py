"""Peephole, CIFG, layer-normalised and sLSTM cells against step-by-step references of their
papers' equations, in float64, through two layers, both directions and ragged lengths."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from builders import DOUBLE, assert_matches_reference, build
from lstm import CIFGLSTM, SLSTM, LayerNormLSTM, PeepholeLSTM, Recurrent
from reference import Step, zeros_initial

LENGTHS = [5, 2, 4, 1]
sigmoid, tanh = torch.sigmoid, torch.tanh


def affine(part: Any, v: Tensor) -> Tensor:
    """``W v + b`` of one ``nn.Linear``, by hand; no bias term when it has none."""
    return part.weight @ v + (part.bias if part.bias is not None else 0)


def peephole_step(model: Recurrent) -> Step:
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


def cifg_step(model: Recurrent) -> Step:
    def step(layer: int, direction: int, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        parts = model.cell_parts(layer, direction)
        size = h.shape[0]
        a = affine(parts["i2h"], x) + affine(parts["h2h"], h)
        f, o, g = sigmoid(a[:size]), sigmoid(a[size : 2 * size]), tanh(a[2 * size :])
        c = f * c + (1 - f) * g
        return o * tanh(c), c

    return step


def layer_norm(v: Tensor, norm: nn.LayerNorm) -> Tensor:
    """Layer normalisation of a 1-D vector, by hand: centre, scale, then gain and shift."""
    centred = v - v.mean()
    scaled = centred / torch.sqrt((centred * centred).mean() + norm.eps)
    return scaled * norm.weight + (norm.bias if norm.bias is not None else 0)


def layernorm_step(model: Recurrent) -> Step:
    def step(layer: int, direction: int, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        parts = model.cell_parts(layer, direction)
        size = h.shape[0]
        a = layer_norm(parts["i2h"].weight @ x, parts["ln_ih"]) + layer_norm(
            parts["h2h"].weight @ h, parts["ln_hh"]
        )
        c = sigmoid(a[:size]) * c + sigmoid(a[size : 2 * size]) * tanh(a[3 * size :])
        return sigmoid(a[2 * size : 3 * size]) * tanh(layer_norm(c, parts["ln_cell"])), c

    return step


def slstm_raw_step(model: Recurrent) -> Step:
    """The paper's equations without the stabiliser: exp gates, c and n (no m)."""

    def step(layer: int, direction: int, x: Tensor, h: Tensor, state: Any) -> tuple[Tensor, Any]:
        c, n = state
        parts = model.cell_parts(layer, direction)
        size = h.shape[0]
        a = affine(parts["i2h"], x) + affine(parts["h2h"], h)
        f, i = torch.exp(a[:size]), torch.exp(a[size : 2 * size])
        o, z = sigmoid(a[2 * size : 3 * size]), tanh(a[3 * size :])
        c = f * c + i * z
        n = f * n + i
        return o * c / n, (c, n)

    return step


STEPS = {"peephole": peephole_step, "cifg": cifg_step, "layernorm": layernorm_step}


@pytest.mark.parametrize("name", sorted(STEPS))
@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference_equations(name: str, bias: bool) -> None:
    model = build(name, 3, 4, num_layers=2, bidirectional=True, bias=bias)
    _randomise(model)
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    assert_matches_reference(model, x, STEPS[name](model), zeros_initial(x, 4, (4,)), LENGTHS)


def test_slstm_equals_the_unstabilised_equations() -> None:
    model = build("slstm", 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    initial = zeros_initial(x, 4, (4,), (4,))

    def ratio(state: tuple[Tensor, ...]) -> tuple[Tensor]:
        # The stabilised c and n are the paper's divided by exp(m); their ratio is the same.
        return (state[0] / state[1],)

    assert_matches_reference(model, x, slstm_raw_step(model), initial, LENGTHS, state_view=ratio)


def test_slstm_stabiliser_keeps_saturating_inputs_finite() -> None:
    model = SLSTM(3, 8, num_layers=2)
    x = torch.randn(2, 300, 3) * 1e4
    out, (hidden, (cell, normaliser, stabiliser)) = model(x)
    for tensor in (out, hidden, cell, normaliser, stabiliser):
        assert torch.isfinite(tensor).all()
    assert stabiliser.abs().max() > 80  # exp of it would overflow float32 without the stabiliser


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


def test_layernorm_bias_flag_drops_the_shifts() -> None:
    model = LayerNormLSTM(3, 4, bias=False)
    assert model.ln_ih.bias is None
    assert model.i2h.bias is None
    assert {name for name, _ in model.named_parameters()} == {
        "i2h.weight",
        "h2h.weight",
        "ln_ih.weight",
        "ln_hh.weight",
        "ln_cell.weight",
    }


def _randomise(model: Recurrent) -> None:
    """Layer norms start at gain 1, shift 0; random values test that they are used right."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("ln_"):
                low, high = (0.5, 1.5) if name.endswith("weight") else (-0.5, 0.5)
                parameter.uniform_(low, high)
