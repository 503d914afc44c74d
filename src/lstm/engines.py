"""Which engine runs a forward call, and why: the one place where that is decided.

Every engine computes the same function (tested to 1e-10 in float64):

``reference``
    :func:`lstm.scan.run_stack`: ``forward_cell`` at every step, in Python. Every cell has it,
    and it never goes away: the tests compare every other engine with it.
``hoisted``
    The same loop, but a plain ``nn.Linear`` ``i2h`` is applied to all steps in one matrix
    product before it; ``self.i2h(x)`` inside ``forward_cell`` then returns the precomputed
    row.
``fused``
    Each direction of each layer as one autograd Function (:mod:`lstm.fused`): the input
    projection hoisted, the family's element-wise step and its hand-written backward per
    step, the recurrent weight's gradient as one product over all steps.
``parallel``
    The family's ``parallel_direction`` for each direction of each layer
    (:class:`ParallelFamily`): every step of the sequence at once, for a cell whose gates do
    not read the previous hidden state (the mLSTM's chunkwise form).
``kernel``
    The cell family's whole-stack ``fused_forward`` (:class:`KernelFamily`; for the LSTM:
    ``torch.lstm``, the kernel of ``torch.nn.LSTM``).
``compiled``
    :mod:`lstm.compiled`: the cell's own ``forward_cell`` traced once, its element-wise step
    and backward generated as C, and a fixed C++ loop running each direction of each layer:
    one matrix product per step and the generated kernel, no Python per step. The default
    for every cell whose step fits (the built-in families besides the LSTM's kernel and the
    mLSTM's parallel form, and a user's ``forward_cell``); where it does not, the family's
    fused engine or the reference path runs, and the reason says why.

A family declares its fast path once, beside the ``forward_cell`` it speeds up, as a
:class:`FastPath` class attribute. Which step a class runs is worked out once, when the class
is created (:func:`step_source`): a fast path applies only to a class whose ``forward_cell``
and ``build_cell`` both come from the class that declared it, so a subclass that rewrites the
step runs its own code without opting out of anything. :func:`choose_engine` then applies the
rules of the table in docs/architecture.md to one call, and returns the engine with its
reason; ``model.engine_for(x)`` shows it to the user. :func:`prepare_call` checks a call's
arguments and makes that choice for both ``forward`` and ``engine_for``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

import torch
from torch import Tensor, nn

import lstm.state
from lstm.checks import check_call_options
from lstm.compiled.run import compiled_off, compiled_step, run_compiled_direction
from lstm.compiled.trace import Unfit
from lstm.fused import fused_problem, run_fused_direction
from lstm.layout import Batch, read_input
from lstm.parameters import view_with
from lstm.scan import run_stack
from lstm.state import CellState, initial_states, state_parts

if TYPE_CHECKING:
    from lstm.driver import Recurrent

ENGINES = ("auto", "reference", "hoisted", "fused", "compiled")
"""Values of :attr:`Recurrent.engine <lstm.driver.Recurrent>`: the user's setting."""

CONTRACT = ("build_cell", "forward_cell", "init_hidden", "initHidden")
"""The methods a cell class defines (see :class:`lstm.driver.Recurrent`)."""


class Engine(NamedTuple):
    """The engine chosen for one call, and why.

    ``name`` is ``"kernel"``, ``"fused"``, ``"parallel"``, ``"hoisted"`` or ``"reference"``;
    ``reason`` says what made the choice: the class that declares or overrides the step, the
    setting, or the condition that blocks a faster engine.
    """

    name: str
    """``"kernel"``, ``"fused"``, ``"parallel"``, ``"hoisted"`` or ``"reference"``."""
    reason: str
    """What made the choice, naming the class or the condition."""


class FastPath(NamedTuple):
    """A cell family's faster engine, declared as a class attribute next to its step."""

    engine: str
    """``"kernel"`` (the class's ``fused_forward``, see :class:`KernelFamily`), ``"fused"`` (the
    class's ``step_rule``, a :class:`lstm.fused.StepRule`), ``"parallel"`` (the class's
    ``parallel_direction``, see :class:`ParallelFamily`) or ``"hoisted"``."""
    description: str
    """What runs, for :class:`Engine`'s reason (e.g. "torch.lstm, the kernel of nn.LSTM")."""
    ragged_training_max_len: int | None = None
    """Kernel only: the longest ragged batch that trains on the kernel; longer ones that need
    gradients run hoisted (:data:`lstm.cells.lstm.PACKED_TRAINING_MAX_LEN`)."""


class KernelFamily(Protocol):
    """What a family that declares ``FastPath("kernel", ...)`` defines beside its step."""

    def fused_forward(
        self, inputs: Tensor, initial: Sequence[CellState], lengths: Tensor | None
    ) -> tuple[Tensor, Sequence[CellState]]:
        """Run the whole stack in one call: the same function as the reference engine.

        Called only when :func:`choose_engine` chose ``kernel``; same arguments and results
        as :func:`lstm.scan.run_stack` (``inputs`` batch-first, ``lengths`` None when no
        sequence is shorter), which it must equal (test it against ``engine="reference"`` in
        float64). :meth:`lstm.LSTM.fused_forward` is the example.
        """
        ...

    def kernel_problem(self) -> str | None:
        """Why the kernel cannot read this module's parameters now, or None.

        :func:`choose_engine` asks before every kernel call (after the conditions that keep
        every fast engine away: autocast, zoneout, ...), and runs the reference path, with
        this as the reason, where it is not None: e.g. a part replaced by another module, or
        one with hooks the kernel would skip. :meth:`lstm.LSTM.kernel_problem` is the example.
        """
        ...


class ParallelFamily(Protocol):
    """What a family that declares ``FastPath("parallel", ...)`` defines beside its step."""

    def parallel_direction(
        self, layer_input: Tensor, initial: CellState, mask: Tensor | None, reverse: bool
    ) -> tuple[Tensor, CellState]:
        """Run one direction of one layer over every step at once.

        Called on the :meth:`~lstm.driver.Recurrent.layer_cell` view of each layer and
        direction, with :data:`lstm.scan.RunDirection`'s arguments: ``layer_input`` (B, T, F),
        ``initial`` (hidden, state), ``mask`` (T, B, 1) of the steps that are real (None when
        all are), ``reverse``. Returns the outputs (B, T, H), zero past each sequence's end,
        and the final (hidden, state) taken at each sequence's end: the same as stepping
        ``forward_cell`` (test it against ``engine="reference"`` in float64).
        :meth:`lstm.MLSTM.parallel_direction` is the example.
        """
        ...


@dataclass(frozen=True)
class StepSource:
    """Where a cell class's step comes from, worked out once when the class is created.

    Attributes
    ----------
    defined_by : Mapping of str to type
        For each method of :data:`CONTRACT`, the class in the MRO that defines it.
    fast_path : FastPath or None
        The fast path that applies to the class, if any.
    reason : str
        Why: the class whose step runs, and what overrides a parent's step.
    """

    defined_by: Mapping[str, type]
    fast_path: FastPath | None
    reason: str

    def overrides(self, base: type) -> list[str]:
        """The contract methods that a class below ``base`` redefines, in :data:`CONTRACT` order."""
        return [
            name
            for name in CONTRACT
            if issubclass(self.defined_by[name], base) and self.defined_by[name] is not base
        ]


def step_source(cls: type) -> StepSource:
    """Work out which step ``cls`` runs and whether a declared fast path applies to it."""
    defined_by = {
        name: next(klass for klass in cls.__mro__ if name in vars(klass)) for name in CONTRACT
    }
    # The parameters come from build_cell, or from gate_blocks for the default build_cell.
    defined_by["build_cell"] = next(
        klass for klass in cls.__mro__ if {"build_cell", "gate_blocks"} & set(vars(klass))
    )
    step, builder = defined_by["forward_cell"], defined_by["build_cell"]
    declared: FastPath | None = vars(step).get("fast_path")
    missing = [name for name in ("fused_forward", "kernel_problem") if name not in vars(step)]
    if declared is not None and declared.engine == "kernel" and missing:
        raise TypeError(
            f"{step.__name__}: expected a {missing[0]} method beside FastPath('kernel', ...) "
            "(lstm.engines.KernelFamily), got none in the class"
        )
    if declared is not None and declared.engine == "fused" and "step_rule" not in vars(step):
        raise TypeError(
            f"{step.__name__}: expected a step_rule attribute beside FastPath('fused', ...) "
            "(an lstm.fused.StepRule), got none in the class"
        )
    if (
        declared is not None
        and declared.engine == "parallel"
        and "parallel_direction" not in vars(step)
    ):
        raise TypeError(
            f"{step.__name__}: expected a parallel_direction method beside "
            "FastPath('parallel', ...) (lstm.engines.ParallelFamily), got none in the class"
        )
    if declared is not None and builder is step:
        return StepSource(
            defined_by, declared, f"{step.__name__}'s own step: {declared.description}"
        )
    if declared is not None:
        reason = f"{builder.__name__} overrides build_cell of {step.__name__}"
    else:
        ancestor = next((k for k in step.__mro__[1:] if vars(k).get("fast_path")), None)
        reason = (
            f"{step.__name__} overrides forward_cell of {ancestor.__name__}"
            if ancestor is not None
            else f"{step.__name__}'s forward_cell has no fast path"
        )
    return StepSource(defined_by, None, reason + ": it runs step by step")


def choose_engine(
    module: Recurrent,
    inputs: Tensor,
    lengths: Tensor | None,
    initial: Sequence[CellState],
    *,
    all_states: bool = False,
) -> Engine:
    """The engine for one call, and its reason (the rule table of docs/architecture.md).

    Parameters
    ----------
    module : Recurrent
    inputs : Tensor of shape (batch, seq_len, input_size)
    lengths : Tensor of shape (batch,), or None
        None when every sequence runs to seq_len (see :attr:`lstm.layout.Batch.ragged`).
    initial : list of (hidden, state)
        The initial state of every cell (whether they need gradients matters).
    all_states : bool, default False
        Whether the call collects every step's state (``return_all_states=True``).

    Returns
    -------
    Engine
    """
    setting = module.engine
    if setting == "reference":
        return Engine("reference", "engine='reference' is set on the module")
    if setting == "hoisted":
        unhoistable = _unhoistable(module)
        if unhoistable is not None:
            return Engine("reference", f"engine='hoisted' is set, but {unhoistable}")
        return Engine("hoisted", "engine='hoisted' is set on the module")
    if all_states:
        return Engine("reference", "return_all_states=True collects every step's state")
    source = type(module).step_source
    fast = source.fast_path
    if setting == "compiled":
        return _compiled_or(module, inputs, "engine='compiled' is set on the module", None)
    if setting == "fused":
        if fast is None or fast.engine != "fused":
            return Engine("reference", f"engine='fused' is set, but {source.reason}")
        return _fused_or_fallback(module, inputs, "engine='fused' is set on the module")
    if fast is None:
        return _compiled_or(
            module, inputs, f"{_step_owner(module)}'s forward_cell, traced and compiled", None
        )
    if fast.engine == "hoisted":
        unhoistable = _unhoistable(module)
        if unhoistable is not None:
            return Engine("reference", f"{source.reason}, but {unhoistable}")
        return Engine("hoisted", source.reason)
    if fast.engine == "fused":
        fallback = _fused_or_fallback(module, inputs, source.reason)
        if fallback.name == "fused":
            reason = f"{_step_owner(module)}'s own step, traced and compiled"
        else:  # a subclass changed a part of the step the fused rule knows (update_hidden)
            reason = f"{type(module).__name__}'s step, traced and compiled"
        return _compiled_or(module, inputs, reason, fallback)
    if fast.engine == "parallel":
        return _parallel_or_reference(module, inputs, source.reason)
    compiled = f"{_step_owner(module)}'s forward_cell, traced and compiled"
    blocker = _kernel_blocker(module, inputs)
    if blocker is not None:
        fallback = Engine("reference", f"the kernel does not apply: {blocker}")
        return _compiled_or(module, inputs, f"{compiled} ({fallback.reason})", fallback)
    limit = fast.ragged_training_max_len
    long_ragged = lengths is not None and limit is not None and inputs.shape[1] > limit
    if long_ragged and torch.is_grad_enabled() and _needs_grad(module, inputs, initial):
        why = (
            f"a ragged batch of {inputs.shape[1]} steps (> {limit}) that needs gradients: "
            "the kernel's packed backward grows with seq_len x steps"
        )
        fallback = Engine("reference" if _unhoistable(module) is not None else "hoisted", why)
        return _compiled_or(module, inputs, f"{compiled} ({why})", fallback)
    return Engine("kernel", source.reason)


class Call(NamedTuple):
    """One ``forward`` call, checked: its input, every cell's initial state, and its engine."""

    batch: Batch
    """The input, batch-first, with its lengths (:func:`lstm.layout.read_input`)."""
    initial: Sequence[CellState]
    """``(hidden, state)`` of every cell, in :meth:`~lstm.driver.Recurrent.cell_indices` order."""
    engine: Engine
    """The engine that runs, and why (:func:`choose_engine`)."""


def prepare_call(
    module: Recurrent, x: Any, lengths: Any, hidden: Any, *, all_states: Any = False
) -> Call:
    """Check the arguments of one ``forward`` call and choose its engine.

    ``forward`` and ``engine_for`` both start here, so the engine ``engine_for`` names is the
    one ``forward`` runs for the same arguments.

    Parameters
    ----------
    module : Recurrent
    x, lengths, hidden
        As :meth:`lstm.driver.Recurrent.forward` takes them.
    all_states : bool, default False
        ``forward``'s ``return_all_states``.

    Returns
    -------
    Call
        ``(batch, initial, engine)``.

    Raises
    ------
    ValueError, TypeError
        As ``forward`` does, naming the expected and the actual value, before any engine runs.
    """
    check_call_options(type(module).__name__, module.engine, ENGINES, all_states)
    batch = read_input(module, x, lengths)
    initial = initial_states(module, batch.inputs, hidden, batch.unbatched)
    engine = choose_engine(module, batch.inputs, batch.ragged, initial, all_states=all_states)
    return Call(batch, initial, engine)


def run_engine(
    engine: Engine,
    module: Recurrent,
    inputs: Tensor,
    initial: Sequence[CellState],
    lengths: Tensor | None,
    collect: list[list[lstm.state.State]] | None = None,
) -> tuple[Tensor, Sequence[CellState]]:
    """Run ``engine``: outputs ``(batch, seq_len, D*H)`` and the final state of every cell."""
    if engine.name == "kernel":
        result = cast(KernelFamily, module).fused_forward(inputs, initial, lengths)
        if result is None:
            raise TypeError(
                f"{type(module).__name__}.fused_forward: expected (outputs, finals) from the "
                "kernel its class declares, got None"
            )
        return result
    if engine.name == "fused":
        return run_stack(module, inputs, initial, lengths, run=run_fused_direction)
    if engine.name == "parallel":
        return run_stack(module, inputs, initial, lengths, run=_run_parallel)
    if engine.name == "compiled":
        return run_stack(module, inputs, initial, lengths, run=run_compiled_direction)
    prepare = hoist_input_projection if engine.name == "hoisted" else None
    return run_stack(module, inputs, initial, lengths, prepare=prepare, collect=collect)


def plain_linear_problem(name: str, part: object) -> str | None:
    """None if ``part`` is a plain ``nn.Linear`` without hooks, else what is in the way.

    Only such a map can be read as weights (the kernel) or applied to all steps at once (the
    hoisted engine) with the same result: a subclass, a parametrization or a hook may do
    anything.
    """
    if type(part) is not nn.Linear:
        return f"{name} is a {type(part).__name__}, not a plain nn.Linear"
    if _has_hooks(part):
        return f"{name} has forward hooks"
    return None


def _unhoistable(module: Recurrent) -> str | None:
    """Why ``i2h`` cannot be hoisted in some cell, or None."""
    for layer, direction in module.cell_indices():
        parts = module.cell_parts(layer, direction)
        name = "i2h" + module.cell_suffix(layer, direction)
        if "i2h" not in parts:
            return f"{type(module).__name__} has no i2h to hoist"
        problem = plain_linear_problem(name, parts["i2h"])
        if problem is not None:
            return problem
    return None


def _step_owner(module: Recurrent) -> str:
    """The class whose ``forward_cell`` the module runs."""
    return type(module).step_source.defined_by["forward_cell"].__name__


def _compiled_or(module: Recurrent, inputs: Tensor, reason: str, fallback: Engine | None) -> Engine:
    """``compiled`` with ``reason`` where the step fits and builds, else ``fallback`` (or the
    reference path, or the hoisted one), its reason saying why the compiled engine did not
    apply."""
    blocker = _compiled_blocker(module, inputs)
    if blocker is None:
        return Engine("compiled", reason)
    if fallback is not None and fallback.reason.endswith(f": {blocker}"):
        # The same obstacle stops both (zoneout, a hook): said once.
        return Engine(fallback.name, f"{fallback.reason} (the compiled engine's too)")
    why = f"the compiled engine does not apply: {blocker}"
    if fallback is not None:
        return Engine(fallback.name, f"{why}; {fallback.reason}")
    source = type(module).step_source
    return Engine("reference", f"{why}; {source.reason}")


def _compiled_blocker(module: Recurrent, inputs: Tensor) -> str | None:
    """What keeps the compiled engine from running this call, or None (it fits and builds)."""
    if inputs.device.type != "cpu":
        return f"it runs on the CPU, the input is on {inputs.device.type}"
    if inputs.dtype not in (torch.float32, torch.float64):
        return f"it computes in float32 or float64, the input is {inputs.dtype}"
    blocker = _step_blocker(module, inputs) or _tracing_blocker() or compiled_off()
    for layer, direction in module.cell_indices():
        suffix = module.cell_suffix(layer, direction)
        blocker = blocker or _hooked_part(module.cell_parts(layer, direction), suffix)
    if blocker is not None:
        return blocker
    try:
        for layer, direction in module.cell_indices():  # cells of other kinds trace apart
            compiled_step(module.layer_cell(layer, direction), inputs.dtype)
    except Unfit as error:
        return str(error)
    return None


def _fused_or_fallback(module: Recurrent, inputs: Tensor, reason: str) -> Engine:
    """``fused`` where nothing blocks it, else hoisted (or reference), naming what blocks."""
    blocker = _step_blocker(module, inputs) or _tracing_blocker() or _fused_blocker(module)
    if blocker is None:
        return Engine("fused", reason)
    fallback = "reference" if _unhoistable(module) is not None else "hoisted"
    return Engine(fallback, f"the fused engine does not apply: {blocker}")


def _parallel_or_reference(module: Recurrent, inputs: Tensor, reason: str) -> Engine:
    """``parallel`` for a sequence, else reference, naming what keeps it from running.

    Autocast and half precision do not block it: the parallel form is the whole-sequence
    input projection (which autocast runs in bfloat16) and the family's own arithmetic (the
    mLSTM's in float32, :func:`lstm.cells.mlstm.split_projection`). A hooked part does: a
    hook would see the whole sequence at once instead of one step.
    """
    if inputs.shape[1] == 1:
        return Engine("reference", "a single step: forward_cell, the recurrent form")
    blocker = _regulariser_blocker(module) or _unhoistable(module)
    for layer, direction in module.cell_indices():
        parts = module.cell_parts(layer, direction)
        blocker = blocker or _hooked_part(parts, module.cell_suffix(layer, direction))
    if blocker is not None:
        return Engine("reference", f"the parallel form does not apply: {blocker}")
    return Engine("parallel", reason)


def _hooked_part(parts: Mapping[str, object], suffix: str) -> str | None:
    """Which of one cell's parts (names ending in ``suffix`` on the module) has forward hooks."""
    for name, part in parts.items():
        if isinstance(part, nn.Module) and _has_hooks(part):
            return f"{name}{suffix} has forward hooks"
    return None


def _run_parallel(
    cell: Recurrent, layer_input: Tensor, initial: CellState, mask: Tensor | None, reverse: bool
) -> tuple[Tensor, CellState]:
    """:data:`lstm.scan.RunDirection` for the parallel engine: the family's own method."""
    return cast(ParallelFamily, cell).parallel_direction(layer_input, initial, mask, reverse)


def _fused_blocker(module: Recurrent) -> str | None:
    """Why some cell's parts keep the fused engine from reading them directly, or None."""
    for layer, direction in module.cell_indices():
        suffix = module.cell_suffix(layer, direction)
        parts = module.cell_parts(layer, direction)
        for name in ("i2h", "h2h"):
            problem = plain_linear_problem(name + suffix, parts.get(name))
            if problem is not None:
                return problem
        problem = _hooked_part(parts, suffix) or fused_problem(module.layer_cell(layer, direction))
        if problem is not None:
            return problem
    return None


def _has_hooks(part: nn.Module) -> bool:
    """Whether ``part`` has forward hooks (a fast path would skip them)."""
    return bool(part._forward_hooks or part._forward_pre_hooks)


def _tracing_blocker() -> str | None:
    """Why a traced or compiled call should see the step itself, or None."""
    if torch.compiler.is_compiling():
        return "torch.compile is tracing (it fuses the step itself)"
    if torch.jit.is_tracing():  # type: ignore[attr-defined, no-untyped-call]
        return "torch.jit is tracing"
    return None


def _step_blocker(module: Recurrent, inputs: Tensor) -> str | None:
    """What keeps any engine but the step-by-step ones from running this call, or None."""
    if torch.is_autocast_enabled(inputs.device.type):
        return f"autocast is on for {inputs.device.type}"
    if inputs.dtype == torch.float16 and inputs.device.type == "cpu":
        return "float16 on the CPU"
    return _regulariser_blocker(module)


def _regulariser_blocker(module: Recurrent) -> str | None:
    """The per-step regulariser (zoneout; recurrent dropout in training) that is on, or None."""
    if module.zoneout > 0:
        return f"zoneout={module.zoneout} acts at every step"
    if module.training and module.recurrent_dropout > 0:
        return f"recurrent_dropout={module.recurrent_dropout} acts at every step in training"
    return None


def _kernel_blocker(module: Recurrent, inputs: Tensor) -> str | None:
    """Why the whole-stack kernel cannot run this call, or None."""
    return _step_blocker(module, inputs) or cast(KernelFamily, module).kernel_problem()


def _needs_grad(module: nn.Module, inputs: Tensor, initial: Sequence[CellState]) -> bool:
    """Whether autograd will record a forward of ``module`` on these inputs and states."""
    tensors = [inputs, *(h for h, _ in initial)]
    tensors += [part for _, state in initial for part in state_parts(state)]
    return any(t.requires_grad for t in tensors) or any(
        p.requires_grad for p in module.parameters()
    )


def hoist_input_projection(cell: Recurrent, inputs: Tensor, steps: tuple[Tensor, ...]) -> Recurrent:
    """The hoisted engine: one matrix product for ``i2h`` over all steps.

    Returns a view of ``cell`` whose ``i2h`` answers ``i2h(steps[t])`` with row ``t`` of
    ``i2h(inputs)``, and computes anything else it is given as before. :func:`choose_engine`
    picks this engine only where every ``i2h`` is a plain ``nn.Linear`` without hooks, which
    acts on each step independently, so the batched call is the same function.
    """
    projection = cell._modules["i2h"]
    assert projection is not None
    projected = projection(inputs).unbind(1)  # T x (B, out_features)
    return view_with(cell, {"i2h": _StepAnswers(projection, steps, projected)}, cell.cell_index)


class _StepAnswers(nn.Module):
    """Stands in for ``i2h`` on the hoisted engine: ``i2h(steps[t])`` is ``projected[t]``.

    The step tensor is recognised by identity, never by value; any other input is passed to
    the real module, so a cell that applies ``i2h`` to something else stays correct.
    """

    projection: nn.Module

    def __init__(
        self, projection: nn.Module, steps: tuple[Tensor, ...], projected: tuple[Tensor, ...]
    ) -> None:
        super().__init__()
        self.__dict__["projection"] = projection  # not registered: the view owns no parameters
        self._answers = {id(step): (step, row) for step, row in zip(steps, projected, strict=True)}

    def forward(self, x: Tensor) -> Tensor:
        answer = self._answers.get(id(x))
        if answer is not None and answer[0] is x:
            return answer[1]
        result: Tensor = self.projection(x)
        return result
