"""The tracer: a cell's ``forward_cell`` as two element-wise graphs, forward and backward.

The step of a cell in this package has the form

.. math::

    p_t = \\mathrm{i2h}(x_t), \\quad r_t = \\mathrm{h2h}(h_{t-1}), \\quad
    (h_t, s_t) = \\mathrm{pointwise}(p_t, r_t, h_{t-1}, s_{t-1}; \\theta)

where the maps are plain ``nn.Linear`` parts, or ``F.linear`` on the cell's own 2-D weights
(as a step on ``lstm.nn.LSTM`` writes them), and everything else is element-wise or
reduces lanes or a row's features. :func:`trace_step` runs the cell's own ``forward_cell``
with every map replaced by a placeholder that answers with a given tensor (the input maps'
answers are computed for all steps before the loop, the recurrent one's per step by the
loop's matrix product, its bias added inside the step as a parameter), and lets AOT
autograd (``functorch.compile``, with PyTorch's core ATen decompositions, its min-cut
partitioner and aggressive recomputation) split what remains into a forward graph (the
step's outputs and what backward needs) and a backward graph. It traces twice, at two
batch sizes, to tell every value's batch dimension from its others.

A step that does not fit raises :class:`Unfit` with the reason in words a user can act on:
a map applied to something other than the step's input or hidden state, two maps on the
hidden state, a Python ``if`` on a tensor's value, a random operation, ``x`` used outside
the input maps.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, fx, nn
from torch.overrides import TorchFunctionMode

from lstm.checks import check_step_results
from lstm.parameters import view_with
from lstm.state import state_parts

if TYPE_CHECKING:
    from lstm.driver import Recurrent

aten = torch.ops.aten

TRACE_BATCHES = (11, 13)
"""The two batch sizes traced: a dimension whose size differs between them is the batch."""

_RANDOM = {
    "bernoulli",
    "rand",
    "rand_like",
    "randn",
    "randn_like",
    "randint",
    "randint_like",
    "randperm",
    "multinomial",
    "normal",
    "native_dropout",
    "uniform",
    "exponential",
    "geometric",
    "cauchy",
    "log_normal",
    "poisson",
}
"""Operations whose result is random: a step that draws cannot be replayed by a kernel."""


class Unfit(Exception):
    """The cell's step does not fit the compiled engine; the message says why."""


@dataclass(frozen=True)
class Role:
    """What one input of the forward graph is.

    ``kind`` is ``"input map"`` (the answer of the ``nn.Linear`` part ``name`` to ``x``),
    ``"recurrent map"`` (of ``name`` to the hidden state), ``"hidden"``, ``"state"`` (part
    ``index`` of the state) or ``"parameter"`` (``name``, a dotted path on the cell).
    """

    kind: str
    name: str = ""
    index: int = 0
    functional: bool = False
    """A map the step applies as ``F.linear(v, self.<name>, self.<bias>)`` on the cell's own
    tensors (``lstm.nn.LSTM``'s face), not through an ``nn.Linear`` part."""
    bias: str | None = None
    """A functional map's bias tensor (None without one); for the recurrent map, its bias
    as the dotted name of a parameter of the step (it is added inside the kernel: the
    loop's product is ``h W^T`` alone)."""


@dataclass
class StepGraphs:
    """A traced step: both graphs, their values' batch dimensions, and what each input is.

    Attributes
    ----------
    forward, backward : torch.fx.GraphModule
        The element-wise step and its backward (core ATen), traced at ``TRACE_BATCHES[0]``.
    batch_dims : dict of str to int, None or tuple
        Every node's batch dimension, in both graphs (names are unique across them).
    roles : list of Role
        One per forward input, in order.
    outputs : int
        The forward graph's first ``outputs`` results are the step's hidden output and state
        parts; the rest are saved for backward, in the backward graph's input order.
    saved_inputs : dict of int to int
        Saved values that are forward inputs as they are: saved position -> input position.
    tangents : int
        Gradients the backward graph takes, one per step output, after the saved values.
    """

    forward: fx.GraphModule
    backward: fx.GraphModule
    batch_dims: dict[str, Any]
    roles: list[Role]
    outputs: int
    saved_inputs: dict[int, int]
    tangents: int


class _Answer(nn.Module):
    """Stands in for one map while tracing (an ``nn.Linear`` part, or a weight the step
    gives to ``F.linear``): answers with a given tensor, and notes what it was applied to."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.answers: dict[str, Tensor] = {}
        self.step_input: Tensor | None = None
        self.hidden: Tensor | None = None
        self.seen: set[str] = set()
        self.biases: set[str | None] = set()

    def forward(self, value: Tensor) -> Tensor:
        if value is self.step_input:
            self.seen.add("x")
            return self.answers["x"].clone()
        if value is self.hidden:
            self.seen.add("hidden")
            return self.answers["hidden"].clone()
        raise Unfit(
            f"{self.name} is applied to a value computed inside forward_cell, not to its x "
            "or hidden argument: a matrix product inside the step"
        )


class _FunctionalMaps(TorchFunctionMode):
    """Answers ``F.linear(v, w, b)`` where ``w`` is one of the cell's own 2-D tensors (by
    identity) with that weight's :class:`_Answer`; ``b`` must be one of its 1-D tensors."""

    def __init__(self, weights: dict[int, _Answer], biases: dict[int, str]) -> None:
        super().__init__()
        self.weights, self.biases = weights, biases

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is nn.functional.linear:
            value, weight, *rest = [*args, *dict(kwargs).values()]
            answer = self.weights.get(id(weight))
            if answer is not None:
                bias = rest[0] if rest else None
                if bias is not None and id(bias) not in self.biases:
                    raise Unfit(
                        f"F.linear with {answer.name} is given a bias that is not one of the "
                        "cell's own tensors"
                    )
                answer.biases.add(None if bias is None else self.biases[id(bias)])
                return answer(value)
        return func(*args, **kwargs)


@dataclass(frozen=True)
class MapUse:
    """What a probe step found one map applied to."""

    applied: str
    """``"x"`` or ``"hidden"``."""
    functional: bool
    bias: str | None = None


def linear_parts(cell: Recurrent) -> dict[str, nn.Linear]:
    """The plain ``nn.Linear`` parts of a cell (what the placeholders replace)."""
    parts = cell.cell_parts(*cell.cell_index)
    return {name: part for name, part in parts.items() if type(part) is nn.Linear}


def _tensor_parts(cell: Recurrent, rank: int) -> dict[str, Tensor]:
    parts = cell.cell_parts(*cell.cell_index)
    return {n: p for n, p in parts.items() if isinstance(p, Tensor) and p.dim() == rank}


@contextmanager
def answered(
    cell: Recurrent, answers: dict[str, _Answer], others: dict[str, Any] | None = None
) -> Iterator[Recurrent]:
    """A view of ``cell`` whose maps answer with ``answers`` (by the map's name: an
    ``nn.Linear`` part's, or a weight tensor's for ``F.linear``), active inside the block;
    ``others`` replaces other parts of the view."""
    linears = linear_parts(cell)
    modules = {name: answer for name, answer in answers.items() if name in linears}
    weights = _tensor_parts(cell, 2)
    by_weight = {id(weights[name]): a for name, a in answers.items() if name in weights}
    biases = {id(tensor): name for name, tensor in _tensor_parts(cell, 1).items()}
    with _FunctionalMaps(by_weight, biases):
        yield view_with(cell, {**modules, **(others or {})}, cell.cell_index)


@dataclass
class Probe:
    """What one real step showed: the maps and what each is applied to, and the other
    module parts given ``x`` itself (named as on the model)."""

    maps: dict[str, MapUse]
    given_x: list[str]


@contextmanager
def _watching_x(cell: Recurrent, x: Tensor, found: list[str]) -> Iterator[None]:
    """Within the block, notes in ``found`` each module part (not a plain ``nn.Linear``)
    that is called with ``x`` itself."""
    handles = []
    for name, part in cell.cell_parts(*cell.cell_index).items():
        if isinstance(part, nn.Module) and type(part) is not nn.Linear:
            label = f"{name}{cell.cell_suffix(*cell.cell_index)} (a {type(part).__name__})"

            def seen(_: nn.Module, args: tuple[Any, ...], label: str = label) -> None:
                if args and args[0] is x and label not in found:
                    found.append(label)

            handles.append(part.register_forward_pre_hook(seen))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def probe_maps(cell: Recurrent, batch: int, dtype: torch.dtype) -> Probe:
    """Run one real step to learn what each map is applied to, ``x`` or ``hidden``: the
    ``nn.Linear`` parts, and the 2-D tensors the step gives to ``F.linear`` (maps the step
    does not call are left out)."""
    linears = linear_parts(cell)
    candidates = {name: part.out_features for name, part in linears.items()}
    candidates |= {name: w.shape[0] for name, w in _tensor_parts(cell, 2).items()}
    answers = {name: _Answer(name) for name in candidates}
    x = torch.zeros(batch, cell.layer_input_size(cell.cell_index[0]), dtype=dtype)
    hidden, state = cell.init_hidden(x.unsqueeze(1))
    for name, answer in answers.items():
        answer.step_input, answer.hidden = x, hidden
        rows = torch.zeros(batch, candidates[name], dtype=dtype)
        answer.answers = {"x": rows, "hidden": rows}
    given_x: list[str] = []
    try:
        with torch.no_grad(), answered(cell, answers) as view, _watching_x(cell, x, given_x):
            new_hidden, new_state = view.forward_cell(x, hidden, state)
        owner = f"{type(cell).__name__}.forward_cell"
        check_step_results(owner, new_hidden, new_state, hidden, state)
    except Unfit:
        raise
    except Exception as error:  # the cell's own error; the engine that runs it will raise it
        raise Unfit(_explain(error, "forward_cell raised")) from None
    found: dict[str, MapUse] = {}
    for name, answer in answers.items():
        if len(answer.seen) > 1:
            raise Unfit(f"{name} is applied to both x and hidden in one step")
        if len(answer.biases) > 1:
            raise Unfit(f"F.linear with {name} is given different biases in one step")
        if answer.seen:
            bias = next(iter(answer.biases)) if answer.biases else None
            found[name] = MapUse(answer.seen.pop(), name not in linears, bias)
    recurrent = [name for name, use in found.items() if use.applied == "hidden"]
    if len(recurrent) > 1:
        raise Unfit(
            f"{' and '.join(recurrent)} are both applied to hidden: the compiled loop does one "
            "recurrent product per step"
        )
    return Probe(found, given_x)


def map_tensors(cell: Recurrent, role: Role) -> tuple[Tensor, Tensor | None]:
    """The weight and bias of a map role on ``cell`` (a layer-cell view)."""
    if role.functional:
        tensors = _tensor_parts(cell, 2) | _tensor_parts(cell, 1)
        return tensors[role.name], None if role.bias is None else tensors[role.bias]
    linear = cell._modules[role.name]
    assert isinstance(linear, nn.Linear)
    return linear.weight, linear.bias


def trace_step(cell: Recurrent, dtype: torch.dtype) -> StepGraphs:
    """Trace ``cell``'s ``forward_cell`` (a layer-cell view) into :class:`StepGraphs`.

    Raises
    ------
    Unfit
        If the step does not have the compiled engine's form; the message says why.
    """
    # Tracing draws random inputs: the caller's random stream must not see it (a model's
    # first call, which traces, would otherwise draw other dropout masks than its second).
    with torch.random.fork_rng(devices=[]):
        probe = probe_maps(cell, TRACE_BATCHES[0], dtype)
        with torch.enable_grad():  # AOT autograd traces the backward only with grad on
            traces = [_trace_once(cell, probe, batch, dtype) for batch in TRACE_BATCHES]
    first, second = traces
    batch_dims = {}
    for graph_a, graph_b in ((first[0], second[0]), (first[1], second[1])):
        batch_dims.update(_batch_dims(graph_a, graph_b))
    forward, backward, roles, outputs, tangents = first
    saved_inputs = _saved_inputs(forward, outputs)
    return StepGraphs(forward, backward, batch_dims, roles, outputs, saved_inputs, tangents)


def _trace_once(
    cell: Recurrent, probe: Probe, batch: int, dtype: torch.dtype
) -> tuple[fx.GraphModule, fx.GraphModule, list[Role], int, int]:
    maps = probe.maps
    skipped = {*linear_parts(cell), *maps}
    skipped |= {use.bias for use in maps.values() if use.bias is not None}
    parameters = _own_parameters(cell, skipped)
    x = torch.zeros(batch, cell.layer_input_size(cell.cell_index[0]), dtype=dtype)
    hidden0, state0 = cell.init_hidden(x.unsqueeze(1))
    parts = state_parts(state0)
    roles = [Role("x")]
    roles += [
        Role("input map", name, 0, use.functional, use.bias)
        for name, use in maps.items()
        if use.applied == "x"
    ]
    for name, use in maps.items():
        if use.applied == "hidden":  # its bias is added inside the kernel: a parameter
            role = Role("recurrent map", name, 0, use.functional, use.bias)
            bias = map_tensors(cell, role)[1]
            if bias is not None and not use.functional:
                role = Role("recurrent map", name, 0, False, f"{name}.bias")
            if bias is not None:
                parameters[role.bias or ""] = bias
            roles.append(role)
    roles += [Role("hidden")] + [Role("state", index=i) for i in range(len(parts))]
    roles += [Role("parameter", name) for name in parameters]
    tensors = [x.clone()]
    for role in roles[1:]:
        if "map" in role.kind:
            tensors.append(torch.randn(batch, map_tensors(cell, role)[0].shape[0], dtype=dtype))
    tensors += [torch.randn_like(hidden0)] + [torch.randn_like(p) for p in parts]
    tensors += [p.detach().clone() for p in parameters.values()]
    tensors = [tensors[0]] + [t.requires_grad_() for t in tensors[1:]]
    run = _step_function(cell, roles, skipped, isinstance(state0, tuple))
    forward, backward = _aot_graphs(run, tensors)
    _refuse_random(forward)
    _refuse_x(forward, probe)
    tangents = sum(
        1 for n in backward.graph.nodes if n.op == "placeholder" and n.name.startswith("tangents")
    )
    return forward, backward, roles, 1 + len(parts), tangents


def _step_function(
    cell: Recurrent, roles: list[Role], skipped: set[str], tuple_state: bool
) -> Callable[..., tuple[Tensor, ...]]:
    """``forward_cell`` as a function of one tensor per role: the traced function."""
    answers = {role.name: _Answer(role.name) for role in roles if "map" in role.kind}

    def run(*inputs: Tensor) -> tuple[Tensor, ...]:
        step_input, hidden = inputs[0], inputs[[r.kind for r in roles].index("hidden")]
        pairs = list(zip(roles[1:], inputs[1:], strict=True))
        values = {role.name: value for role, value in pairs if role.kind == "parameter"}
        state = [value for role, value in pairs if role.kind == "state"]
        for role, value in pairs:
            answer = answers.get(role.name) if "map" in role.kind else None
            if answer is None:
                continue
            if role.kind == "input map":
                answer.answers = {"x": value}
            else:  # the recurrent product comes without its bias, which is a parameter here
                bias = values[role.bias] if role.bias is not None else None
                answer.answers = {"hidden": value if bias is None else value + bias}
            answer.step_input, answer.hidden = step_input, hidden
        given = tuple(state) if tuple_state else state[0]
        with answered(cell, answers, _substituted(cell, skipped, values)) as view:
            new_hidden, new_state = view.forward_cell(step_input, hidden, given)
        return (new_hidden, *state_parts(new_state))

    return run


def _aot_graphs(
    run: Callable[..., Any], tensors: list[Tensor]
) -> tuple[fx.GraphModule, fx.GraphModule]:
    """AOT autograd's forward and backward graphs of ``run`` at ``tensors``."""
    from functorch.compile import (  # type: ignore[import-untyped]
        aot_function,
        config,
        make_boxed_func,
        min_cut_rematerialization_partition,
    )

    captured: dict[str, fx.GraphModule] = {}

    def keep(which: str) -> Any:
        def compiler(module: fx.GraphModule, _: Any) -> Any:
            captured[which] = module
            return make_boxed_func(module.forward)

        return compiler

    compiled = aot_function(
        run,
        fw_compiler=keep("forward"),
        bw_compiler=keep("backward"),
        partition_fn=min_cut_rematerialization_partition,
        decompositions=decompositions(),
    )
    try:  # recompute what is cheap in the backward kernel rather than keep it per step
        with config.patch(aggressive_recomputation=True):
            results = compiled(*tensors)
        torch.autograd.backward(results, [torch.ones_like(r) for r in results])
    except Unfit:
        raise
    except Exception as error:  # what tracing refuses, in the user's words
        raise Unfit(_explain(error)) from None
    if "backward" not in captured:
        raise Unfit("forward_cell's outputs do not depend on its inputs")
    return captured["forward"], captured["backward"]


def _refuse_x(forward: fx.GraphModule, probe: Probe) -> None:
    """Refuse a step that reads ``x`` other than through its input maps."""
    step_input = next(n for n in forward.graph.nodes if n.op == "placeholder")
    if step_input.users and probe.given_x:
        raise Unfit(
            f"{' and '.join(probe.given_x)} is applied to x: the compiled engine takes only "
            "plain nn.Linear parts (or F.linear on the cell's own weights) out of the step, "
            "and a matrix product inside the step does not fit"
        )
    if step_input.users:
        raise Unfit(
            "forward_cell uses x other than through its input maps (plain nn.Linear parts "
            "or F.linear on the cell's own weights): only the maps' answers reach the "
            "compiled step"
        )


def _substituted(cell: Recurrent, skipped: set[str], values: dict[str, Tensor]) -> dict[str, Any]:
    """The cell's other parts with their parameters replaced by ``values`` (dotted names):
    tensors in place of parameter parts, shallow copies of module parts (the cell's own
    modules are never touched)."""
    parts: dict[str, Any] = {}
    for name, part in cell.cell_parts(*cell.cell_index).items():
        if name in skipped or part is None:
            continue
        if isinstance(part, nn.Module):
            parts[name] = _module_with(part, name, values)
        elif name in values:
            parts[name] = values[name]
    return parts


def _module_with(module: nn.Module, prefix: str, values: dict[str, Tensor]) -> nn.Module:
    copy = object.__new__(type(module))
    copy.__dict__.update(module.__dict__)
    copy.__dict__["_parameters"] = {
        name: values.get(f"{prefix}.{name}", parameter)
        for name, parameter in module._parameters.items()
    }
    copy.__dict__["_modules"] = {
        name: None if child is None else _module_with(child, f"{prefix}.{name}", values)
        for name, child in module._modules.items()
    }
    return copy


def _own_parameters(cell: Recurrent, skipped: set[str]) -> dict[str, Tensor]:
    """The cell's parameters besides its maps (``skipped``), by dotted name on the view."""
    found: dict[str, Tensor] = {}
    for name, part in cell.cell_parts(*cell.cell_index).items():
        if name in skipped or part is None:
            continue
        if isinstance(part, nn.Module):
            for inner, parameter in part.named_parameters():
                found[f"{name}.{inner}"] = parameter
        elif isinstance(part, Tensor):
            found[name] = part
    return found


def decompositions() -> dict[Any, Any]:
    """Core ATen decompositions, plus those that turn layer norm, softmax and a few
    activations into the reductions and element-wise operations the generator knows, and
    ``stack`` as a concatenation along a new dimension."""
    from torch._decomp import core_aten_decompositions, get_decompositions

    table = dict(core_aten_decompositions())
    table.update(
        get_decompositions(
            [
                aten.native_layer_norm,
                aten.native_layer_norm_backward,
                aten._softmax,
                aten._log_softmax,
                aten.gelu,
                aten.gelu_backward,
                # activations that ATen keeps whole, as element-wise formulas
                aten.hardtanh,
                aten.hardtanh_backward,
                aten.elu,
                aten.elu_backward,
                aten.celu,
                aten.selu,
                aten.hardswish,
                aten.hardswish_backward,
                aten.hardshrink,
                aten.softshrink,
                aten.threshold_backward,
                aten.logit,
                aten.frac,
                aten.xlogy,
            ]
        )
    )
    table[aten.stack.default] = _stack
    return table


def _stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``torch.stack`` as a concatenation along a new dimension: the core decomposition
    concatenates along an existing one and reshapes, which merges lanes into the batch."""
    rank = tensors[0].dim() + 1
    return torch.cat([t.unsqueeze(dim % rank) for t in tensors], dim % rank)


def _explain(error: Exception, failure: str = "tracing forward_cell failed:") -> str:
    text = str(error).strip().splitlines()
    name = type(error).__name__
    first = text[0] if text else name
    if "DataDependent" in name or "data-dependent" in first or "GuardOnDataDependent" in name:
        return (
            "forward_cell branches on a tensor's value (a Python if on a tensor): the step "
            "cannot be traced once and replayed"
        )
    return f"{failure} {name}: {first}"


def _refuse_random(graph: fx.GraphModule) -> None:
    for node in graph.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        if name in _RANDOM:
            raise Unfit(
                f"forward_cell draws random numbers ({name}): a kernel cannot replay them "
                "(the same cell in eval mode, or without random options, compiles)"
            )


def _batch_dims(first: fx.GraphModule, second: fx.GraphModule) -> dict[str, Any]:
    """Each node's batch dimension: where its shape differs between the two traces."""
    nodes_a, nodes_b = list(first.graph.nodes), list(second.graph.nodes)
    if [n.target for n in nodes_a] != [n.target for n in nodes_b]:
        raise Unfit("forward_cell traces differently at different batch sizes")
    found: dict[str, Any] = {}
    for a, b in zip(nodes_a, nodes_b, strict=True):
        if a.op == "output":
            continue
        value_a, value_b = a.meta.get("val"), b.meta.get("val")
        if isinstance(value_a, (tuple, list)):
            found[a.name] = tuple(
                _batch_dim(a.name, x, y) for x, y in zip(value_a, value_b, strict=True)
            )
        else:
            found[a.name] = _batch_dim(a.name, value_a, value_b)
    return found


def _batch_dim(name: str, first: Any, second: Any) -> int | None:
    if not isinstance(first, Tensor) or not isinstance(second, Tensor):
        return None
    if first.dim() != second.dim():
        raise Unfit(f"the rank of {name} depends on the batch size")
    differing = [d for d in range(first.dim()) if first.shape[d] != second.shape[d]]
    if len(differing) > 1:
        raise Unfit(f"{name} has the batch in more than one dimension")
    if differing and (first.shape[differing[0]], second.shape[differing[0]]) != TRACE_BATCHES:
        raise Unfit(f"a dimension of {name} grows with the batch but is not the batch")
    return differing[0] if differing else None


def _saved_inputs(forward: fx.GraphModule, outputs: int) -> dict[int, int]:
    """Saved values that are forward inputs as they are (the loop has them already)."""
    placeholders = [n for n in forward.graph.nodes if n.op == "placeholder"]
    result = next(n for n in forward.graph.nodes if n.op == "output").args[0]
    found = {}
    for position, item in enumerate(result[outputs:]):
        if isinstance(item, fx.Node) and item in placeholders:
            found[position] = placeholders.index(item)
    return found


def output_nodes(graph: fx.GraphModule) -> Sequence[Any]:
    """The values a graph returns, in order."""
    result = next(n for n in graph.graph.nodes if n.op == "output").args[0]
    return result if isinstance(result, (tuple, list)) else (result,)


__all__ = [
    "MapUse",
    "Probe",
    "Role",
    "StepGraphs",
    "Unfit",
    "answered",
    "decompositions",
    "linear_parts",
    "map_tensors",
    "probe_maps",
    "trace_step",
]
_ = operator  # the generator reads getitem nodes by operator.getitem
