"""The layer-normalised LSTM (``lstm.cells.layernorm``) against a step-by-step reference of
its equations, in float64, through two layers, both directions and ragged lengths."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from builders import DOUBLE, assert_matches_reference, build
from lstm import LayerNormLSTM, Recurrent
from reference import Step, zeros_initial

LENGTHS = [5, 2, 4, 1]
sigmoid, tanh = torch.sigmoid, torch.tanh


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


def randomise(model: Recurrent) -> None:
    """Layer norms start at gain 1, shift 0; random values test that they are used right."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("ln_"):
                low, high = (0.5, 1.5) if name.endswith("weight") else (-0.5, 0.5)
                parameter.uniform_(low, high)


@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference_equations(bias: bool) -> None:
    model = build("layernorm", 3, 4, num_layers=2, bidirectional=True, bias=bias)
    randomise(model)
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    assert_matches_reference(model, x, layernorm_step(model), zeros_initial(x, 4, (4,)), LENGTHS)


def test_bias_flag_drops_the_shifts() -> None:
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
