"""The fused engine (lstm/fused.py): every family that declares it, against its reference path.

Table-driven over the registry: a family joins these tests by declaring
``FastPath("fused", ...)`` and a ``step_rule``. Each rule's hand-written backward is checked
against autograd through its own differentiable step; each family's fused engine against its
``forward_cell`` loop (outputs, final states, gradients of the input, the initial state and
every parameter) in float64 across layers, directions and ragged lengths; and gradcheck and
gradgradcheck run through the fused node.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

import lstm
from builders import DOUBLE, build, close, gradients, parts, results
from lstm.fused import StepRule
from pairwise import case_id, product

FUSED = sorted(
    name
    for name, cls in lstm.CELLS.items()
    if cls.step_source.fast_path is not None and cls.step_source.fast_path.engine == "fused"
)
"""The registered cells whose own step runs on the fused engine."""


def test_the_fused_families_are_found() -> None:
    assert {"cifg", "layernorm", "slstm", "peephole", "array"} <= set(FUSED)


def random_state(name: str, like: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A random state of the shapes of ``like``, inside the family's domain.

    Random normal, except where a family's reachable states are narrower: the sLSTM's
    normaliser is at least 1 in every state it reaches (n_0 = 0, then n_t >= 1). From a
    random n near or below 0, h = o c / n divides by almost 0, and a comparison to 1e-10
    measures rounding amplified by 1 / n^2 (moving every parameter of the reference by one
    ulp moves its own gradients by ~6e-10), not the rule or the engine.
    """
    state = tuple(torch.randn_like(part) for part in like)
    if name == "slstm":
        cell, normaliser, stabiliser = state
        return cell, normaliser.abs() + 1, stabiliser
    return state


def _rule_inputs(name: str, batch: int = 3) -> tuple[StepRule, Any, tuple[Tensor, ...], Any]:
    """A rule, random gates (a pair for a rule that is not joint), a random state of the
    right shapes, and the rule's parameters. The gates are as wide as the rule's projection,
    which may carry per-step data past ``h2h``'s rows (lane attention's weights)."""
    model = build(name)
    rule = type(model).step_rule.bind(model)
    x = torch.randn(batch, 2, model.input_size, dtype=DOUBLE)
    _, state = model.init_hidden(x)
    with torch.no_grad():
        width = rule.project(model, x.transpose(0, 1)).shape[-1]
    gates: Any = torch.randn(batch, width, dtype=DOUBLE)
    if not rule.joint:
        gates = (gates, torch.randn(batch, width, dtype=DOUBLE))
    state = random_state(name, parts(state))
    params = tuple(p.detach() for p in rule.params(model))
    return rule, gates, state, params


def _flat(gates: Any) -> tuple[Tensor, ...]:
    return tuple(gates) if isinstance(gates, tuple) else (gates,)


@pytest.mark.parametrize("name", FUSED)
def test_rule_forward_equals_its_reference(name: str) -> None:
    rule, gates, state, params = _rule_inputs(name)
    hidden, new_state, _ = rule.forward(gates, state, params)
    want_hidden, want_state = rule.reference(gates, state, params)
    assert len(new_state) == len(state)
    close((hidden, *new_state), (want_hidden, *want_state), atol=1e-14)


@pytest.mark.parametrize("name", FUSED)
def test_rule_backward_equals_autograd_of_its_reference(name: str) -> None:
    rule, gates, state, params = _rule_inputs(name)
    inputs = [t.clone().requires_grad_() for t in (*_flat(gates), *state, *params)]
    first, count = len(_flat(gates)), len(state)
    given = inputs[0] if rule.joint else tuple(inputs[:first])
    hidden, new_state = rule.reference(
        given, tuple(inputs[first : first + count]), tuple(inputs[first + count :])
    )
    d_hidden = torch.randn_like(hidden)
    d_state = tuple(torch.randn_like(part) for part in new_state)
    want = torch.autograd.grad((hidden, *new_state), inputs, (d_hidden, *d_state))
    _, _, saved = rule.forward(gates, state, params)
    d_gates, d_before, d_params = rule.backward(saved, d_hidden, d_state, params)
    close((*_flat(d_gates), *d_before, *d_params), tuple(want), atol=1e-12)


# Layers, directions and ragged lengths each change the fused loop (masking, the reverse
# order, the layer below's output as input): crossed in full. The layouts normalised before
# any engine runs are covered for every cell by the generic tests.
MATRIX = product(num_layers=[1, 2], bidirectional=[False, True], ragged=[False, True])


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("case", MATRIX, ids=case_id)
def test_fused_engine_equals_the_reference_path(name: str, case: dict[str, Any]) -> None:
    torch.manual_seed(0)
    options = {"num_layers": case["num_layers"], "bidirectional": case["bidirectional"]}
    model, reference = build(name, **options), build(name, **options)
    reference.load_state_dict(model.state_dict())
    reference.engine, model.engine = "reference", "fused"
    x = torch.randn(4, 6, model.input_size, dtype=DOUBLE)
    lengths = torch.tensor([6, 3, 1, 5]) if case["ragged"] else None
    cells = model.num_layers * model.num_directions
    hidden0, state0 = model.init_hidden(x)
    # A state part of one cell (*lead, B, H), such as the lanes' (k, B, H), stacks as
    # (cells * lead, B, H).
    stacked = [(cells * part.shape[:-2].numel(), *part.shape[-2:]) for part in parts(state0)]
    initial = (
        torch.randn(cells, *hidden0.shape, dtype=DOUBLE),
        random_state(name, tuple(torch.empty(shape, dtype=DOUBLE) for shape in stacked)),
    )
    assert model.engine_for(x, lengths).name == "fused"
    found = []
    for module in (model, reference):
        inputs = [x.clone().requires_grad_(), initial[0].clone().requires_grad_()]
        inputs += [part.clone().requires_grad_() for part in initial[1]]
        state = tuple(inputs[2:]) if isinstance(state0, tuple) else inputs[2]
        got = results(*module(inputs[0], (inputs[1], state), lengths=lengths))
        found.append((got, gradients(got, [*inputs, *module.parameters()])))
    close(found[0][0], found[1][0], atol=1e-12)
    close(found[0][1], found[1][1], atol=1e-10)


@pytest.mark.parametrize("name", FUSED)
def test_fused_engine_without_gradients_equals_the_reference_path(name: str) -> None:
    model = build(name, num_layers=2, bidirectional=True)
    reference = build(name, num_layers=2, bidirectional=True)
    reference.load_state_dict(model.state_dict())
    reference.engine, model.engine = "reference", "fused"
    x = torch.randn(3, 5, model.input_size, dtype=DOUBLE)
    assert model.engine_for(x, [5, 2, 4]).name == "fused"
    with torch.no_grad():
        close(results(*model(x, lengths=[5, 2, 4])), results(*reference(x, lengths=[5, 2, 4])))


@pytest.mark.parametrize("name", FUSED)
def test_gradcheck_and_gradgradcheck_through_the_fused_node(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, 2, 3, num_layers=2, bidirectional=True)
    model.engine = "fused"
    x = torch.randn(2, 3, 2, dtype=DOUBLE, requires_grad=True)

    def outputs(x: Tensor) -> Tensor:
        return model(x, lengths=[3, 2])[0]

    assert model.engine_for(x, [3, 2]).name == "fused"
    assert torch.autograd.gradcheck(outputs, (x,))
    assert torch.autograd.gradgradcheck(outputs, (x,))


def test_a_declared_fused_path_without_a_rule_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match=r"^Broken: expected a step_rule attribute beside"):

        class Broken(lstm.CIFGLSTM):
            fast_path = lstm.engines.FastPath("fused", "a rule that is not there")

            def forward_cell(self, x: Tensor, hidden: Tensor, state: Any) -> Any:
                return super().forward_cell(x, hidden, state)


def test_a_subclass_that_rewrites_the_step_leaves_the_fused_engine() -> None:
    class Rewritten(lstm.CIFGLSTM):
        def forward_cell(self, x: Tensor, hidden: Tensor, state: Any) -> Any:
            return super().forward_cell(x, hidden, state)

    model = Rewritten(3, 4)
    model.engine = "fused"
    engine = model.engine_for(torch.randn(2, 5, 3))
    assert engine.name == "reference"
    assert "Rewritten overrides forward_cell of CIFGLSTM" in engine.reason
    model.engine = "auto"  # its own step is compiled instead
    assert model.engine_for(torch.randn(2, 5, 3)).name == "compiled"


# ------------------------------------------------------------------ a projection wider than h2h


class InputScaledRule(StepRule):
    """The toy's step: ``c' = σ(a_f) c + σ(e) tanh(a_g)``, ``h' = tanh(c')``, where the scale's
    pre-activation ``e = W_s x`` depends on the input only and rides in extra columns."""

    def project(self, cell: lstm.Recurrent, inputs: Tensor) -> Tensor:
        return torch.cat((cell.i2h(inputs) + cell.h2h.bias, cell.i2s(inputs)), dim=-1)

    def forward(self, gates: Tensor, state: Any, params: Any) -> Any:
        (cell_state,) = state
        width = cell_state.shape[-1]
        forget, scale = torch.sigmoid(gates[:, :width]), torch.sigmoid(gates[:, 2 * width :])
        candidate = torch.tanh(gates[:, width : 2 * width])
        new_state = forget * cell_state + scale * candidate
        hidden = torch.tanh(new_state)
        return hidden, (new_state,), (forget, scale, candidate, cell_state, hidden)

    def backward(self, saved: Any, d_hidden: Tensor, d_state: Any, params: Any) -> Any:
        forget, scale, candidate, cell_state, hidden = saved
        d_cell = d_state[0] + d_hidden * (1 - hidden * hidden)
        d_gates = torch.cat(
            (
                d_cell * cell_state * forget * (1 - forget),
                d_cell * scale * (1 - candidate * candidate),
                d_cell * candidate * scale * (1 - scale),
            ),
            dim=-1,
        )
        return d_gates, (d_cell * forget,), ()

    def reference(self, gates: Tensor, state: Any, params: Any) -> Any:
        width = state[0].shape[-1]
        forget, candidate, scale = gates.split(width, dim=-1)
        new_state = torch.sigmoid(forget) * state[0] + torch.sigmoid(scale) * torch.tanh(candidate)
        return torch.tanh(new_state), (new_state,)


class InputScaledCell(lstm.Recurrent):
    """A test family whose rule reads per-step data beside the gates (like lane attention)."""

    fast_path = lstm.engines.FastPath("fused", "a wide projection")
    step_rule = InputScaledRule()

    def build_cell(self, input_size: int, hidden_size: int, **factory: Any) -> Any:
        width = 2 * hidden_size
        maps = lstm.parameters.linear_maps(input_size, hidden_size, width, bias=True, **factory)
        return {**maps, "i2s": torch.nn.Linear(input_size, hidden_size, **factory)}

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        gates = torch.cat((self.i2h(x) + self.h2h(hidden), self.i2s(x)), dim=-1)
        hidden, (state,) = self.step_rule.reference(gates, (state,), ())
        return hidden, state


def test_a_projection_wider_than_h2h_carries_per_step_data_to_the_rule() -> None:
    torch.manual_seed(0)
    model = InputScaledCell(3, 4, num_layers=2, bidirectional=True, dtype=DOUBLE)
    reference = InputScaledCell(3, 4, num_layers=2, bidirectional=True, dtype=DOUBLE)
    reference.load_state_dict(model.state_dict())
    reference.engine, model.engine = "reference", "fused"
    x = torch.randn(3, 5, 3, dtype=DOUBLE)
    assert model.engine_for(x).name == "fused"
    found = []
    for module in (model, reference):
        given = x.clone().requires_grad_()
        got = results(*module(given, lengths=[5, 2, 4]))
        found.append((got, gradients(got, [given, *module.parameters()])))
    close(found[0][0], found[1][0], atol=1e-12)
    close(found[0][1], found[1][1], atol=1e-10)
    small = x[:2, :3].clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x: model(x, lengths=[3, 2])[0], (small,))
