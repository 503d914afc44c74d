"""The sLSTM (``lstm.cells.slstm``): the paper's equations, and the stabiliser that keeps its
exponential gates finite.

The equations are checked against a step-by-step reference without the stabiliser, in
float64, through two layers, both directions and ragged lengths: the stabilised c and n are
the paper's divided by exp(m), so their ratio (and the output) is the same. The stabiliser
is checked with gates saturated far beyond what exp() can represent in float32, over
``STEPS`` steps by default and ``LONG_STEPS`` in the tests marked ``slow``.

The sLSTM runs on the fused engine (``SLSTMRule``); tests/test_fused.py checks it like every
fused family from random states. Here what those do not reach: the default state, whose
stabiliser is -inf; ties in the maximum that updates the stabiliser (where
``torch.maximum``'s gradient goes half to each side); and saturated gates, with gradients.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from builders import DOUBLE, assert_matches_reference, build, close, gradients, results
from lstm import SLSTM, Recurrent
from lstm.cells.slstm import SLSTMRule, slstm_pointwise
from pairwise import case_id, product
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


def saturated(model: SLSTM, forget_bias: float, input_bias: float) -> SLSTM:
    """``model`` with the biases of its forget and input gates set, in every cell."""
    with torch.no_grad():
        for layer, direction in model.cell_indices():
            blocks = model.cell_parts(layer, direction)["i2h"].bias.view(4, -1)  # f, i, o, z
            blocks[0], blocks[1] = forget_bias, input_bias
    return model


def run_stabilised(forget_bias: float, input_bias: float, scale: float, steps: int) -> None:
    model = saturated(SLSTM(INPUT, HIDDEN).eval(), forget_bias, input_bias)
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


# ------------------------------------------------------------------ the fused engine


ENGINES = ["fused", "compiled"]
"""The sLSTM's two fast engines: its hand-written rule, and its step traced and compiled."""


def fused_and_reference(
    hidden_size: int = 4, engine: str = "fused", **options: Any
) -> tuple[SLSTM, SLSTM]:
    """An sLSTM in float64 on one of its fast engines (``engine``), and a copy held on the
    reference path."""
    model = build("slstm", 3, hidden_size, **options)
    reference = build("slstm", 3, hidden_size, **options)
    reference.load_state_dict(model.state_dict())
    reference.engine, model.engine = "reference", engine
    assert isinstance(model, SLSTM)
    assert isinstance(reference, SLSTM)
    return model, reference


def run_both(
    models: tuple[SLSTM, SLSTM], x: Tensor, lengths: Tensor | None, initial: Any = None
) -> list[tuple[tuple[Tensor, ...], list[Tensor]]]:
    """Outputs and final state of each model, and their gradients with respect to the input,
    the initial state's tensors (when given) and every parameter."""
    assert models[0].engine_for(x, lengths).name == models[0].engine
    found = []
    for module in models:
        inputs = [x.clone().requires_grad_()]
        if initial is not None:
            inputs += [part.clone().requires_grad_() for part in (initial[0], *initial[1])]
            got = results(*module(inputs[0], (inputs[1], tuple(inputs[2:])), lengths=lengths))
        else:
            got = results(*module(inputs[0], lengths=lengths))
        found.append((got, gradients(got, [*inputs, *module.parameters()])))
    return found


MATRIX = product(num_layers=[1, 2], bidirectional=[False, True], ragged=[False, True])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", MATRIX, ids=case_id)
def test_fast_engines_from_the_default_state_equal_the_reference_path(
    case: dict[str, Any], engine: str
) -> None:
    # m_0 = -inf: f' = 0 and the whole of m_1 = max(f + m_0, i) goes to i at the first step,
    # so neither the forget gate nor m_0 gets a gradient there (0, not nan, as autograd says).
    torch.manual_seed(0)
    options = {"num_layers": case["num_layers"], "bidirectional": case["bidirectional"]}
    models = fused_and_reference(engine=engine, **options)
    x = torch.randn(4, 6, 3, dtype=DOUBLE)
    lengths = torch.tensor([6, 3, 1, 5]) if case["ragged"] else None
    cells = models[0].num_layers * models[0].num_directions
    hidden, state = models[0].init_hidden(x)
    default = (hidden.expand(cells, -1, -1), tuple(p.expand(cells, -1, -1) for p in state))
    assert torch.isneginf(default[1][2]).all()
    given, implicit = run_both(models, x, lengths, default), run_both(models, x, lengths)
    for (got, grads), (want, want_grads) in zip(given, implicit, strict=True):
        close(got, want, atol=0)  # the same state, given or taken from init_hidden
        close(grads[0], want_grads[0], atol=0)
    close(given[0][0], given[1][0])
    close(given[0][1], given[1][1], atol=1e-10)
    close(implicit[0][1], implicit[1][1], atol=1e-10)
    for grads in (given[0][1], given[1][1]):
        assert all(torch.isfinite(grad).all() for grad in grads)
        assert (grads[4] == 0).all()  # the gradient with respect to m_0 = -inf


def test_torch_maximum_splits_its_gradient_on_ties() -> None:
    # SLSTMRule's backward follows this convention; if torch changes it, the rule must follow.
    left = torch.tensor([1.0, 2.0, 3.0, -math.inf], requires_grad=True)
    right = torch.tensor([1.0, 1.0, 4.0, 0.0], requires_grad=True)
    torch.maximum(left, right).sum().backward()
    assert left.grad is not None
    assert right.grad is not None
    assert left.grad.tolist() == [0.5, 1.0, 0.0, 0.0]
    assert right.grad.tolist() == [0.5, 0.0, 1.0, 1.0]


def test_rule_backward_on_ties_equals_autograd() -> None:
    # Small integers add exactly: f + m == i wherever they are drawn so, a third of the time.
    torch.manual_seed(0)
    gates = torch.randint(-2, 3, (64, 4 * HIDDEN), dtype=DOUBLE)
    state = (
        torch.randn(64, HIDDEN, dtype=DOUBLE),
        torch.rand(64, HIDDEN, dtype=DOUBLE) + 1,
        torch.randint(-1, 2, (64, HIDDEN), dtype=DOUBLE),
    )
    ties = gates[:, :HIDDEN] + state[2] == gates[:, HIDDEN : 2 * HIDDEN]
    assert 0.1 < ties.double().mean() < 0.9
    inputs = [t.clone().requires_grad_() for t in (gates, *state)]
    hidden, new_state = slstm_pointwise(inputs[0], (inputs[1], inputs[2], inputs[3]))
    incoming = [torch.randn_like(t) for t in (hidden, *new_state)]
    want = torch.autograd.grad((hidden, *new_state), inputs, incoming)
    rule = SLSTMRule()
    _, _, saved = rule.forward(gates, state, ())
    d_gates, d_state, _ = rule.backward(saved, incoming[0], tuple(incoming[1:]), ())
    close((d_gates, *d_state), want, atol=1e-12)


def tied(model: SLSTM) -> SLSTM:
    """Forget and input pre-activations 0 at every step: m_t = 0 = f + m_{t-1} = i, a tie at
    every step after the first (zero parameters get gradients all the same)."""
    with torch.no_grad():
        for layer, direction in model.cell_indices():
            for name in ("i2h", "h2h"):
                part = model.cell_parts(layer, direction)[name]
                part.weight.view(4, -1, part.in_features)[:2] = 0
                part.bias.view(4, -1)[:2] = 0
    return model


@pytest.mark.parametrize("engine", ENGINES)
def test_fast_engines_on_ties_equal_the_reference_path(engine: str) -> None:
    torch.manual_seed(0)
    model, reference = fused_and_reference(engine=engine, num_layers=2, bidirectional=True)
    models = (tied(model), tied(reference))
    x = torch.randn(4, 6, 3, dtype=DOUBLE)
    (got, grads), (want, want_grads) = run_both(models, x, torch.tensor([6, 3, 1, 5]))
    assert (got[-1] == 0).all()  # the final stabiliser: every tie was met at 0
    close(got, want)
    close(grads, want_grads, atol=1e-10)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("forget_bias", "input_bias", "scale"), GATE_BIASES)
def test_fast_engines_on_saturated_gates_equal_the_reference_path(
    forget_bias: float, input_bias: float, scale: float, engine: str
) -> None:
    # m grows by up to 1e4 a step (to 1.2e6 here): compared relative to each value's size. An
    # input of 1e4 makes pre-activations of 1e4, whose rounding (~1e-12, as the engines
    # associate the sums differently) enters exp() as it is: absolute slack grows with it.
    torch.manual_seed(0)
    model, reference = fused_and_reference(HIDDEN, engine, num_layers=2, bidirectional=True)
    models = (
        saturated(model, forget_bias, input_bias),
        saturated(reference, forget_bias, input_bias),
    )
    x = scale * torch.randn(BATCH, 120, 3, dtype=DOUBLE)
    (got, grads), (want, want_grads) = run_both(models, x, torch.tensor([120, 60]))
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-12 * scale)
    torch.testing.assert_close(grads, want_grads, rtol=1e-12, atol=1e-10 * scale)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("forget_bias", "input_bias", "scale"), GATE_BIASES)
def test_fast_engines_keep_saturated_gates_finite_with_gradients(
    forget_bias: float, input_bias: float, scale: float, engine: str
) -> None:
    # float32, as test_stabiliser_keeps_exponential_gates_finite, but with gradients (on a
    # fast engine; return_all_states keeps that test on the reference).
    model = saturated(SLSTM(INPUT, HIDDEN, num_layers=2).eval(), forget_bias, input_bias)
    model.engine = engine
    x = (scale * torch.randn(BATCH, STEPS // 4, INPUT)).requires_grad_()
    lengths = torch.tensor([STEPS // 4, STEPS // 8])
    assert model.engine_for(x, lengths).name == engine
    out, (hidden, (cell, normaliser, stabiliser)) = model(x, lengths=lengths)
    for tensor in (out, hidden, cell, normaliser, stabiliser):
        assert torch.isfinite(tensor).all()
    assert out.abs().max() <= 1.0
    assert normaliser.min() >= 1.0
    assert (cell.abs() <= normaliser).all()
    (out.sum() + hidden.sum() + cell.sum() + normaliser.sum()).backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
