"""The compiled engine (lstm/compiled/): a cell's own ``forward_cell`` traced, its
element-wise step and backward generated as C, and a fixed C++ loop per direction.

Table-driven: every registered family that runs on it by default, and cells written as a
user would write them, against their reference path (``forward_cell`` step by step) in
float64 across layers, directions, ragged lengths and given initial states; the generator
operation by operation against the graphs it was given; each way a step can fail to fit
and each way the build can fail, against the reason ``engine_for`` gives and the engine that
runs instead; and the process's floating-point state around a call.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import lstm
from builders import DOUBLE, HIDDEN, INPUT, build, close, parts, projection, results
from lstm.compiled import build as builder
from lstm.compiled import run, trace
from pairwise import case_id, product
from toy_cells import CoupledGateLSTM, TorchFaceStepLSTM

FAMILIES = sorted(
    name
    for name, cls in lstm.CELLS.items()
    if cls.step_source.fast_path is not None and cls.step_source.fast_path.engine == "fused"
)
"""The registered families the compiled engine runs by default (all but the LSTM's kernel
and the mLSTM's parallel form)."""


class GRUStyleCell(lstm.Recurrent):
    """nn.GRU's equations, written as a user would: r and z from both maps, and the
    candidate reading r times h2h's own block, ``n = tanh(W_n x + r ⊙ (U_n h))``."""

    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Any = None, dtype: Any = None
    ) -> dict[str, Any]:
        factory = {"bias": self.bias, "device": device, "dtype": dtype}
        return {
            "i2h": nn.Linear(input_size, 3 * hidden_size, **factory),
            "h2h": nn.Linear(hidden_size, 3 * hidden_size, **factory),
        }

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        x_r, x_z, x_n = self.i2h(x).chunk(3, dim=-1)
        h_r, h_z, h_n = self.h2h(hidden).chunk(3, dim=-1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        hidden = (1 - z) * torch.tanh(x_n + r * h_n) + z * hidden
        return hidden, hidden


class ActivationsCell(lstm.LSTM):
    """An LSTM-like step through hardsigmoid, silu, clamp, where and exp."""

    hardsigmoid: Callable[[Tensor], Tensor] = staticmethod(F.hardsigmoid)

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        forget, write, output, candidate = (self.i2h(x) + self.h2h(hidden)).chunk(4, dim=-1)
        forget = type(self).hardsigmoid(forget)
        write = torch.exp(torch.clamp(write, max=0.0))  # in (0, 1]
        candidate = torch.where(candidate > 0, F.silu(candidate), torch.tanh(candidate))
        state = forget * state + write * candidate
        return torch.sigmoid(output) * torch.clamp(state, -2.0, 2.0), state


class ExactHardsigmoid(ActivationsCell):
    """The same step with hardsigmoid as its definition, ``clamp(v + 3, 0, 6) / 6``: eager
    ``F.hardsigmoid``'s backward multiplies by 1/6 rounded to float32 (an error near 1e-8 in
    float64), which the compiled engine, computing the definition, does not share."""

    hardsigmoid = staticmethod(lambda v: torch.clamp(v + 3, 0, 6) / 6)


USER: dict[str, type[lstm.Recurrent]] = {
    "coupled-gate": CoupledGateLSTM,
    "gru-style": GRUStyleCell,
    "activations": ActivationsCell,
    "torch-face": TorchFaceStepLSTM,
}
"""Cells as a user writes them: the README's coupled gate, a GRU, several activations, and
a step on ``lstm.nn.LSTM``'s own weights through ``F.linear``."""

REFERENCE_CLASS: dict[str, type[lstm.Recurrent]] = {"activations": ExactHardsigmoid}
"""Where the reference path runs another class (the same parameters): see its docstring."""


def make(name: str, **options: Any) -> lstm.Recurrent:
    """A registered family (by :func:`builders.build`) or a user cell, float64, eval mode."""
    if name in USER:
        return USER[name](INPUT, HIDDEN, dtype=DOUBLE, **options).eval()
    return build(name, **options)


def twin(model: lstm.Recurrent, name: str, **options: Any) -> lstm.Recurrent:
    """The same model on the reference path (the same parameters)."""
    if name in REFERENCE_CLASS:
        reference: lstm.Recurrent = REFERENCE_CLASS[name](
            INPUT, HIDDEN, dtype=DOUBLE, **options
        ).eval()
    else:
        reference = make(name, **options)
    reference.load_state_dict(model.state_dict())
    reference.engine = "reference"
    return reference


def random_initial(name: str, model: lstm.Recurrent, x: Tensor) -> list[Tensor]:
    """A random initial hidden and state, stacked over cells, inside the cell's domain (the
    sLSTM's normaliser is at least 1 in every state it reaches)."""
    cells = model.num_layers * model.num_directions
    hidden0, state0 = model.init_hidden(x)
    tensors = [torch.randn(cells, *hidden0.shape, dtype=DOUBLE)]
    for part in parts(state0):
        tensors.append(torch.randn(cells * part.shape[:-2].numel(), *part.shape[-2:], dtype=DOUBLE))
    if name == "slstm":
        tensors[2] = tensors[2].abs() + 1
    return tensors


def assert_compiled_equals_its_reference(
    build: Callable[[], lstm.Recurrent], lengths: list[int]
) -> None:
    """A model from ``build`` runs compiled, and its results and gradients over a ragged
    batch of ``lengths`` equal those of a twin on the reference path (1e-10, float64)."""
    model, reference = build(), build()
    reference.load_state_dict(model.state_dict())
    reference.engine = "reference"
    x = torch.randn(len(lengths), max(lengths), INPUT, dtype=DOUBLE)
    assert model.engine_for(x).name == "compiled"
    got = run_with_gradients(model, x, torch.tensor(lengths), None)
    want = run_with_gradients(reference, x, torch.tensor(lengths), None)
    close(got, want, atol=1e-10)


def run_with_gradients(
    model: lstm.Recurrent, x: Tensor, lengths: Tensor | None, initial: list[Tensor] | None
) -> tuple[tuple[Tensor, ...], list[Tensor]]:
    """Results, and the gradients of a random projection of them with respect to the input,
    the initial state (if given) and every parameter."""
    inputs = [x.clone().requires_grad_()]
    hidden = None
    if initial is not None:
        inputs += [t.clone().requires_grad_() for t in initial]
        _, like = model.init_hidden(x)
        state = tuple(inputs[2:]) if isinstance(like, tuple) else inputs[2]
        hidden = (inputs[1], state)
    got = results(*model(inputs[0], hidden, lengths=lengths))
    generator = torch.Generator().manual_seed(0)
    probes = [torch.randn(t.shape, dtype=DOUBLE, generator=generator).to(t.dtype) for t in got]
    wanted = [*inputs, *model.parameters()]  # a GRU's separate state is unused: zeros
    found = torch.autograd.grad(
        projection(probes, got), wanted, allow_unused=True, materialize_grads=True
    )
    return got, list(found)


# ------------------------------------------------------------------ who runs compiled


@pytest.mark.parametrize("name", FAMILIES + sorted(USER))
def test_the_families_and_user_cells_run_compiled_by_default(name: str) -> None:
    model = make(name, num_layers=2, bidirectional=True)
    engine = model.engine_for(torch.randn(2, 5, INPUT, dtype=DOUBLE))
    assert engine.name == "compiled", engine.reason
    assert engine.reason.endswith("traced and compiled")


def test_the_stock_lstm_and_the_mlstm_keep_their_own_engines() -> None:
    x = torch.randn(2, 5, INPUT, dtype=DOUBLE)
    assert build("lstm").engine_for(x).name == "kernel"
    assert build("mlstm").engine_for(x).name == "parallel"
    assert set(FAMILIES) == set(lstm.CELLS) - {"lstm", "mlstm"}


# ------------------------------------------------------------------ exactness

MATRIX = product(
    num_layers=[1, 2], bidirectional=[False, True], ragged=[False, True], initial=[False, True]
)


@pytest.mark.parametrize("name", FAMILIES + sorted(USER))
@pytest.mark.parametrize("case", MATRIX, ids=case_id)
def test_compiled_equals_the_reference_path(name: str, case: dict[str, Any]) -> None:
    torch.manual_seed(0)
    options = {"num_layers": case["num_layers"], "bidirectional": case["bidirectional"]}
    model = make(name, **options)
    reference = twin(model, name, **options)
    x = torch.randn(4, 6, INPUT, dtype=DOUBLE)
    lengths = torch.tensor([6, 3, 1, 5]) if case["ragged"] else None
    initial = random_initial(name, model, x) if case["initial"] else None
    assert model.engine_for(x, lengths).name == "compiled"
    got, got_gradients = run_with_gradients(model, x, lengths, initial)
    want, want_gradients = run_with_gradients(reference, x, lengths, initial)
    close(got, want, atol=1e-12)
    close(got_gradients, want_gradients, atol=1e-10)


@pytest.mark.parametrize("name", FAMILIES + sorted(USER))
@pytest.mark.parametrize("steps", [1, 5])
def test_compiled_without_gradients_equals_the_reference_path(name: str, steps: int) -> None:
    """No gradient asked for: the inference kernel, states kept in rings of two."""
    model = make(name, num_layers=2, bidirectional=True)
    reference = twin(model, name, num_layers=2, bidirectional=True)
    x = torch.randn(3, steps, INPUT, dtype=DOUBLE)
    for lengths in (None, [steps, 1, max(steps - 2, 1)]):
        assert model.engine_for(x, lengths).name == "compiled"
        with torch.no_grad():
            close(results(*model(x, lengths=lengths)), results(*reference(x, lengths=lengths)))


def test_eager_hardsigmoid_s_gradient_is_what_the_reference_class_works_around() -> None:
    """The one place the compiled engine and the reference path of the same cell differ,
    and why: eager hardsigmoid's backward, not the engine."""
    v = torch.linspace(-2.9, 2.9, 101, dtype=DOUBLE, requires_grad=True)
    (eager,) = torch.autograd.grad(F.hardsigmoid(v).sum(), v)
    (exact,) = torch.autograd.grad(ExactHardsigmoid.hardsigmoid(v).sum(), v)
    close(exact, torch.full_like(v, 1 / 6), atol=1e-16)
    assert (eager - exact).abs().max() > 1e-10
    close(eager, torch.full_like(v, float(torch.tensor(1 / 6, dtype=torch.float32))), atol=0)


@pytest.mark.parametrize("name", ["cifg", "layernorm", "attention-array", "gru-style"])
def test_gradcheck_and_gradgradcheck_through_the_compiled_node(name: str) -> None:
    torch.manual_seed(0)
    model = make(name, num_layers=2, bidirectional=True)
    x = torch.randn(2, 3, INPUT, dtype=DOUBLE, requires_grad=True)

    def outputs(x: Tensor) -> Tensor:
        return model(x, lengths=[3, 2])[0]

    assert model.engine_for(x, [3, 2]).name == "compiled"
    assert torch.autograd.gradcheck(outputs, (x,))
    assert torch.autograd.gradgradcheck(outputs, (x,))  # recomputed with the reference


@pytest.mark.parametrize("name", FAMILIES + sorted(USER))
def test_float32_is_as_accurate_as_the_reference_path_in_float32(name: str) -> None:
    """In float32 the engine computes in float32 (vectorised exp and tanh among it): its
    error against the float64 result is the float32 reference path's, within a factor."""
    model = make(name, num_layers=2, bidirectional=True)
    x = torch.randn(4, 7, INPUT, dtype=DOUBLE)
    want = run_with_gradients(model, x, None, None)
    errors = {}
    for engine in ("auto", "reference"):
        single = make(name, num_layers=2, bidirectional=True).float()
        single.load_state_dict(model.state_dict())
        single.engine = engine
        if engine == "auto":
            assert single.engine_for(x.float()).name == "compiled"
        got = run_with_gradients(single, x.float(), None, None)
        pairs = zip((*got[0], *got[1]), (*want[0], *want[1]), strict=True)
        errors[engine] = max((a.double() - b).abs().max().item() for a, b in pairs)
    assert errors["auto"] <= 4 * errors["reference"] + 1e-6, errors


def test_dropout_between_layers_draws_as_the_reference_path() -> None:
    model = make("cifg", num_layers=3, dropout=0.4).train()
    reference = twin(model, "cifg", num_layers=3, dropout=0.4).train()
    x = torch.randn(4, 6, INPUT, dtype=DOUBLE)
    assert model.engine_for(x).name == "compiled"
    torch.manual_seed(5)
    got = run_with_gradients(model, x, None, None)
    torch.manual_seed(5)
    want = run_with_gradients(reference, x, None, None)
    close(got, want, atol=1e-10)


def test_a_cell_with_a_tuple_state_and_a_scalar_parameter() -> None:
    """A state of two tensors and a 0-d learnable parameter (its gradient sums over the
    batch, the units and time)."""

    class Scaled(GRUStyleCell):
        def build_cell(
            self, input_size: int, hidden_size: int, *, device: Any = None, dtype: Any = None
        ) -> dict[str, Any]:
            cell = super().build_cell(input_size, hidden_size, device=device, dtype=dtype)
            cell["scale"] = nn.Parameter(torch.tensor(0.7, device=device, dtype=dtype))
            return cell

        def init_hidden(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            return zeros, (zeros.clone(), zeros.clone())

        def forward_cell(self, x: Tensor, hidden: Tensor, state: Any) -> Any:
            new, _ = super().forward_cell(x, hidden, state[0])
            total = state[1] + self.scale * new
            return new * torch.tanh(total), (new, total)

    assert_compiled_equals_its_reference(
        lambda: Scaled(INPUT, HIDDEN, num_layers=2, bidirectional=True, dtype=DOUBLE), [5, 2, 4]
    )


# ------------------------------------------------------------------ the generator, op by op

OPERATIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "sigmoid": lambda a, b: torch.sigmoid(a),
    "tanh": lambda a, b: torch.tanh(a),
    "exp": lambda a, b: torch.exp(a.clamp(max=4)),
    "expm1": lambda a, b: torch.expm1(a.clamp(max=4)),
    "log": lambda a, b: torch.log(F.softplus(a) + 0.1),
    "log1p": lambda a, b: torch.log1p(a.abs()),
    "sqrt": lambda a, b: torch.sqrt(a * a + 1),
    "rsqrt": lambda a, b: torch.rsqrt(a * a + 1),
    "abs": lambda a, b: a.abs() * b,
    "reciprocal": lambda a, b: torch.reciprocal(a * a + 1),
    "pow": lambda a, b: a**3 - (b.abs() + 1) ** b.clamp(-1, 1),
    "sin-cos-atan": lambda a, b: torch.sin(a) * torch.cos(b) + torch.atan(a),
    "erf-gelu": lambda a, b: torch.erf(a) + F.gelu(b) + F.gelu(a, approximate="tanh"),
    "relu-leaky-elu": lambda a, b: F.relu(a) + F.leaky_relu(b, 0.1) + F.elu(a),
    "silu-mish-softplus": lambda a, b: F.silu(a) + F.mish(b) + F.softplus(a),
    "hardtanh-hardswish": lambda a, b: F.hardtanh(a) + F.hardswish(b),
    "clamp": lambda a, b: a.clamp(-0.5, 0.5) + b.clamp(min=0.1),
    "where-maximum-minimum": lambda a, b: torch.where(
        a > b, torch.maximum(a, b), torch.minimum(a, b * 2)
    ),
    "div-sub": lambda a, b: (a - b) / (b * b + 1),
    "sign-floor-round": lambda a, b: torch.sign(a) * b + torch.floor(a) + torch.round(b * 3),
    "remainder": lambda a, b: torch.remainder(a, 0.7) * b,
    "lanes-softmax": lambda a, b: torch.stack([a, b, a * b]).softmax(0)[0],
    "lanes-max-argmax": lambda a, b: (
        torch.stack([a, b]).amax(0)
        + torch.stack([a, b]).gather(0, torch.stack([b, a]).argmax(0, keepdim=True))[0]
    ),
    "lanes-sum-mean": lambda a, b: torch.stack([a, b]).sum(0) * torch.stack([a, b]).mean(0),
    "row-mean-var": lambda a, b: (a - a.mean(-1, keepdim=True)) / (a.var(-1, keepdim=True) + 1),
    "row-softmax-logsumexp": lambda a, b: a.softmax(-1) + torch.logsumexp(b, -1, keepdim=True),
    "layer-norm-rms-norm": lambda a, b: F.layer_norm(a, a.shape[-1:]) + F.rms_norm(b, b.shape[-1:]),
    "row-max": lambda a, b: a - a.amax(-1, keepdim=True),
}
"""Element-wise operations, lane reductions and row reductions, each inside one step."""


class OperationCell(lstm.LSTM):
    """``c' = σ(a_c) c + σ(a_d) op(a_a, a_b)``, ``h' = tanh(c')``: a step around one
    operation (set per subclass)."""

    operation: Callable[[Tensor, Tensor], Tensor] = staticmethod(lambda a, b: a)

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        a, b, c, d = (self.i2h(x) + self.h2h(hidden)).chunk(4, dim=-1)
        state = torch.sigmoid(c) * state + torch.sigmoid(d) * type(self).operation(a, b)
        return torch.tanh(state), state


def operation_cell(name: str) -> type[OperationCell]:
    return type(f"Op_{name}", (OperationCell,), {"operation": staticmethod(OPERATIONS[name])})


def _buffers(buffers: Any, batch: int, dtype: torch.dtype) -> list[Tensor]:
    found = []
    for buffer in buffers:
        if buffer is None:
            continue
        shape = [batch if d == buffer.batch_dim else s for d, s in enumerate(buffer.shape)]
        kind = {"float": dtype, "double": dtype, "bool": torch.bool, "int64": torch.int64}
        found.append(torch.empty(shape, dtype=kind[buffer.dtype]))
    return found


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_the_generated_kernels_compute_the_traced_graphs(name: str, dtype: torch.dtype) -> None:
    """The generator on its own: each kernel, called on random inputs, gives what the graph
    it was generated from gives when torch runs it (at the traced batch size)."""
    model = operation_cell(name)(INPUT, HIDDEN, dtype=dtype)
    step = run.compiled_step(model.layer_cell(0, 0), dtype)
    graphs, batch = step.graphs, trace.TRACE_BATCHES[0]
    torch.manual_seed(0)
    graph_inputs = [
        torch.randn(n.meta["val"].shape, dtype=n.meta["val"].dtype)
        for n in graphs.forward.graph.nodes
        if n.op == "placeholder"
    ]
    want = graphs.forward(*graph_inputs)
    kernel_outputs = _buffers(step.forward.kernel.outputs, batch, dtype)
    step.forward(batch, [t.contiguous() for t in graph_inputs] + kernel_outputs)
    kept = [w for w, b in zip(want, step.forward.kernel.outputs, strict=True) if b is not None]
    tolerance = {"atol": 1e-12, "rtol": 1e-12} if dtype == torch.float64 else {}
    for got, expected in zip(kernel_outputs, kept, strict=True):
        torch.testing.assert_close(got, expected.to(got.dtype), **tolerance)
    saved = [want[graphs.outputs + i] for i in range(len(want) - graphs.outputs)]
    for position, index in graphs.saved_inputs.items():
        saved[position] = graph_inputs[index]
    tangents = [torch.randn_like(t) for t in want[: graphs.outputs]]
    want_back = graphs.backward(*saved, *tangents)
    back_outputs = _buffers(step.backward.kernel.outputs, batch, dtype)
    for buffer, tensor in zip(
        [b for b in step.backward.kernel.outputs if b is not None], back_outputs, strict=True
    ):
        if buffer.accumulate:
            tensor.zero_()  # the kernel adds its per-row contributions into these
    step.backward(batch, [t.contiguous() for t in (*saved, *tangents)] + back_outputs)
    kept = [
        w for w, b in zip(want_back, step.backward.kernel.outputs, strict=True) if b is not None
    ]
    for got, expected in zip(back_outputs, kept, strict=True):
        torch.testing.assert_close(got, expected.to(got.dtype), **tolerance)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_each_operation_s_cell_equals_its_reference_path(name: str) -> None:
    cls = operation_cell(name)
    assert_compiled_equals_its_reference(
        lambda: cls(INPUT, HIDDEN, num_layers=2, dtype=DOUBLE), [4, 1, 3]
    )


def test_every_unit_loop_of_the_built_in_cells_is_vectorised() -> None:
    """A unit loop that gcc leaves scalar calls scalar exp and tanh: several times slower
    (a NaN-propagating max written as ``a != a || a >= b`` once made one step 9x slower).

    At hidden size 64: a loop over fewer units than one vector holds bytes (a saved
    boolean mask, 64 per AVX-512 register) may stay scalar in float64 (seen at 16)."""
    missed = {}
    for name in FAMILIES:
        for dtype, scalar in ((torch.float32, "float"), (torch.float64, "double")):
            model = build(name, 8, 64, dtype=dtype)
            step = run.compiled_step(model.layer_cell(0, 0), dtype)
            for kernel in (step.forward, step.backward, step.inference):
                lines = builder.unvectorised_loops(kernel.kernel, scalar)
                if lines is None:
                    pytest.skip("the C compiler is not gcc: no vectorisation report to read")
                if lines:
                    missed[(name, scalar, kernel.kernel.name)] = lines
    assert missed == {}


# ------------------------------------------------------------------ what does not fit


class ExtraLinear(lstm.LSTM):
    """A second matrix product inside the step, on a value the step computed."""

    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Any = None, dtype: Any = None
    ) -> dict[str, Any]:
        cell = super().build_cell(input_size, hidden_size, device=device, dtype=dtype)
        cell["extra"] = nn.Linear(hidden_size, hidden_size, device=device, dtype=dtype)
        return cell

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        new_hidden, state = super().forward_cell(x, hidden, state)
        return torch.tanh(self.extra(new_hidden)), state


class RecurrentMapOnAnotherValue(lstm.LSTM):
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        gates = self.i2h(x) + self.h2h(torch.tanh(hidden))
        return lstm.lstm_pointwise(gates, state)


class PythonIf(lstm.LSTM):
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        new_hidden, state = super().forward_cell(x, hidden, state)
        if state.abs().max() > 10:  # a Python branch on a tensor's value
            state = state / 10
        return new_hidden, state


class DropoutInside(lstm.LSTM):
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        gates = F.dropout(self.i2h(x), 0.2, self.training) + self.h2h(hidden)
        return lstm.lstm_pointwise(gates, state)


class CumulativeSum(lstm.LSTM):
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        new_hidden, state = super().forward_cell(x, hidden, state)
        return torch.cumsum(new_hidden, dim=-1) / self.hidden_size, state


UNFIT: dict[str, tuple[Callable[[], lstm.Recurrent], str]] = {
    "extra Linear inside the step": (
        lambda: ExtraLinear(INPUT, HIDDEN, dtype=DOUBLE),
        "extra is applied to a value computed inside forward_cell, not to its x or hidden "
        "argument: a matrix product inside the step",
    ),
    "h2h on something other than hidden": (
        lambda: RecurrentMapOnAnotherValue(INPUT, HIDDEN, dtype=DOUBLE),
        "h2h is applied to a value computed inside forward_cell",
    ),
    "Python if on a tensor": (
        lambda: PythonIf(INPUT, HIDDEN, dtype=DOUBLE),
        "forward_cell branches on a tensor's value (a Python if on a tensor)",
    ),
    "random operation in training": (
        lambda: DropoutInside(INPUT, HIDDEN, dtype=DOUBLE).train(),
        "forward_cell draws random numbers",
    ),
    "an operation the generator does not cover": (
        lambda: CumulativeSum(INPUT, HIDDEN, dtype=DOUBLE),
        "the generator cannot write this step: the operation cumsum.default",
    ),
    "a projection inside lstm.nn.LSTM's step": (
        lambda: TorchFaceStepLSTM(INPUT, HIDDEN, proj_size=2, dtype=DOUBLE),
        "weight_hr is applied to a value computed inside forward_cell",
    ),
}


@pytest.mark.parametrize("case", sorted(UNFIT))
def test_a_step_that_does_not_fit_falls_back_saying_why(case: str) -> None:
    build_model, reason = UNFIT[case]
    model = build_model()
    x = torch.randn(3, 5, INPUT, dtype=DOUBLE)
    engine = model.engine_for(x)
    assert engine.name == "reference"
    assert engine.reason.startswith("the compiled engine does not apply: ")
    assert reason in engine.reason
    assert engine.reason.endswith("it runs step by step")
    got = model(x)  # and the reference path runs it
    model.engine = "reference"
    if not model.training:
        close(results(*got), results(*model(x)), atol=0)


def test_random_operations_compile_in_eval_mode() -> None:
    model = DropoutInside(INPUT, HIDDEN, dtype=DOUBLE).eval()
    assert model.engine_for(torch.randn(3, 5, INPUT, dtype=DOUBLE)).name == "compiled"


def test_a_class_is_traced_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step is traced at a configuration's first call; later calls, other models of
    the class and the other layers of a stack reuse it, and a refusal is not retried."""

    class Counted(CoupledGateLSTM):
        pass

    class CountedIf(PythonIf):
        pass

    traced: list[str] = []
    real = trace.trace_step

    def counting(cell: Any, dtype: torch.dtype) -> Any:
        traced.append(type(cell).__name__)
        return real(cell, dtype)

    monkeypatch.setattr(trace, "trace_step", counting)
    x = torch.randn(2, 4, INPUT, dtype=DOUBLE)
    for _ in range(3):
        model = Counted(INPUT, HIDDEN, num_layers=3, bidirectional=True, dtype=DOUBLE)
        model(x)
        model.engine_for(x)
        refused = CountedIf(INPUT, HIDDEN, dtype=DOUBLE)
        assert refused.engine_for(x).name == "reference"
    assert traced == ["Counted", "CountedIf"]


# ------------------------------------------------------------------ building


def _fresh_cell() -> type[lstm.Recurrent]:
    """A class no test has built kernels for (its configuration is new to the cache)."""
    return type(f"Fresh{os.urandom(4).hex()}", (CoupledGateLSTM,), {})


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSTM_COMPILED", "0")
    model = lstm.CIFGLSTM(INPUT, HIDDEN, dtype=DOUBLE)
    engine = model.engine_for(torch.randn(2, 4, INPUT, dtype=DOUBLE))
    assert engine.name == "fused"
    assert engine.reason.startswith(
        "the compiled engine does not apply: it is switched off (LSTM_COMPILED=0); "
    )


def test_no_compiler_falls_back_saying_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> str:
        raise builder.BuildError(
            "no C compiler found (set CC, or install gcc): the compiled engine needs one"
        )

    monkeypatch.setattr(builder, "compiler", missing)
    model = _fresh_cell()(INPUT, HIDDEN, dtype=DOUBLE)
    x = torch.randn(2, 4, INPUT, dtype=DOUBLE)
    engine = model.engine_for(x)
    assert engine.name == "reference"
    assert engine.reason.startswith("the compiled engine does not apply: no C compiler found")
    model(x)


def test_a_failed_kernel_build_falls_back_with_the_compiler_s_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(builder, "CFLAGS", (*builder.CFLAGS, "-fno-such-flag"))
    model = _fresh_cell()(INPUT, HIDDEN, dtype=DOUBLE)
    engine = model.engine_for(torch.randn(2, 4, INPUT, dtype=DOUBLE))
    assert engine.name == "reference"
    assert "compiling a generated kernel failed" in engine.reason
    assert "-fno-such-flag" in engine.reason


def test_a_failed_loop_build_falls_back_and_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failure = builder.BuildError("building the compiled engine's loop failed: ninja not found")
    monkeypatch.setitem(builder._LOOP, "error", failure)
    model = _fresh_cell()(INPUT, HIDDEN, dtype=DOUBLE)
    x = torch.randn(2, 4, INPUT, dtype=DOUBLE)
    assert model.engine_for(x) == (
        "reference",
        f"the compiled engine does not apply: {failure}; "
        "CoupledGateLSTM overrides forward_cell of LSTM: it runs step by step",
    )
    with pytest.raises(builder.BuildError, match="ninja not found"):
        builder.loop_extension()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_other_dtypes_run_the_python_engines(dtype: torch.dtype) -> None:
    model = lstm.CIFGLSTM(INPUT, HIDDEN, dtype=dtype)
    engine = model.engine_for(torch.randn(2, 4, INPUT, dtype=dtype))
    assert engine.name in ("fused", "hoisted")
    if dtype == torch.bfloat16:
        assert engine.reason.startswith(
            "the compiled engine does not apply: it computes in float32 or float64, the input "
            "is torch.bfloat16"
        )


def test_the_floating_point_state_is_the_caller_s_around_every_call() -> None:
    loop = builder.loop_extension()
    if loop.mxcsr() < 0:
        pytest.skip("not x86: no MXCSR to read")
    before = loop.mxcsr()
    model = _fresh_cell()(INPUT, HIDDEN, num_layers=2, dtype=DOUBLE)  # loads new kernels too
    x = torch.randn(2, 6, INPUT, dtype=DOUBLE, requires_grad=True)
    model(x)[0].sum().backward()
    with torch.no_grad():
        model(x)
    assert loop.mxcsr() == before
    assert before & 0x8040 == 0  # flush-to-zero and denormals-are-zero stay off out here
    tiny = torch.tensor([1e-310], dtype=DOUBLE)
    assert (tiny * 0.5).item() != 0.0  # denormals still computed as such


def test_kernels_are_cached_across_processes(tmp_path: Path) -> None:
    """A second process finds every kernel the first one compiled (same source, torch and
    dtype): it compiles nothing."""
    loop_cache = builder.cache_dir() / "loop"
    builder.loop_extension()  # the loop is built once per machine: shared, not rebuilt here
    (tmp_path / "loop").symlink_to(loop_cache, target_is_directory=True)
    script = textwrap.dedent(
        """
        import torch, lstm
        from lstm.compiled import build
        class Cached(lstm.CIFGLSTM):
            pass
        model = Cached(3, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
        x = torch.randn(2, 4, 3, dtype=torch.float64)
        assert model.engine_for(x).name == "compiled", model.engine_for(x)
        model(x)[0].sum().backward()
        print(len(build.COMPILED))
        """
    )
    environment = {**os.environ, "LSTM_CACHE_DIR": str(tmp_path)}
    counts = []
    for _ in range(2):
        completed = subprocess.run(
            [sys.executable, "-c", script], env=environment, capture_output=True, text=True
        )
        assert completed.returncode == 0, completed.stderr
        counts.append(int(completed.stdout.split()[-1]))
    # forward, backward and inference kernels (and the probe of the vector math library),
    # then none
    assert counts[0] >= 3
    assert counts[1] == 0
    assert len(list((tmp_path / "kernels").glob("*.so"))) == counts[0]


# ------------------------------------------------------------------ memory


@pytest.mark.parametrize("name", FAMILIES)
def test_it_saves_no_more_for_backward_than_the_fused_engine(name: str) -> None:
    """Bytes saved for backward, counted with saved-tensor hooks (both engines save
    everything through save_for_backward)."""

    def saved_bytes(model: lstm.Recurrent, x: Tensor) -> int:
        seen: dict[tuple[int, int, tuple[int, ...]], int] = {}

        def pack(tensor: Tensor) -> Tensor:
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape)
            seen[key] = tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(x)
        return sum(seen.values())

    model = build(name, 16, 32, num_layers=2, bidirectional=True)
    x = torch.randn(4, 30, 16, dtype=DOUBLE, requires_grad=True)
    assert model.engine_for(x).name == "compiled"
    model(x)  # the first call traces: not counted
    compiled = saved_bytes(model, x)
    model.engine = "fused"
    assert compiled <= saved_bytes(model, x)
