r"""The compiled engine's Python side: what is built for a cell, and one direction as one node.

:func:`compiled_step` traces a cell's step once (:mod:`lstm.compiled.trace`), generates its
three kernels (:mod:`lstm.compiled.codegen`: the forward that saves what backward reads,
the backward, the forward for calls without gradients) and builds them
(:mod:`lstm.compiled.build`); the result is cached per class and configuration (the cell's
plain attributes, its parameters' shapes, the dtype), so a model pays for it at its first
call only (in a worker thread, away from the caller's thread-local state), and a kernel
is compiled once per machine.

:func:`run_compiled_direction` runs one direction of one layer: the input maps of all steps
as matrix products under autograd, then the fixed C++ loop (``loop.cpp``), as one autograd
node (:class:`_CompiledDirection`; everything it keeps goes through ``save_for_backward``)
whose backward is the loop's backward, the recurrent weight's gradient one product over
all steps (the recurrent bias is a parameter of the step, its gradient summed by the
backward kernel):

.. math::

    \partial W_{hh} = \sum_t \partial r_t^\top h_{t-1}.

A backward that is itself differentiated (``create_graph=True``) recomputes the direction
step by step with the cell's own ``forward_cell`` under autograd, so higher derivatives are
those of the reference path.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, fx, nn

from lstm.compiled import build, codegen, trace
from lstm.compiled.trace import Role, StepGraphs, Unfit
from lstm.state import CellState, from_parts, state_parts

if TYPE_CHECKING:
    from lstm.driver import Recurrent

_BY_TIME, _BY_STEP, _BY_STEP_NEXT, _FIXED = 1, 2, 3, 0
_DTYPES = {"float": torch.float32, "double": torch.float64, "bool": torch.bool}
_DTYPES["int64"] = torch.int64


@dataclass
class CompiledStep:
    """One cell configuration's traced step and its three loaded kernels: the forward that
    saves what backward needs, the backward, and the forward for inference (outputs only)."""

    graphs: StepGraphs
    forward: build.LoadedKernel
    backward: build.LoadedKernel
    inference: build.LoadedKernel
    hidden_size: int
    saved: list[codegen.Buffer | None]
    """The forward kernel's saved outputs (None for those that are forward inputs)."""

    def reads(self, kind: str, index: int = 0) -> bool:
        """Whether the backward kernel reads the forward input of this kind (a state part's
        ``index``) at every step: its history must then be kept."""
        roles = self.graphs.roles
        return any(
            roles[position].kind == kind and roles[position].index == index
            for position in self.graphs.saved_inputs.values()
        )


_CACHE: dict[Any, CompiledStep | str] = {}
_LOCK = threading.Lock()


def _attributes(module: nn.Module) -> tuple[Any, ...]:
    """The module's own attributes a ``forward_cell`` may read: plain values (as constants of
    the trace) by value, functions set on the instance (an ``update_hidden``) by identity."""
    plain = (int, float, bool, str, type(None))
    items: list[tuple[str, Any]] = []
    for name, value in module.__dict__.items():
        if name in ("engine", "cell_index") or name.startswith("_"):
            continue
        if isinstance(value, plain) or (
            isinstance(value, tuple) and all(isinstance(v, plain) for v in value)
        ):
            items.append((name, value))
        elif callable(value) and not isinstance(value, nn.Module):
            items.append((name, ("callable", id(value))))
    return tuple(sorted(items))


def step_key(cell: Recurrent, dtype: torch.dtype) -> tuple[Any, ...]:
    """What a cell's compiled step depends on: its class, the dtype, its plain attributes,
    and the kind and shape of each part (an ``nn.Linear``'s in-features aside: the step sees
    its answer only, so every layer of a stack shares one compiled step)."""
    shapes: list[Any] = []
    for name, part in cell.cell_parts(*cell.cell_index).items():
        if type(part) is nn.Linear:
            shapes.append((name, nn.Linear, part.out_features, part.bias is not None))
        elif isinstance(part, nn.Module):
            shapes += [(f"{name}.{n}", tuple(p.shape)) for n, p in part.named_parameters()]
            shapes.append((name, type(part), _attributes(part)))
        elif isinstance(part, Tensor):
            shapes.append((name, tuple(part.shape)))
        else:
            shapes.append((name, type(part)))
    return (type(cell), dtype, _attributes(cell), tuple(shapes))


def compiled_off() -> str | None:
    """Why the compiled engine is switched off in this process (``LSTM_COMPILED=0``), or None."""
    if os.environ.get("LSTM_COMPILED", "1").strip().lower() in ("0", "false", "no", "off"):
        return "it is switched off (LSTM_COMPILED=0)"
    return None


def compiled_step(module: Recurrent, dtype: torch.dtype) -> CompiledStep:
    """The compiled step of one cell (``module`` is a layer-cell view, or the module for its
    first cell), built at the first call (then cached).

    Raises
    ------
    Unfit
        If the step does not fit, or the engine cannot be built here, saying why (the same
        reason again at later calls for the same configuration).
    """
    key = step_key(module, dtype)
    with _LOCK:
        found = _CACHE.get(key)
        if found is None:
            try:
                build.loop_extension()
                # In a thread of its own: the caller's thread-local state (inference mode,
                # saved-tensor hooks, autocast) must neither break the trace nor see it.
                with ThreadPoolExecutor(max_workers=1) as worker:
                    found = worker.submit(_build, module, dtype).result()
            except (Unfit, codegen.Unsupported, build.BuildError) as error:
                found = str(error)
            _CACHE[key] = found
    if isinstance(found, str):
        raise Unfit(found)
    return found


def _build(module: Recurrent, dtype: torch.dtype) -> CompiledStep:
    graphs = trace.trace_step(module, dtype)
    unit = module.hidden_size
    scalar = "float" if dtype == torch.float32 else "double"
    # the same name, so the same source, in every process: one build; a C identifier
    name = re.sub(r"\W", "_", type(module).__name__.lower()).lstrip("_0123456789") or "cell"
    graphs_to_write = {
        "forward": _forward_graph(graphs, keep_saved=True),
        "backward": graphs.backward.graph,
        "inference": _forward_graph(graphs, keep_saved=False),
    }
    try:
        kernels = {
            kind: codegen.generate(graph, graphs.batch_dims, unit, dtype, f"{name}_{kind}")
            for kind, graph in graphs_to_write.items()
        }
    except codegen.Unsupported as error:
        raise Unfit(f"the generator cannot write this step: {error}") from None
    except Exception as error:  # a generator bug must cost speed, never the user's call
        raise Unfit(
            f"the generator failed on this step ({type(error).__name__}: {error}); this is a "
            "bug of lstm.compiled: please report it with the cell's forward_cell"
        ) from None
    if graphs.tangents != graphs.outputs:
        raise Unfit("a step output does not depend on the inputs (no gradient flows back)")
    saved = list(kernels["forward"].outputs[graphs.outputs :])
    loaded = {kind: build.kernel_library(kernel, scalar) for kind, kernel in kernels.items()}
    return CompiledStep(
        graphs, loaded["forward"], loaded["backward"], loaded["inference"], unit, saved
    )


def _forward_graph(graphs: StepGraphs, keep_saved: bool) -> fx.Graph:
    """The forward graph to write: with the values saved for backward (those that are its
    own inputs left out, as None), or without any (inference: what only they need dropped)."""
    graph = fx.Graph()
    copied: dict[fx.Node, fx.Node] = {}
    result = graph.graph_copy(graphs.forward.graph, copied)
    assert isinstance(result, (tuple, list))
    values: list[Any] = list(result)
    if keep_saved:
        for position in graphs.saved_inputs:
            values[graphs.outputs + position] = None
    else:
        values = values[: graphs.outputs]
    graph.output(tuple(values))
    graph.eliminate_dead_code()
    for old, new in copied.items():
        if new.name != old.name:
            raise Unfit(f"copying the forward graph renamed {old.name}")
    return graph


# ---------------------------------------------------------------------- one direction
def _layout(buffer: codegen.Buffer, batch: int) -> list[int]:
    return [batch if d == buffer.batch_dim else s for d, s in enumerate(buffer.shape)]


def _part(cell: Recurrent, name: str) -> Any:
    value: Any = cell
    for piece in name.split("."):
        value = getattr(value, piece)
    return value


@dataclass
class _Direction:
    """What one call on one direction keeps besides tensors: the step, the cell, the ragged
    mask and the direction. Its tensors travel through ``save_for_backward``."""

    step: CompiledStep
    cell: Any
    mask: Tensor | None
    reverse: bool


@dataclass
class _Tensors:
    """The tensors of one call on one direction, as the kernels' slots need them."""

    maps: list[Tensor]
    weight: Tensor | None
    bias: Tensor | None
    params: list[Tensor]
    hidden0: Tensor
    states0: list[Tensor]


def run_compiled_direction(
    cell: Recurrent, layer_input: Tensor, initial: CellState, mask: Tensor | None, reverse: bool
) -> tuple[Tensor, CellState]:
    """One direction of one layer on the compiled engine (:data:`lstm.scan.RunDirection`).

    Parameters
    ----------
    cell : Recurrent
        The layer-cell view; :func:`lstm.engines.choose_engine` checked that its step fits.
    layer_input : Tensor of shape (batch, seq_len, features)
    initial : (hidden, state)
    mask : Tensor of shape (seq_len, batch, 1), bool, or None
    reverse : bool

    Returns
    -------
    outputs : Tensor of shape (batch, seq_len, hidden)
        Zero past each sequence's end.
    (hidden, state) : the final state, taken at each sequence's end.
    """
    step = compiled_step(cell, layer_input.dtype)
    roles = step.graphs.roles
    inputs = layer_input.transpose(0, 1)  # (T, B, F)
    maps = [
        nn.functional.linear(inputs, *trace.map_tensors(cell, role)).contiguous()
        for role in roles
        if role.kind == "input map"
    ]
    recurrent = next((r for r in roles if r.kind == "recurrent map"), None)
    weight = None if recurrent is None else trace.map_tensors(cell, recurrent)[0]
    bias = None  # the recurrent bias is one of the step's parameters (added in the kernel)
    params = [_part(cell, role.name).contiguous() for role in roles if role.kind == "parameter"]
    running = None if mask is None else mask.squeeze(-1).to(torch.uint8).contiguous()
    direction = _Direction(step, cell, running, reverse)
    hidden, state = initial
    parts = list(state_parts(state))
    tensors = _Tensors(
        maps, weight, bias, params, hidden.contiguous(), [p.contiguous() for p in parts]
    )
    everything = [*maps, hidden, *parts, *params, *(t for t in (weight, bias) if t is not None)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in everything):
        results = _CompiledDirection.apply(  # type: ignore[no-untyped-call]
            direction, len(maps), len(parts), *maps, weight, bias, hidden, *parts, *params
        )
        outputs, final, new_parts = results[0], results[1], list(results[2:])
    else:
        with torch.no_grad():
            outputs, final, new_parts, _ = _forward(direction, tensors, record=False)
    return outputs.transpose(0, 1), (final, from_parts(new_parts, state))


@dataclass
class _Record:
    """What the forward loop leaves for the backward one."""

    hidden_history: Tensor
    state_history: list[Tensor]
    recurrent: Tensor | None
    saved: list[Tensor | None]


def _forward(
    direction: _Direction, given: _Tensors, record: bool = True
) -> tuple[Tensor, Tensor, list[Tensor], _Record]:
    """The forward loop: outputs ``(T, B, H)`` in time order, the final hidden and state
    parts, and the record for backward: the hidden history, and the histories of the state
    parts and of the recurrent answer only where the backward kernel reads them (else rings
    of two and one entries). Without ``record`` (no gradient will be asked for) the
    inference kernel runs and nothing is kept for backward."""
    step = direction.step
    hidden0 = given.hidden0
    steps, batch = _steps_and_batch(given)
    ragged = direction.mask is not None
    kept = steps + 1 if record else 2  # the hidden history: the recurrent weight's gradient
    hidden_history = hidden0.new_empty((kept if ragged else steps + 1, *hidden0.shape))
    hidden_history[0] = hidden0
    state_history = []
    for index, state in enumerate(given.states0):
        history = state.new_empty(
            (steps + 1 if record and step.reads("state", index) else 2, *state.shape)
        )
        history[0] = state
        state_history.append(history)
    recurrent = None
    if given.weight is not None:
        count = steps if record and step.reads("recurrent map") else 1
        recurrent = hidden0.new_empty((count, batch, given.weight.shape[0]))
    saved = [
        None
        if buffer is None or not record
        else torch.empty((steps, *_layout(buffer, batch)), dtype=_DTYPES[buffer.dtype])
        for buffer in step.saved
    ]
    result = _Record(hidden_history, state_history, recurrent, saved)
    slots = _input_slots(step.graphs.roles, given, result)
    slots.append((hidden_history, _BY_STEP_NEXT))
    slots += [(history, _BY_STEP_NEXT) for history in state_history]
    slots += [(tensor, _BY_STEP) for tensor in saved if tensor is not None]
    outputs = hidden0.new_empty((steps, *hidden0.shape)) if ragged else hidden0.new_empty(0)
    build.loop_extension().forward(
        (step.forward if record else step.inference).pointer,
        [tensor for tensor, _ in slots],
        [source for _, source in slots],
        steps,
        hidden_history,
        state_history,
        given.weight,
        given.bias,
        recurrent,
        direction.mask,
        outputs,
        direction.reverse,
    )
    if not ragged:
        outputs = hidden_history[1:]
        if direction.reverse:
            outputs = outputs.flip(0)
    final = hidden_history[steps % hidden_history.shape[0]]
    finals = [history[steps % history.shape[0]] for history in state_history]
    return outputs, final, finals, result


def _steps_and_batch(given: _Tensors) -> tuple[int, int]:
    if given.maps:
        return given.maps[0].shape[0], given.maps[0].shape[1]
    raise Unfit("a step without an input map: nothing says how many steps there are")


def _input_slots(roles: list[Role], given: _Tensors, record: _Record) -> list[tuple[Tensor, int]]:
    """Where the forward kernel reads each of its inputs (``roles``), and how it steps: also
    where backward reads a saved value that is a forward input."""
    maps, params = iter(given.maps), iter(given.params)
    slots = []
    for role in roles:
        if role.kind == "x":
            slots.append((record.hidden_history, _FIXED))  # never read
        elif role.kind == "input map":
            slots.append((next(maps), _BY_TIME))
        elif role.kind == "recurrent map":
            assert record.recurrent is not None
            slots.append((record.recurrent, _BY_STEP))
        elif role.kind == "hidden":
            slots.append((record.hidden_history, _BY_STEP))
        elif role.kind == "state":
            slots.append((record.state_history[role.index], _BY_STEP))
        else:
            slots.append((next(params), _FIXED))
    return slots


class _CompiledDirection(torch.autograd.Function):
    """:func:`run_compiled_direction` under autograd: one node for the whole direction."""

    @staticmethod
    def forward(
        ctx: Any,
        direction: _Direction,
        map_count: int,
        state_count: int,
        *rest: Any,
    ) -> tuple[Tensor, ...]:
        given = _given(rest, map_count, state_count)
        outputs, final, finals, record = _forward(direction, given)
        ctx.direction = direction
        ctx.counts = (map_count, state_count, len(given.params))
        ctx.shapes = (outputs.shape, [f.shape for f in finals])
        ctx.present = [t is not None for t in record.saved]
        ctx.save_for_backward(
            *given.maps,
            given.weight,
            given.bias,
            given.hidden0,
            *given.states0,
            *given.params,
            record.hidden_history,
            *record.state_history,
            record.recurrent,
            *(t for t in record.saved if t is not None),
        )
        return (outputs, final, *finals)

    @staticmethod
    def backward(ctx: Any, d_outputs: Tensor, d_hidden: Tensor, *d_states: Tensor) -> Any:
        if torch.is_grad_enabled():
            return (None, None, None, *_differentiable_backward(ctx, d_outputs, d_hidden, d_states))
        given, record = _unpack(ctx)
        grads = _backward(ctx.direction, given, record, d_outputs, d_hidden, list(d_states))
        return (None, None, None, *grads)


def _given(rest: Sequence[Any], map_count: int, state_count: int) -> _Tensors:
    """:class:`_Tensors` from :class:`_CompiledDirection`'s inputs after its settings."""
    maps = list(rest[:map_count])
    weight, bias, hidden0 = rest[map_count : map_count + 3]
    states0 = list(rest[map_count + 3 : map_count + 3 + state_count])
    params = list(rest[map_count + 3 + state_count :])
    return _Tensors(maps, weight, bias, params, hidden0, states0)


def _unpack(ctx: Any) -> tuple[_Tensors, _Record]:
    map_count, state_count, param_count = ctx.counts
    saved = list(ctx.saved_tensors)
    head = 3 + map_count + state_count + param_count
    given = _given(saved[:head], map_count, state_count)
    hidden_history = saved[head]
    state_history = saved[head + 1 : head + 1 + state_count]
    recurrent = saved[head + 1 + state_count]
    rest = iter(saved[head + 2 + state_count :])
    buffers = [next(rest) if present else None for present in ctx.present]
    return given, _Record(hidden_history, state_history, recurrent, buffers)


@dataclass
class _Gradients:
    """The buffers the backward loop writes, beside its slots."""

    maps: list[Tensor | None]
    recurrent: Tensor | None
    params: list[Tensor | None]
    direct_slot: int = -1
    state_slots: list[int] = field(default_factory=list)


def _backward(
    direction: _Direction,
    given: _Tensors,
    record: _Record,
    d_outputs: Tensor | None,
    d_hidden: Tensor | None,
    d_states: list[Tensor | None],
) -> list[Tensor | None]:
    """Gradients of every tensor input of :class:`_CompiledDirection`: the input maps'
    answers, the recurrent weight and bias, the initial hidden and state parts, the
    parameters (None where nothing flows)."""
    step, graphs = direction.step, direction.step.graphs
    hidden0, mask = given.hidden0, direction.mask
    steps = record.hidden_history.shape[0] - 1
    d_out = _dense(d_outputs, (steps, *hidden0.shape), hidden0)
    if mask is not None:  # an output past a sequence's end is a constant zero
        d_out = d_out.masked_fill((mask == 0).view(*mask.shape, *[1] * (d_out.dim() - 2)), 0)
    d_hidden_final = _dense(d_hidden, hidden0.shape, hidden0)
    d_states_final = [_dense(d, s.shape, s) for d, s in zip(d_states, given.states0, strict=True)]
    slots = _saved_slots(graphs, given, record)
    hidden_slot = len(slots)
    slots.append((d_hidden_final, _FIXED))  # the loop points these two at its own buffers
    state_in = [len(slots) + i for i in range(len(d_states_final))]
    slots += [(d, _FIXED) for d in d_states_final]
    grads = _gradient_slots(
        step, given, record, mask is not None, slots, d_hidden_final, d_states_final
    )
    weight = given.weight if grads.recurrent is not None else None
    carries = build.loop_extension().backward(
        step.backward.pointer,
        [tensor for tensor, _ in slots],
        [source for _, source in slots],
        hidden_slot,
        state_in,
        grads.state_slots,
        grads.direct_slot,
        d_out,
        weight,
        grads.recurrent,
        mask,
        d_hidden_final,
        d_states_final,
        direction.reverse,
    )
    d_weight = d_bias = None
    if weight is not None and grads.recurrent is not None:
        flat = grads.recurrent.reshape(-1, grads.recurrent.shape[-1])
        d_weight = flat.t() @ record.hidden_history[:-1].reshape(-1, hidden0.shape[-1])
        d_bias = flat.sum(0) if given.bias is not None else None
    return [*grads.maps, d_weight, d_bias, carries[0], *carries[1:], *grads.params]


def _dense(gradient: Tensor | None, shape: Sequence[int], like: Tensor) -> Tensor:
    """An incoming gradient as a contiguous tensor (zeros for None)."""
    if gradient is None:
        return like.new_zeros(shape)
    return gradient.contiguous()


def _saved_slots(graphs: StepGraphs, given: _Tensors, record: _Record) -> list[tuple[Tensor, int]]:
    """The backward kernel's first inputs: the values the forward saved, in order (a saved
    value that is a forward input is read where the forward read it)."""
    inputs = _input_slots(graphs.roles, given, record)
    buffers = iter([t for t in record.saved if t is not None])
    slots = []
    for position in range(len(record.saved)):
        if position in graphs.saved_inputs:
            slots.append(inputs[graphs.saved_inputs[position]])
        else:
            slots.append((next(buffers), _BY_STEP))
    return slots


def _gradient_slots(
    step: CompiledStep,
    given: _Tensors,
    record: _Record,
    ragged: bool,
    slots: list[tuple[Tensor, int]],
    d_hidden_final: Tensor,
    d_states_final: list[Tensor],
) -> _Gradients:
    """Append the backward kernel's outputs to ``slots``: one per forward input it has a
    gradient for (a step past a sequence's end writes nothing: zeros there, if ragged)."""
    new = torch.zeros_like if ragged else torch.empty_like
    grads = _Gradients([], None, [], state_slots=[-1] * len(d_states_final))
    maps, params = iter(given.maps), iter(given.params)
    for role, buffer in zip(step.graphs.roles, step.backward.kernel.outputs, strict=True):
        value = next(maps) if role.kind == "input map" else None
        value = next(params) if role.kind == "parameter" else value
        if buffer is None:
            if role.kind == "input map":
                grads.maps.append(None)
            elif role.kind == "parameter":
                grads.params.append(None)
            continue
        if role.kind == "input map":
            assert value is not None
            gradient = new(value)
            grads.maps.append(gradient)
            slots.append((gradient, _BY_TIME))
        elif role.kind == "parameter":
            assert value is not None
            gradient = torch.zeros_like(value)
            grads.params.append(gradient)
            slots.append((gradient, _FIXED))
        elif role.kind == "recurrent map":
            assert record.recurrent is not None
            steps = record.hidden_history.shape[0] - 1  # the answers may be a ring: not it
            grads.recurrent = (torch.zeros if ragged else torch.empty)(
                (steps, *record.recurrent.shape[1:]), dtype=record.recurrent.dtype
            )
            slots.append((grads.recurrent, _BY_STEP))
        elif role.kind == "hidden":
            grads.direct_slot = len(slots)
            slots.append((d_hidden_final, _FIXED))  # the loop points it at its own buffer
        elif role.kind == "state":
            grads.state_slots[role.index] = len(slots)
            slots.append((d_states_final[role.index], _FIXED))  # likewise
        else:
            raise Unfit(f"a gradient for the step's {role.kind} input")
    return grads


def _differentiable_backward(
    ctx: Any, d_outputs: Tensor, d_hidden: Tensor, d_states: Any
) -> list[Any]:
    """Gradients by autograd through the reference loop, differentiable themselves."""
    given, _ = _unpack(ctx)
    inputs = [*given.maps, given.weight, given.bias, given.hidden0, *given.states0, *given.params]
    needs = ctx.needs_input_grad[3:]
    wanted = [t for t, need in zip(inputs, needs, strict=True) if need and t is not None]
    with torch.enable_grad():
        outputs, final, new_states = _reference(ctx.direction, given)
        found = torch.autograd.grad(
            (outputs, final, *new_states),
            wanted,
            (d_outputs, d_hidden, *d_states),
            create_graph=True,
            allow_unused=True,
        )
    answers = iter(found)
    return [
        next(answers) if need and t is not None else None
        for t, need in zip(inputs, needs, strict=True)
    ]


def _reference(direction: _Direction, given: _Tensors) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The direction step by step with the cell's own ``forward_cell`` (answers given)."""
    graphs = direction.step.graphs
    maps, weight, bias = given.maps, given.weight, given.bias
    hidden, states = given.hidden0, given.states0
    answers = {role.name: trace._Answer(role.name) for role in graphs.roles if "map" in role.kind}
    steps = maps[0].shape[0] if maps else 0
    mask = direction.mask
    cell = direction.cell
    width = cell.layer_input_size(cell.cell_index[0])
    step_input = hidden.new_zeros(hidden.shape[0], width)
    like = cell.init_hidden(step_input.unsqueeze(1))[1]
    outputs = [hidden] * steps
    order = range(steps - 1, -1, -1) if direction.reverse else range(steps)
    input_maps = [role.name for role in graphs.roles if role.kind == "input map"]
    recurrent = [role.name for role in graphs.roles if role.kind == "recurrent map"]
    recurrent_bias = None  # a parameter of the step: the saved one, for higher derivatives
    parameters = [role.name for role in graphs.roles if role.kind == "parameter"]
    for role in graphs.roles:
        if role.kind == "recurrent map" and role.bias is not None:
            recurrent_bias = given.params[parameters.index(role.bias)]
    for t in order:
        for name, value in zip(input_maps, maps, strict=True):
            answers[name].answers = {"x": value[t]}
        if recurrent and weight is not None:
            product = nn.functional.linear(hidden, weight, bias)
            if recurrent_bias is not None:
                product = product + recurrent_bias
            answers[recurrent[0]].answers = {"hidden": product}
        for answer in answers.values():
            answer.step_input, answer.hidden = step_input, hidden
        with trace.answered(cell, answers) as view:
            new_hidden, new_state = view.forward_cell(step_input, hidden, from_parts(states, like))
        new_parts = list(state_parts(new_state))
        if mask is None:
            outputs[t] = new_hidden
            hidden, states = new_hidden, new_parts
        else:
            running = mask[t].bool().unsqueeze(-1)
            outputs[t] = torch.where(running, new_hidden, 0.0)
            hidden = torch.where(running, new_hidden, hidden)
            states = [torch.where(running, n, s) for n, s in zip(new_parts, states, strict=True)]
    return torch.stack(outputs), hidden, states
