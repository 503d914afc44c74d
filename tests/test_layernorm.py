"""The layer-normalised LSTM (``lstm.cells.layernorm``) against a step-by-step reference of
its equations, in float64, through two layers, both directions and ragged lengths, on the
fused engine and the reference path; and what the generic fused tests (test_fused.py) do not
reach: random gains and shifts, layer norms with and without shifts mixed, and the layer
norms the fused engine cannot read, which send the model to the step-by-step engines."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from builders import DOUBLE, assert_matches_reference, build, close, gradients, results
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


@pytest.mark.parametrize("engine", ["auto", "fused", "reference"])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference_equations(bias: bool, engine: str) -> None:
    model = build("layernorm", 3, 4, num_layers=2, bidirectional=True, bias=bias)
    model.engine = engine
    randomise(model)
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    assert model.engine_for(x, LENGTHS).name == ("compiled" if engine == "auto" else engine)
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


def assert_engines_agree(model: Recurrent, engine: str, setting: str = "auto") -> None:
    """``model``, set to ``setting``, runs ``engine`` and equals its own reference path:
    outputs, final state and the gradients of the input, the initial state and every
    parameter, ragged, in float64."""
    torch.manual_seed(0)
    randomise(model)
    x = torch.randn(4, 5, model.input_size, dtype=DOUBLE)
    lengths = torch.tensor(LENGTHS)
    cells = model.num_layers * model.num_directions
    initial = [torch.randn(cells, 4, model.hidden_size, dtype=DOUBLE) for _ in range(2)]
    model.engine = setting
    assert model.engine_for(x, lengths).name == engine
    found = []
    for run in (setting, "reference"):
        model.engine = run
        inputs = [t.clone().requires_grad_() for t in (x, *initial)]
        got = results(*model(inputs[0], (inputs[1], inputs[2]), lengths=lengths))
        found.append((got, gradients(got, [*inputs, *model.parameters()])))
    close(found[0][0], found[1][0], atol=1e-12)
    close(found[0][1], found[1][1], atol=1e-10)


def test_layer_norms_with_and_without_shifts_mixed_stay_fused() -> None:
    """The rule reads ``ln_cell``'s shift only where it has one, and folds ``ln_hh``'s into
    the input projection only where it has one: every combination in one model."""
    model = build("layernorm", 3, 4, num_layers=2, bidirectional=True)
    model.ln_hh_reverse = nn.LayerNorm(16, bias=False, dtype=DOUBLE)
    model.ln_cell_l1 = nn.LayerNorm(4, bias=False, dtype=DOUBLE)
    model.ln_ih_l1_reverse = nn.LayerNorm(16, bias=False, dtype=DOUBLE)
    assert_engines_agree(model, "fused", "fused")
    assert_engines_agree(model, "compiled")


class ShiftedNorm(nn.LayerNorm):
    """A layer norm whose forward the fused engine would not see (it reads the tensors)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + 0.25


def _swap(name: str, part: nn.Module) -> Recurrent:
    model = build("layernorm", 3, 4, num_layers=2, bidirectional=True)
    setattr(model, name, part.to(DOUBLE))
    return model


def _set_eps(name: str, eps: float) -> Recurrent:
    model = build("layernorm", 3, 4, num_layers=2, bidirectional=True)
    getattr(model, name).eps = eps
    return model


FALLBACKS = {
    "subclass": (
        lambda: _swap("ln_cell_l1_reverse", ShiftedNorm(4)),
        "ln_cell_l1_reverse is a ShiftedNorm, not a plain nn.LayerNorm",
    ),
    "another norm": (
        lambda: _swap("ln_hh", nn.RMSNorm(16)),
        "ln_hh is a RMSNorm, not a plain nn.LayerNorm",
    ),
    "input norm removed": (
        lambda: _swap("ln_ih_l1", nn.Identity()),
        "ln_ih_l1 is a Identity, not a plain nn.LayerNorm",
    ),
    "no gain": (
        lambda: _swap("ln_hh_reverse", nn.LayerNorm(16, elementwise_affine=False)),
        "ln_hh_reverse has no gain (elementwise_affine=False)",
    ),
    "another eps": (
        lambda: _set_eps("ln_cell_l1", 1e-3),
        "ln_cell_l1 has eps=0.001, the fused engine's rule uses 1e-05",
    ),
}


@pytest.mark.parametrize("name", list(FALLBACKS))
def test_a_norm_the_rule_cannot_read_falls_back_with_its_name(name: str) -> None:
    """The fused rule reads plain layer norms only; the compiled engine traces whatever
    the step calls, so by default these models run compiled."""
    build_model, reason = FALLBACKS[name]
    model = build_model()
    model.engine = "fused"
    engine = model.engine_for(torch.randn(2, 5, 3, dtype=DOUBLE))
    assert engine.reason == f"the fused engine does not apply: {reason}"
    assert_engines_agree(model, "hoisted", "fused")  # and the swapped part is what runs
    assert_engines_agree(model, "compiled")


def test_a_norm_over_other_features_falls_back() -> None:
    """A layer norm that normalises over another shape: the fused engine would normalise
    over the features it expects; the step-by-step engines call the part (and fail)."""
    model = _swap("ln_hh_l1", nn.LayerNorm((2, 8)))
    engine = model.engine_for(torch.randn(2, 5, 3, dtype=DOUBLE))
    assert engine.name == "hoisted"
    assert engine.reason.startswith(
        "the compiled engine does not apply: forward_cell raised RuntimeError: Given "
        "normalized_shape=[2, 8]"
    )
    assert engine.reason.endswith("ln_hh_l1 normalises over (2, 8), the fused engine over (16,)")
    with pytest.raises(RuntimeError, match=r"normalized_shape=\[2, 8\]"):
        model(torch.randn(2, 5, 3, dtype=DOUBLE))


def test_the_fused_node_without_shifts_has_exact_second_derivatives() -> None:
    torch.manual_seed(0)
    model = build("layernorm", 2, 3, num_layers=2, bidirectional=True, bias=False)
    randomise(model)
    x = torch.randn(2, 3, 2, dtype=DOUBLE, requires_grad=True)
    model.engine = "fused"
    assert model.engine_for(x, [3, 2]).name == "fused"

    def outputs(x: Tensor) -> Tensor:
        return model(x, lengths=[3, 2])[0]

    assert torch.autograd.gradcheck(outputs, (x,))
    assert torch.autograd.gradgradcheck(outputs, (x,))
