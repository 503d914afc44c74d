r"""The generator: one element-wise step graph (core ATen) as one C function.

The tracer (:mod:`lstm.compiled.trace`) gives the element-wise part of a cell's step, forward
or backward, as an FX graph over small tensors: the projections, the hidden input, the
state, the cell's own parameters, values saved for backward and the gradients flowing back.
Every such tensor has at most one batch dimension (whose size is the caller's batch ``B``)
and a last dimension that is a whole number of units (``hidden_size``, the unit ``U``) or a
single column. The generator writes the graph as **one loop over the batch** and, inside it,
**fused loops over the units** ``u < U``:

* a tensor is a grid of *lanes*: its non-batch dimensions with the last one counted in whole
  units (``(B, 4H)`` is 4 lanes, the Array-LSTM's ``(k, B, H)`` is k lanes), and one C scalar
  per lane at ``(b, u)``. Views (``view``, ``permute``, ``slice``, ``split``, ``cat``,
  ``select``, ``expand``, ``gather`` of a lane, ...) only rearrange the grid: they cost
  nothing at run time;
* element-wise operations compute one scalar per lane, in registers; reductions over lanes
  (a sum of the k lanes, their maximum, a softmax over them) combine lanes;
* a reduction over the features of a row (the mean and variance of a layer norm) ends the
  unit loop: its result is a per-row scalar, known from the next unit loop on, and values
  that loop still needs are kept in scratch arrays;
* a sum over the batch (a parameter's gradient) is accumulated into its output (``+=``),
  so the loop that calls the kernel step after step gets the sum over steps too.

Whatever does not fit this model (a reshape that moves the batch, a slice that cuts a unit
in two, an operation not in :data:`ELEMENTWISE` or the view and reduction tables) raises
:class:`Unsupported` naming it; the engine then falls back and says why.

The generated function is plain C (no torch headers)::

    void NAME(int64_t B, const unsigned char* rows, void* const* buffers);

``buffers`` are the graph's inputs then its outputs, each a contiguous tensor of the traced
shape with ``B`` in place of the batch size (:class:`Buffer`); ``rows`` is None or one byte
per row, 0 for a row the kernel must leave alone (a finished sequence).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx

aten = torch.ops.aten

BatchDims = Mapping[str, Any]
"""For each node name, the batch dimension of its value (None for none), or a tuple of them
for a node with several results (``split``, ``var_mean``, ``max.dim``)."""


class Unsupported(Exception):
    """The graph cannot be generated; the message says what is in the way."""


Lanes = Any
"""A numpy array of objects, one :class:`Scalar` per lane (typed loosely: numpy's stubs
know numbers, not objects)."""


def _args(node: fx.Node) -> tuple[Any, ...]:
    """A node's positional arguments, untyped (fx types them as a union of every argument
    kind; the handlers know which each operation takes)."""
    return tuple(node.args)


@dataclass(frozen=True)
class Buffer:
    """A graph input or output as the kernel reads or writes it.

    Attributes
    ----------
    shape : tuple of int
        The traced shape; the batch dimension's entry is the traced batch size.
    batch_dim : int or None
        Which dimension is the batch (its size is the kernel's ``B``), if any.
    dtype : str
        ``"float"``, ``"double"``, ``"bool"`` or ``"int64"``.
    accumulate : bool
        An output the kernel adds into (a sum over the batch) instead of writing.
    """

    shape: tuple[int, ...]
    batch_dim: int | None
    dtype: str
    accumulate: bool = False

    def numel(self, batch: int) -> int:
        """Elements for a batch of ``batch`` rows."""
        sizes = [batch if d == self.batch_dim else s for d, s in enumerate(self.shape)]
        return math.prod(sizes)


@dataclass(frozen=True)
class Kernel:
    """A generated kernel: its C source and the buffers it reads and writes.

    ``outputs`` holds None for a graph output that is None (a gradient nobody needs).
    """

    name: str
    source: str
    inputs: tuple[Buffer, ...]
    outputs: tuple[Buffer | None, ...]


# ---------------------------------------------------------------------- scalars and values
@dataclass(eq=False)
class Scalar:
    """One lane of a value at ``(b, u)``: a C expression and where it can be used.

    ``uses_b``/``uses_u``: whether it depends on the row and on the unit; ``stage``: the
    first unit loop in which it exists (row reductions start a new one); ``summed``: a
    contribution to a sum over the batch (only added into an output).
    """

    code: str
    ctype: str
    uses_b: bool
    uses_u: bool
    stage: int
    summed: bool = False
    variable: bool = False  # a named variable of a unit loop (else an expression to repeat)
    scratch: bool = False  # kept in a per-unit array for later loops


@dataclass(eq=False)
class Value:
    """A tensor of the graph: its shape, batch dimension and lanes (a grid of :class:`Scalar`)."""

    shape: tuple[int, ...]
    batch: int | None
    unit: bool
    lanes: Lanes
    dtype: torch.dtype


@dataclass(eq=False)
class Const:
    """A tensor whose every element is known while generating (``full``, ``arange``, and
    anything computed from them alone): folded, and turned into lanes only where it meets
    the step's values."""

    tensor: torch.Tensor


def _lane_shape(shape: Sequence[int], batch: int | None, unit: bool, size: int) -> tuple[int, ...]:
    """The lane grid of a value: its shape, the batch as 1, the last dimension in units."""
    grid = [1 if d == batch else s for d, s in enumerate(shape)]
    if unit and grid:
        grid[-1] //= size
    return tuple(grid)


_CTYPES = {
    torch.float32: "float",
    torch.float64: "double",
    torch.bool: "int",
    torch.int64: "int64_t",
}
_BUFFER_TYPES = {torch.float32: "float", torch.float64: "double", torch.bool: "bool"}
_BUFFER_TYPES[torch.int64] = "int64"


class _Emitter:
    """The C statements of one kernel, by unit loop (stage)."""

    def __init__(self, scalar: str, unit: int) -> None:
        self.scalar, self.unit = scalar, unit
        self.top: list[str] = []
        self.pre: list[list[str]] = [[]]
        self.body: list[list[str]] = [[]]
        self.reductions: list[list[str]] = [[]]  # omp reduction clauses per loop
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def stage(self, stage: int) -> None:
        while len(self.body) <= stage:
            self.pre.append([])
            self.body.append([])
            self.reductions.append([])

    def define(self, code: str, ctype: str, uses_b: bool, uses_u: bool, stage: int) -> Scalar:
        """A new variable holding ``code``, where its inputs exist."""
        name = self.fresh("v")
        ctype = self.scalar if ctype == "scalar_t" else ctype
        statement = f"const {ctype} {name} = {code};"
        if not uses_b and not uses_u:
            self.top.append(statement)
        elif not uses_u:
            self.stage(stage)
            self.pre[stage].append(statement)
        else:
            self.stage(stage)
            self.body[stage].append(statement)
        return Scalar(name, ctype, uses_b, uses_u, stage, variable=uses_u)

    def use(self, scalar: Scalar, stage: int) -> str:
        """``scalar``'s code as it reads in unit loop ``stage`` (from scratch if earlier)."""
        if scalar.variable and scalar.uses_u and scalar.stage < stage:
            if not scalar.scratch:
                scalar.scratch = True
                self.body[scalar.stage].append(f"s_{scalar.code}[u] = {scalar.code};")
            return f"s_{scalar.code}[u]"
        return scalar.code

    def source(self, name: str, buffers: Sequence[tuple[str, Buffer, bool]]) -> str:
        lines = [
            f"void {name}(int64_t B, const unsigned char* rows, void* const* buffers) {{",
        ]
        for index, (variable, buffer, output) in enumerate(buffers):
            ctype = {"float": "float", "double": "double", "bool": "unsigned char"}.get(
                buffer.dtype, "int64_t"
            )
            const = "" if output else "const "
            lines.append(f"  {const}{ctype}* restrict {variable} = buffers[{index}];")
        lines += [f"  {statement}" for statement in self.top]
        scratch = [
            statement.split("[u] = ")[0].removeprefix("s_")
            for stage in self.body
            for statement in stage
            if statement.startswith("s_")
        ]
        lines.append("  for (int64_t b = 0; b < B; ++b) {")
        lines.append("    if (rows && !rows[b]) continue;")
        for name_ in scratch:
            lines.append(f"    {self.scalar} s_{name_}[{self.unit}];")
        for stage, body in enumerate(self.body):
            lines += [f"    {statement}" for statement in self.pre[stage]]
            if not body:
                continue
            clauses = " ".join(self.reductions[stage])
            lines.append(f"    #pragma omp simd {clauses}".rstrip())
            lines.append(f"    for (int64_t u = 0; u < {self.unit}; ++u) {{")
            lines += [f"      {statement}" for statement in body]
            lines.append("    }")
        lines.append("  }")
        lines.append("}")
        return "\n".join(lines)


# ---------------------------------------------------------------------- the generator
ELEMENTWISE: dict[Any, Callable[..., str]] = {}
"""Element-wise operations: target -> function of the operands' C code giving the result's."""


def _elementwise(*targets: Any) -> Callable[[Callable[..., str]], Callable[..., str]]:
    def register(function: Callable[..., str]) -> Callable[..., str]:
        for target in targets:
            ELEMENTWISE[target] = function
        return function

    return register


@_elementwise(aten.add.Tensor, aten.add.Scalar)
def _add(a: str, b: str, alpha: str | None = None) -> str:
    return f"({a} + {b})" if alpha is None else f"({a} + {alpha} * {b})"


@_elementwise(aten.sub.Tensor, aten.sub.Scalar, aten.rsub.Scalar, aten.rsub.Tensor)
def _sub(a: str, b: str, alpha: str | None = None) -> str:
    return f"({a} - {b})" if alpha is None else f"({a} - {alpha} * {b})"


ELEMENTWISE.update(
    {
        aten.mul.Tensor: lambda a, b: f"({a} * {b})",
        aten.mul.Scalar: lambda a, b: f"({a} * {b})",
        aten.div.Tensor: lambda a, b: f"({a} / {b})",
        aten.div.Scalar: lambda a, b: f"({a} / {b})",
        aten.neg.default: lambda a: f"(-{a})",
        aten.reciprocal.default: lambda a: f"(1 / {a})",
        aten.maximum.default: lambda a, b: _maximum_code(a, b),
        aten.minimum.default: lambda a, b: _minimum_code(a, b),
        aten.where.self: lambda c, a, b: f"({c} ? {a} : {b})",
        aten.eq.Tensor: lambda a, b: f"({a} == {b})",
        aten.eq.Scalar: lambda a, b: f"({a} == {b})",
        aten.ne.Tensor: lambda a, b: f"({a} != {b})",
        aten.ne.Scalar: lambda a, b: f"({a} != {b})",
        aten.lt.Tensor: lambda a, b: f"({a} < {b})",
        aten.lt.Scalar: lambda a, b: f"({a} < {b})",
        aten.le.Tensor: lambda a, b: f"({a} <= {b})",
        aten.le.Scalar: lambda a, b: f"({a} <= {b})",
        aten.gt.Tensor: lambda a, b: f"({a} > {b})",
        aten.gt.Scalar: lambda a, b: f"({a} > {b})",
        aten.ge.Tensor: lambda a, b: f"({a} >= {b})",
        aten.ge.Scalar: lambda a, b: f"({a} >= {b})",
        aten.logical_not.default: lambda a: f"(!{a})",
        aten.logical_and.default: lambda a, b: f"({a} && {b})",
        aten.logical_or.default: lambda a, b: f"({a} || {b})",
        aten.bitwise_not.default: lambda a: f"(!{a})",
        aten.bitwise_and.Tensor: lambda a, b: f"({a} && {b})",
        aten.bitwise_or.Tensor: lambda a, b: f"({a} || {b})",
    }
)
"""Arithmetic and comparisons; ``maximum``/``minimum`` propagate NaN as torch does."""

_MATH = {
    aten.sigmoid.default: "SIGMOID",
    aten.tanh.default: "TANH",
    aten.exp.default: "EXP",
    aten.expm1.default: "EXPM1",
    aten.log.default: "LOG",
    aten.log1p.default: "LOG1P",
    aten.sqrt.default: "SQRT",
    aten.rsqrt.default: "RSQRT",
    aten.abs.default: "FABS",
    aten.erf.default: "ERF",
    aten.sin.default: "SIN",
    aten.cos.default: "COS",
    aten.floor.default: "FLOOR",
    aten.ceil.default: "CEIL",
    aten.sign.default: "SIGN",
    aten.relu.default: "RELU",
    aten.tan.default: "TAN",
    aten.atan.default: "ATAN",
    aten.asin.default: "ASIN",
    aten.acos.default: "ACOS",
    aten.sinh.default: "SINH",
    aten.cosh.default: "COSH",
    aten.asinh.default: "ASINH",
    aten.acosh.default: "ACOSH",
    aten.atanh.default: "ATANH",
    aten.exp2.default: "EXP2",
    aten.log2.default: "LOG2",
    aten.log10.default: "LOG10",
    aten.trunc.default: "TRUNC",
    aten.round.default: "RINT",
}
"""Unary functions, written as macros of the kernel's prelude (:func:`prelude`)."""
for _target, _macro in _MATH.items():
    ELEMENTWISE[_target] = lambda a, _macro=_macro: f"{_macro}({a})"
ELEMENTWISE[aten.pow.Tensor_Tensor] = lambda a, b: f"POW({a}, {b})"
ELEMENTWISE[aten.atan2.default] = lambda a, b: f"ATAN2({a}, {b})"
ELEMENTWISE[aten.fmod.Tensor] = lambda a, b: f"FMOD({a}, {b})"
ELEMENTWISE[aten.isnan.default] = lambda a: f"({a} != {a})"
for _target in (aten.remainder.Tensor, aten.remainder.Scalar):  # Python's: the divisor's sign
    ELEMENTWISE[_target] = lambda a, b: f"({a} - {b} * FLOOR({a} / {b}))"

_POINTWISE_WITH_SCALARS = (
    aten.pow.Tensor_Scalar,
    aten.clamp.default,
    aten.clamp_min.default,
    aten.clamp_max.default,
    aten.leaky_relu.default,
)


def prelude(scalar: str) -> str:
    """Macros and includes every kernel starts with, for ``scalar`` (float or double)."""
    suffix = "f" if scalar == "float" else ""
    lines = [
        "#include <math.h>",
        "#include <stdint.h>",
        f"#define EXP(x) exp{suffix}(x)",
        f"#define EXPM1(x) expm1{suffix}(x)",
        f"#define LOG(x) log{suffix}(x)",
        f"#define LOG1P(x) log1p{suffix}(x)",
        f"#define TANH(x) tanh{suffix}(x)",
        f"#define SQRT(x) sqrt{suffix}(x)",
        f"#define RSQRT(x) (1 / sqrt{suffix}(x))",
        f"#define FABS(x) fabs{suffix}(x)",
        f"#define ERF(x) erf{suffix}(x)",
        f"#define SIN(x) sin{suffix}(x)",
        f"#define COS(x) cos{suffix}(x)",
        f"#define FLOOR(x) floor{suffix}(x)",
        f"#define CEIL(x) ceil{suffix}(x)",
        f"#define POW(x, y) pow{suffix}(x, y)",
        "#define SIGMOID(x) (1 / (1 + EXP(-(x))))",
        "#define SIGN(x) (((x) > 0) - ((x) < 0))",
        # max(0, x), NaN kept: the form gcc vectorises (see _maximum_code)
        "#define RELU(x) ((0 < (x) || (x) != (x)) ? (x) : 0)",
    ]
    lines += [
        f"#define {name.upper()}(x) {name}{suffix}(x)"
        for name in ("tan", "atan", "asin", "acos", "sinh", "cosh", "asinh", "acosh", "atanh")
    ]
    lines += [
        f"#define {name.upper()}(x) {name}{suffix}(x)"
        for name in ("exp2", "log2", "log10", "trunc", "rint")
    ]
    lines += [f"#define ATAN2(y, x) atan2{suffix}(y, x)", f"#define FMOD(x, y) fmod{suffix}(x, y)"]
    return "\n".join(lines) + "\n"


class _Generator:
    """Walks one graph and builds the kernel's statements (see the module's docstring)."""

    def __init__(self, graph: fx.Graph, batch_dims: BatchDims, unit: int, dtype: torch.dtype):
        self.graph, self.batch_dims, self.unit = graph, batch_dims, unit
        self.dtype = dtype
        self.emit = _Emitter(_CTYPES[dtype], unit)
        self.values: dict[fx.Node, Any] = {}
        self.buffers: list[tuple[str, Buffer, bool]] = []

    # ---------------------------------------------------------------- structure
    def batch_of(self, node: fx.Node, index: int | None = None) -> int | None:
        found = self.batch_dims.get(node.name)
        if index is not None and isinstance(found, tuple):
            picked: int | None = found[index]
            return picked
        if isinstance(found, tuple):
            raise Unsupported(f"{node.name} has several results; expected one")
        return None if found is None else int(found)

    def is_unit(self, shape: Sequence[int], batch: int | None) -> bool:
        """Whether the last dimension holds whole units; else its entries are columns, each
        one lane that is the same for every unit (a row statistic, a lane index)."""
        if not shape or batch == len(shape) - 1:
            return False
        last = shape[-1]
        return self.unit == 1 or (last % self.unit == 0 and last > 0)

    def make_value(
        self, shape: Sequence[int], batch: int | None, lanes: Lanes, dtype: torch.dtype
    ) -> Value:
        unit = self.is_unit(shape, batch)
        expected = _lane_shape(shape, batch, unit, self.unit)
        if lanes.shape != expected:
            lanes = np.broadcast_to(lanes, expected)
        return Value(tuple(shape), batch, unit, lanes, dtype)

    def offsets(self, shape: Sequence[int], batch: int | None) -> tuple[Lanes, str]:
        """For a contiguous buffer: each lane's offset expression (without the row and unit
        terms) and the row's stride, as C code."""
        unit = self.is_unit(shape, batch)
        grid = _lane_shape(shape, batch, unit, self.unit)
        sizes = ["B" if d == batch else str(s) for d, s in enumerate(shape)]
        strides: list[str] = []
        for d in range(len(shape)):
            rest = sizes[d + 1 :]
            strides.append("*".join(rest) if rest else "1")
        lane_strides = list(strides)
        if unit:
            lane_strides[-1] = f"{self.unit}"
        offsets: Lanes = np.empty(grid, dtype=object)
        for index in np.ndindex(*grid) if grid else [()]:
            terms = [f"{i}*{lane_strides[d]}" for d, i in enumerate(index) if i and d != batch]
            offsets[index] = " + ".join(terms) if terms else "0"
        row = strides[batch] if batch is not None else "0"
        return offsets, row

    # ---------------------------------------------------------------- inputs and outputs
    def placeholder(self, node: fx.Node) -> None:
        meta = node.meta["val"]
        shape, dtype = tuple(meta.shape), meta.dtype
        batch = self.batch_of(node)
        if dtype not in _CTYPES:
            raise Unsupported(f"input {node.name} of dtype {dtype}")
        variable = f"in{len(self.buffers)}"
        buffer = Buffer(shape, batch, _BUFFER_TYPES[dtype])
        self.buffers.append((variable, buffer, False))
        if not node.users:  # passed, never read
            return
        offsets, row = self.offsets(shape, batch)
        unit = self.is_unit(shape, batch)
        lanes: Lanes = np.empty(offsets.shape, dtype=object)
        ctype = _CTYPES[dtype]
        for index in np.ndindex(*offsets.shape) if offsets.shape else [()]:
            parts = [offsets[index]]
            if batch is not None:
                parts.append(f"b*{row}")
            if unit:
                parts.append("u")
            code = f"{variable}[{' + '.join(p for p in parts if p != '0') or '0'}]"
            if dtype == torch.bool:
                code = f"(int){code}"
            lanes[index] = Scalar(code, ctype, batch is not None, unit, 0)
        self.values[node] = self.make_value(shape, batch, lanes, dtype)

    def output(self, values: Sequence[Any]) -> list[Buffer | None]:
        found: list[Buffer | None] = []
        for value in values:
            if value is None:
                found.append(None)
                continue
            if not isinstance(value, Value):
                raise Unsupported(f"an output that is not a tensor: {value!r}")
            found.append(self.write(value))
        return found

    def write(self, value: Value) -> Buffer:
        summed = any(scalar.summed for scalar in value.lanes.flat)
        if summed and not all(scalar.summed for scalar in value.lanes.flat):
            raise Unsupported("an output partly summed over the batch")
        shape, batch = value.shape, value.batch
        if summed and batch is not None:
            raise Unsupported("an output summed over the batch that keeps a batch dimension")
        dtype = value.dtype
        if dtype not in _BUFFER_TYPES:
            raise Unsupported(f"an output of dtype {dtype}")
        variable = f"out{len(self.buffers)}"
        buffer = Buffer(shape, batch, _BUFFER_TYPES[dtype], accumulate=summed)
        self.buffers.append((variable, buffer, True))
        offsets, row = self.offsets(shape, batch)
        unit = value.unit
        for index in np.ndindex(*offsets.shape) if offsets.shape else [()]:
            scalar = value.lanes[index]
            parts = [offsets[index]]
            if batch is not None:
                parts.append(f"b*{row}")
            if unit:
                parts.append("u")
            target = f"{variable}[{' + '.join(p for p in parts if p != '0') or '0'}]"
            operation = "+=" if summed else "="
            if unit or scalar.uses_u:
                stage = scalar.stage
                self.emit.stage(stage)
                self.emit.body[stage].append(
                    f"{target} {operation} {self.emit.use(scalar, stage)};"
                )
                if not unit:  # a row value written from a unit loop: only once
                    self.emit.body[stage][-1] = f"if (u == 0) {self.emit.body[stage][-1]}"
            else:
                stage = scalar.stage
                self.emit.stage(stage)
                self.emit.pre[stage].append(f"{target} {operation} {scalar.code};")
        return buffer

    # ---------------------------------------------------------------- the walk
    def run(self) -> list[Buffer | None]:
        outputs: list[Buffer | None] = []
        for node in self.graph.nodes:
            if node.op == "placeholder":
                self.placeholder(node)
            elif node.op == "output":
                result = _args(node)[0]
                items = result if isinstance(result, (tuple, list)) else (result,)
                outputs = self.output(
                    [self.values[item] if isinstance(item, fx.Node) else item for item in items]
                )
            elif node.op == "call_function":
                self.values[node] = self.call(node)
            else:
                raise Unsupported(f"a graph node of kind {node.op} ({node.target})")
        return outputs

    def arg(self, value: Any) -> Any:
        if isinstance(value, fx.Node):
            return self.values[value]
        if isinstance(value, (list, tuple)):
            return type(value)(self.arg(item) for item in value)
        return value

    def call(self, node: fx.Node) -> Any:
        target = node.target
        if target is operator.getitem:
            return self.values[_args(node)[0]][_args(node)[1]]
        folded = self.fold(node)
        if folded is not None:
            return folded
        self.values.update(
            {arg: self.const_value(value, arg) for arg, value in self._const_args(node)}
        )
        handler = _HANDLERS.get(target)
        if handler is not None:
            return handler(self, node)
        if target in ELEMENTWISE or target in _POINTWISE_WITH_SCALARS:
            return self.pointwise(node)
        name = getattr(target, "__name__", str(target))
        if name.split(".")[0] in ("addmm", "mm", "bmm", "matmul", "linear", "baddbmm"):
            raise Unsupported(
                f"a matrix product inside the step ({name}): only plain nn.Linear maps applied "
                "to forward_cell's x or hidden are taken out of it"
            )
        raise Unsupported(f"the operation {name} (the generator has no rule for it)")

    # ---------------------------------------------------------------- constants
    def fold(self, node: fx.Node) -> Const | list[Const] | None:
        """The node's value if every tensor it reads is known (or it makes one), else None."""
        tensors = [a for a in _flat_args((_args(node), node.kwargs)) if isinstance(a, fx.Node)]
        if any(not isinstance(self.values[a], Const) for a in tensors):
            return None
        if node.target in _RANDOM_OR_INPUT:
            return None

        def real(value: Any) -> Any:
            if isinstance(value, fx.Node):
                return self.values[value].tensor
            if isinstance(value, (list, tuple)):
                return type(value)(real(v) for v in value)
            return value

        kwargs = {k: real(v) for k, v in node.kwargs.items() if k not in ("device", "pin_memory")}
        target: Any = node.target
        result = target(*real(_args(node)), **kwargs)
        if isinstance(result, (list, tuple)):
            return [Const(r) for r in result]
        return Const(result)

    def _const_args(self, node: fx.Node) -> list[tuple[fx.Node, Const]]:
        return [
            (arg, self.values[arg])
            for arg in _flat_args((_args(node), node.kwargs))
            if isinstance(arg, fx.Node) and isinstance(self.values.get(arg), Const)
        ]

    def const_value(self, const: Const, node: fx.Node) -> Value:
        """A known tensor as lanes: a literal where a lane is the same for every unit, else a
        static array read at ``u``."""
        tensor = const.tensor
        shape = tuple(tensor.shape)
        batch = (
            self.batch_of(node) if not isinstance(self.batch_dims.get(node.name), tuple) else None
        )
        unit = self.is_unit(shape, batch)
        grid = _lane_shape(shape, batch, unit, self.unit)
        if batch is not None:
            tensor = tensor.narrow(batch, 0, 1)
        dtype = tensor.dtype
        lanes: Lanes = np.empty(grid, dtype=object)
        for index in np.ndindex(*grid) if grid else [()]:
            if not unit:
                lanes[index] = self.constant(tensor[index].item(), dtype)
                continue
            row = tensor[index[:-1]] if len(index) > 1 else tensor
            values = row[index[-1] * self.unit : (index[-1] + 1) * self.unit].tolist()
            if all(v == values[0] for v in values):
                lanes[index] = self.constant(values[0], dtype)
                continue
            name = self.emit.fresh("c")
            ctype = _CTYPES.get(dtype, self.emit.scalar)
            ctype = self.emit.scalar if dtype.is_floating_point else ctype
            items = ", ".join(self.constant(v, dtype).code for v in values)
            self.emit.top.append(f"static const {ctype} {name}[{self.unit}] = {{{items}}};")
            lanes[index] = Scalar(f"{name}[u]", ctype, False, True, 0)
        return Value(shape, batch, unit, lanes, dtype)

    # ---------------------------------------------------------------- element-wise
    def constant(self, number: Any, dtype: torch.dtype) -> Scalar:
        if isinstance(number, bool):
            return Scalar("1" if number else "0", "int", False, False, 0)
        if isinstance(number, int) and dtype in (torch.int64, torch.bool):
            return Scalar(f"{number}", _CTYPES[dtype], False, False, 0)
        value = float(number)
        if math.isinf(value):
            code = "INFINITY" if value > 0 else "(-INFINITY)"
        elif math.isnan(value):
            code = "NAN"
        else:
            code = repr(value)
            if self.emit.scalar == "float":
                code += "f"
        return Scalar(f"(({self.emit.scalar}){code})", "scalar_t", False, False, 0)

    def operand(self, value: Any, dtype: torch.dtype) -> Value:
        if isinstance(value, Value):
            return value
        if isinstance(value, Const):
            raise Unsupported("an unfolded constant operand")
        if isinstance(value, (int, float, bool)):
            lanes: Lanes = np.empty((), dtype=object)
            lanes[()] = self.constant(value, dtype)
            return Value((), None, False, lanes, dtype)
        raise Unsupported(f"an operand that is not a tensor or a number: {value!r}")

    def pointwise(self, node: fx.Node) -> Value:
        meta = node.meta["val"]
        shape, dtype = tuple(meta.shape), meta.dtype
        batch = self.batch_of(node)
        target = node.target
        args = list(_args(node))
        tensor_args: list[Value] = []
        extra: list[Any] = []
        if target in _POINTWISE_WITH_SCALARS:
            tensor_args = [self.operand(self.arg(args[0]), dtype)]
            extra = [self.arg(a) for a in args[1:]]
            extra += [node.kwargs.get(k) for k in ("min", "max") if k in node.kwargs]
        else:
            tensor_args = [self.operand(self.arg(a), dtype) for a in args]
        alpha = node.kwargs.get("alpha")
        if target in (aten.rsub.Scalar, aten.rsub.Tensor):
            tensor_args = [tensor_args[1], tensor_args[0]]
        grids = [self.aligned(value, shape, batch) for value in tensor_args]
        lanes_shape = _lane_shape(shape, batch, self.is_unit(shape, batch), self.unit)
        broadcast: list[Lanes] = [np.broadcast_to(grid, lanes_shape) for grid in grids]
        out: Lanes = np.empty(lanes_shape, dtype=object)
        ctype = _CTYPES.get(dtype, "scalar_t")
        if dtype in (torch.float32, torch.float64):
            ctype = "scalar_t"
        for index in np.ndindex(*lanes_shape) if lanes_shape else [()]:
            scalars = [grid[index] for grid in broadcast]
            out[index] = self.combine(target, scalars, extra, alpha, ctype, node)
        return self.make_value(shape, batch, out, dtype)

    def aligned(self, value: Value, shape: Sequence[int], batch: int | None) -> Lanes:
        """``value``'s lanes with as many dimensions as ``shape`` (leading ones added)."""
        lanes = value.lanes
        missing = len(shape) - lanes.ndim
        if missing < 0:
            raise Unsupported("an operand with more dimensions than the result")
        if value.unit and value.shape and value.shape[-1] != 0:
            result_unit = self.is_unit(shape, batch)
            if not result_unit:
                raise Unsupported("a per-unit value broadcast along a single column")
        return lanes.reshape((1,) * missing + lanes.shape)

    def combine(
        self,
        target: Any,
        scalars: list[Scalar],
        extra: list[Any],
        alpha: Any,
        ctype: str,
        node: fx.Node,
    ) -> Scalar:
        summed = [s for s in scalars if s.summed]
        if summed:
            return self.combine_summed(target, scalars, node)
        stage = max(s.stage for s in scalars)
        uses_b = any(s.uses_b for s in scalars)
        uses_u = any(s.uses_u for s in scalars)
        codes = [self.emit.use(s, stage) if uses_u else s.code for s in scalars]
        if target in _POINTWISE_WITH_SCALARS:
            code = self.scalar_op(target, codes[0], extra)
        elif alpha is not None:
            code = ELEMENTWISE[target](*codes, self.constant(alpha, self.dtype).code)
        else:
            code = ELEMENTWISE[target](*codes)
        return self.emit.define(code, ctype, uses_b, uses_u, stage)

    def scalar_op(self, target: Any, code: str, extra: list[Any]) -> str:
        def lit(number: Any) -> str:
            return self.constant(number, self.dtype).code

        if target == aten.pow.Tensor_Scalar:
            exponent = extra[0]
            if exponent == 2:
                return f"({code} * {code})"
            if exponent == 1:
                return code
            if exponent == 0.5:
                return f"SQRT({code})"
            return f"POW({code}, {lit(exponent)})"
        if target == aten.clamp.default:
            low = extra[0] if len(extra) > 0 else None
            high = extra[1] if len(extra) > 1 else None
            result = code
            if low is not None:
                result = f"({result} < {lit(low)} ? {lit(low)} : {result})"
            if high is not None:
                result = f"({result} > {lit(high)} ? {lit(high)} : {result})"
            return result
        if target == aten.clamp_min.default:
            return f"({code} < {lit(extra[0])} ? {lit(extra[0])} : {code})"
        if target == aten.clamp_max.default:
            return f"({code} > {lit(extra[0])} ? {lit(extra[0])} : {code})"
        if target == aten.leaky_relu.default:
            slope = extra[0] if extra else 0.01
            return f"({code} > 0 ? {code} : {code} * {lit(slope)})"
        raise Unsupported(f"the operation {target}")

    def combine_summed(self, target: Any, scalars: list[Scalar], node: fx.Node) -> Scalar:
        """Linear operations on sums over the batch stay sums of per-row contributions.

        Allowed: a sum plus or minus a sum, its negation, and a sum times or divided by a
        value that does not depend on the row (a parameter, a constant).
        """
        zero = (f"(({self.emit.scalar})0.0f)", f"(({self.emit.scalar})0.0)")
        summed = [s.summed or s.code in zero for s in scalars]
        per_row = [s.uses_b and not s.summed for s in scalars]
        linear = target in (aten.add.Tensor, aten.sub.Tensor, aten.neg.default) and all(summed)
        if target == aten.where.self:  # a fixed mask choosing between sums (or zeros)
            linear = not scalars[0].uses_b and not scalars[0].summed and all(summed[1:])
        scaled = (
            target in (aten.mul.Tensor, aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar)
            and summed[0] != (len(summed) > 1 and summed[1])
            and not any(per_row)
            and not (target in (aten.div.Tensor, aten.div.Scalar) and summed[-1])
        )
        if not (linear or scaled):
            raise Unsupported(f"{node.name} is not linear in a sum over the batch")
        stage = max(s.stage for s in scalars)
        uses_u = any(s.uses_u for s in scalars)
        codes = [self.emit.use(s, stage) if uses_u else s.code for s in scalars]
        result = self.emit.define(ELEMENTWISE[target](*codes), "scalar_t", True, uses_u, stage)
        result.summed = True
        return result


# ---------------------------------------------------------------------- view rules
def _moved_batch(node: fx.Node, batch_in: int | None, batch_out: int | None) -> None:
    if (batch_in is None) != (batch_out is None):
        raise Unsupported(f"{node.name} ({node.target}) adds or removes the batch dimension")


def _reshape(gen: _Generator, node: fx.Node) -> Value:
    source: Value = gen.values[_args(node)[0]]
    meta = node.meta["val"]
    shape = tuple(meta.shape)
    batch = gen.batch_of(node)
    _moved_batch(node, source.batch, batch)
    unit = gen.is_unit(shape, batch)
    grid = _lane_shape(shape, batch, unit, gen.unit)
    if source.batch is not None:
        before_in = math.prod(source.shape[: source.batch])
        before_out = math.prod(shape[:batch])
        if before_in != before_out:
            raise Unsupported(f"{node.name} reshapes across the batch dimension")
    if source.unit != unit and math.prod(source.lanes.shape) != math.prod(grid):
        raise Unsupported(f"{node.name} reshapes a unit into several lanes, or lanes into units")
    if not source.unit and unit and gen.unit != 1:
        raise Unsupported(f"{node.name} reshapes single columns into units")
    lanes = np.asarray(source.lanes).reshape(grid) if grid else np.asarray(source.lanes).reshape(())
    return Value(shape, batch, unit, lanes, source.dtype)


def _permute(gen: _Generator, node: fx.Node) -> Value:
    source: Value = gen.values[_args(node)[0]]
    order = [d % max(len(source.shape), 1) for d in _args(node)[1]]
    if source.unit and order[-1] != len(order) - 1:
        raise Unsupported(f"{node.name} moves the unit (feature) dimension")
    batch = gen.batch_of(node)
    lanes = np.transpose(source.lanes, order)
    shape = tuple(source.shape[d] for d in order)
    return Value(shape, batch, source.unit, lanes, source.dtype)


def _transpose(gen: _Generator, node: fx.Node) -> Value:
    source: Value = gen.values[_args(node)[0]]
    rank = len(source.shape)
    first, second = (d % rank for d in _args(node)[1:3])
    order = list(range(rank))
    order[first], order[second] = order[second], order[first]
    fake = fx.Node(
        node.graph, node.name, "call_function", aten.permute.default, (_args(node)[0], order), {}
    )
    fake.meta = node.meta
    return _permute(gen, fake)


def _unsqueeze(gen: _Generator, node: fx.Node) -> Value:
    source: Value = gen.values[_args(node)[0]]
    meta = node.meta["val"]
    shape = tuple(meta.shape)
    dim = _args(node)[1] % len(shape)
    if source.unit and dim == len(shape) - 1:
        raise Unsupported(f"{node.name} adds a dimension after the units")
    lanes = np.expand_dims(source.lanes, dim)
    unit = gen.is_unit(shape, gen.batch_of(node))
    return Value(shape, gen.batch_of(node), unit, lanes, source.dtype)


def _squeeze(gen: _Generator, node: fx.Node) -> Value:
    source: Value = gen.values[_args(node)[0]]
    meta = node.meta["val"]
    shape = tuple(meta.shape)
    if len(_args(node)) > 1:
        dims = _args(node)[1] if isinstance(_args(node)[1], (list, tuple)) else [_args(node)[1]]
        dims = [d % len(source.shape) for d in dims if source.shape[d % len(source.shape)] == 1]
    else:
        dims = [d for d, s in enumerate(source.shape) if s == 1]
    if source.batch in dims:
        raise Unsupported(f"{node.name} squeezes the batch dimension")
    if source.unit and len(source.shape) - 1 in dims:
        raise Unsupported(f"{node.name} squeezes the unit dimension")
    lanes = np.squeeze(source.lanes, axis=tuple(dims)) if dims else source.lanes
    batch = gen.batch_of(node)
    gen.is_unit(shape, batch)
    return gen.make_value(shape, batch, np.asarray(lanes, dtype=object), source.dtype)


def _expand(gen: _Generator, node: fx.Node) -> Value:
    source: Value = gen.values[_args(node)[0]]
    meta = node.meta["val"]
    shape = tuple(meta.shape)
    batch = gen.batch_of(node)
    lanes = source.lanes.reshape((1,) * (len(shape) - source.lanes.ndim) + source.lanes.shape)
    if (
        source.unit is False
        and gen.is_unit(shape, batch)
        and source.shape
        and source.shape[-1] == 1
    ):
        pass  # a column broadcast over the units: the same scalar for every u
    grid = _lane_shape(shape, batch, gen.is_unit(shape, batch), gen.unit)
    return Value(
        shape, batch, gen.is_unit(shape, batch), np.broadcast_to(lanes, grid), source.dtype
    )


def _slice(gen: _Generator, node: fx.Node) -> Value:
    source: Value = gen.values[_args(node)[0]]
    args = list(_args(node)) + [None] * 5
    dim = (args[1] if args[1] is not None else 0) % len(source.shape)
    start, end, step = args[2] or 0, args[3], args[4] or 1
    size = source.shape[dim]
    end = size if end is None or end > size else end
    start = max(start + size if start < 0 else start, 0)
    end = end + size if end < 0 else end
    if dim == source.batch:
        if start == 0 and end >= size and step == 1:
            return source
        raise Unsupported(f"{node.name} slices the batch dimension")
    meta = node.meta["val"]
    shape = tuple(meta.shape)
    if source.unit and dim == len(source.shape) - 1:
        if start % gen.unit or end % gen.unit or step != 1:
            raise Unsupported(
                f"{node.name} slices features {start}:{end} (step {step}), not whole units of "
                f"{gen.unit} (hidden_size)"
            )
        start, end = start // gen.unit, end // gen.unit
    index = [slice(None)] * source.lanes.ndim
    index[dim] = slice(start, end, step)
    return Value(shape, source.batch, source.unit, source.lanes[tuple(index)], source.dtype)


def _split(gen: _Generator, node: fx.Node) -> list[Value]:
    source: Value = gen.values[_args(node)[0]]
    sizes = _args(node)[1]
    dim = (_args(node)[2] if len(_args(node)) > 2 else 0) % len(source.shape)
    if isinstance(sizes, int):
        total = source.shape[dim]
        sizes = [min(sizes, total - i) for i in range(0, total, sizes)]
    pieces = []
    start = 0
    for size in sizes:
        fake = fx.Node(
            node.graph,
            f"{node.name}",
            "call_function",
            aten.slice.Tensor,
            (_args(node)[0], dim, start, start + size),
            {},
        )
        shape = list(source.shape)
        shape[dim] = size
        fake.meta = {"val": torch.empty(shape, dtype=source.dtype, device="meta")}
        gen.batch_dims = {**gen.batch_dims, fake.name: source.batch}
        pieces.append(_slice(gen, fake))
        start += size
    return pieces


def _cat(gen: _Generator, node: fx.Node) -> Value:
    parts: list[Value] = [
        gen.values[item]
        for item in _args(node)[0]
        if math.prod(gen.values[item].shape) or len(gen.values[item].shape) > 1
    ]
    dim = _args(node)[1] if len(_args(node)) > 1 else 0
    meta = node.meta["val"]
    shape = tuple(meta.shape)
    dim %= len(shape)
    batch = gen.batch_of(node)
    if dim == batch:
        raise Unsupported(f"{node.name} concatenates along the batch dimension")
    unit = gen.is_unit(shape, batch)
    if unit and dim == len(shape) - 1 and any(p.shape[dim] % gen.unit for p in parts):
        raise Unsupported(f"{node.name} concatenates parts that are not whole units")
    lanes = np.concatenate([p.lanes for p in parts], axis=dim)
    return Value(shape, batch, unit, lanes, meta.dtype)


def _identity(gen: _Generator, node: fx.Node) -> Value:
    value: Value = gen.values[_args(node)[0]]
    return value


def _select(gen: _Generator, node: fx.Node) -> Value:
    source: Value = gen.values[_args(node)[0]]
    dim = _args(node)[1] % len(source.shape)
    index = _args(node)[2] % source.shape[dim]
    if dim == source.batch:
        raise Unsupported(f"{node.name} selects one row of the batch")
    if source.unit and dim == len(source.shape) - 1 and gen.unit != 1:
        raise Unsupported(f"{node.name} selects one feature of a unit")
    meta = node.meta["val"]
    lanes = np.take(source.lanes, index, axis=dim)
    batch = gen.batch_of(node)
    return gen.make_value(tuple(meta.shape), batch, np.asarray(lanes, dtype=object), source.dtype)


def _full(gen: _Generator, node: fx.Node) -> Value:
    meta = node.meta["val"]
    shape = tuple(meta.shape)
    batch = gen.batch_of(node)
    fill = (
        _args(node)[1]
        if node.target in (aten.full.default, aten.full_like.default)
        else (_args(node)[0] if node.target == aten.scalar_tensor.default else 0)
    )
    if node.target == aten.full_like.default:
        fill = _args(node)[1]
    constant = gen.constant(fill, meta.dtype)
    unit = gen.is_unit(shape, batch)
    grid = _lane_shape(shape, batch, unit, gen.unit)
    lanes: Lanes = np.empty(grid, dtype=object)
    for index in np.ndindex(*grid) if grid else [()]:
        lanes[index] = constant
    return Value(shape, batch, unit, lanes, meta.dtype)


def _slice_scatter(gen: _Generator, node: fx.Node) -> Value:
    base: Value = gen.values[_args(node)[0]]
    src: Value = gen.values[_args(node)[1]]
    args = list(_args(node)) + [None] * 5
    dim = (args[2] if args[2] is not None else 0) % len(base.shape)
    start, end, step = args[3] or 0, args[4], args[5] or 1
    size = base.shape[dim]
    end = size if end is None or end > size else end
    if dim == base.batch:
        raise Unsupported(f"{node.name} scatters along the batch dimension")
    if base.unit and dim == len(base.shape) - 1:
        if start % gen.unit or end % gen.unit or step != 1:
            raise Unsupported(f"{node.name} scatters features that are not whole units")
        start, end = start // gen.unit, end // gen.unit
    lanes: Lanes = np.array(base.lanes, dtype=object, copy=True)
    index = [slice(None)] * lanes.ndim
    index[dim] = slice(start, end, step)
    region = lanes[tuple(index)]
    lanes[tuple(index)] = np.broadcast_to(
        src.lanes.reshape((1,) * (lanes.ndim - src.lanes.ndim) + src.lanes.shape), region.shape
    )
    return Value(base.shape, base.batch, base.unit, lanes, base.dtype)


# ---------------------------------------------------------------------- reductions
def _reduced_dims(source: Value, dims: Any) -> list[int]:
    rank = len(source.shape)
    if dims is None or dims == []:
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return sorted(d % rank for d in dims)


def _reduce(gen: _Generator, node: fx.Node, kind: str) -> Value:
    """``sum``, ``mean``, ``amax``, ``amin`` over some dimensions, ``keepdim`` or not."""
    source: Value = gen.values[_args(node)[0]]
    dims = _reduced_dims(source, _args(node)[1] if len(_args(node)) > 1 else node.kwargs.get("dim"))
    keep = bool(_args(node)[2] if len(_args(node)) > 2 else node.kwargs.get("keepdim", False))
    meta = node.meta["val"]
    shape, batch = tuple(meta.shape), gen.batch_of(node)
    count = math.prod(source.shape[d] for d in dims if d != source.batch)
    lanes = source.lanes
    lane_axes = [
        d for d in dims if d != source.batch and not (source.unit and d == len(source.shape) - 1)
    ]
    over_units = source.unit and len(source.shape) - 1 in dims
    over_batch = source.batch is not None and source.batch in dims
    if over_batch and kind not in ("sum",):
        raise Unsupported(f"{node.name}: a {kind} over the batch")
    # combine the lanes of the reduced lane axes
    combined = _combine_lanes(
        gen, lanes, lane_axes + ([len(source.shape) - 1] if over_units else []), kind, node
    )
    if over_units:
        combined = _row_reduce(gen, combined, kind, node)
    if kind == "mean":
        divisor = gen.constant(count, gen.dtype).code
        combined = _map(
            gen,
            combined,
            lambda s: gen.emit.define(
                f"({gen.emit.use(s, s.stage) if s.uses_u else s.code} / {divisor})",
                "scalar_t",
                s.uses_b,
                s.uses_u,
                s.stage,
            ),
        )
    if over_batch:
        combined = _map(gen, combined, lambda s: _as_summed(s))
    # shape the grid as the result
    grid_axes = list(range(len(source.shape)))
    kept = combined
    if not keep:
        squeeze_axes = tuple(d for d in dims)
        kept = (
            np.asarray(np.squeeze(kept, axis=squeeze_axes), dtype=object) if squeeze_axes else kept
        )
    del grid_axes
    return gen.make_value(shape, batch, np.asarray(kept, dtype=object), meta.dtype)


def _as_summed(scalar: Scalar) -> Scalar:
    copy = Scalar(
        scalar.code, scalar.ctype, True, scalar.uses_u, scalar.stage, True, scalar.variable
    )
    return copy


def _map(gen: _Generator, lanes: Lanes, function: Callable[[Scalar], Scalar]) -> Lanes:
    out: Lanes = np.empty(lanes.shape, dtype=object)
    for index in np.ndindex(*lanes.shape) if lanes.shape else [()]:
        out[index] = function(lanes[index])
    return out


def _maximum_code(a: str, b: str) -> str:
    """C for torch's maximum: NaN propagates. This form, b chosen when a < b or b is NaN,
    is one gcc vectorises (``a != a || a >= b``, an unordered comparison, it does not)."""
    return f"((({a}) < ({b}) || ({b}) != ({b})) ? ({b}) : ({a}))"


def _minimum_code(a: str, b: str) -> str:
    """C for torch's minimum: NaN propagates (see :func:`_maximum_code`)."""
    return f"((({a}) > ({b}) || ({b}) != ({b})) ? ({b}) : ({a}))"


_COMBINE = {
    "sum": lambda a, b: f"({a} + {b})",
    "mean": lambda a, b: f"({a} + {b})",
    "amax": lambda a, b: _maximum_code(a, b),
    "amin": lambda a, b: _minimum_code(a, b),
}


def _combine_lanes(
    gen: _Generator, lanes: Lanes, axes: list[int], kind: str, node: fx.Node
) -> Lanes:
    """Reduce ``lanes`` over ``axes`` (kept with size 1) by combining their scalars."""
    for axis in axes:
        size = lanes.shape[axis]
        if size == 1:
            continue
        shape = list(lanes.shape)
        shape[axis] = 1
        out: Lanes = np.empty(shape, dtype=object)
        for index in np.ndindex(*shape):
            scalars = [lanes[(*index[:axis], j, *index[axis + 1 :])] for j in range(size)]
            stage = max(s.stage for s in scalars)
            uses_u = any(s.uses_u for s in scalars)
            codes = [gen.emit.use(s, stage) if uses_u else s.code for s in scalars]
            uses_b = any(s.uses_b for s in scalars)
            code = codes[0]
            for other in codes[1:-1]:  # a variable per step: a max repeats its operands
                code = gen.emit.define(
                    _COMBINE[kind](code, other), "scalar_t", uses_b, uses_u, stage
                ).code
            out[index] = gen.emit.define(
                _COMBINE[kind](code, codes[-1]), "scalar_t", uses_b, uses_u, stage
            )
        lanes = out
    return lanes


def _row_reduce(gen: _Generator, lanes: Lanes, kind: str, node: fx.Node) -> Lanes:
    """Reduce each lane over the units ``u < U``: a row scalar, from the next unit loop."""
    out: Lanes = np.empty(lanes.shape, dtype=object)
    for index in np.ndindex(*lanes.shape) if lanes.shape else [()]:
        scalar = lanes[index]
        if not scalar.uses_u:  # a row value: the same for every unit
            factor = gen.constant(gen.unit, gen.dtype).code
            code = {
                "sum": f"({scalar.code} * {factor})",
                "mean": f"({scalar.code} * {factor})",
            }.get(kind, scalar.code)
            out[index] = gen.emit.define(code, "scalar_t", scalar.uses_b, False, scalar.stage)
            continue
        stage = scalar.stage
        gen.emit.stage(stage + 1)
        accumulator = gen.emit.fresh("acc")
        ctype = gen.emit.scalar
        initial = {"sum": "0", "mean": "0", "amax": "(-INFINITY)", "amin": "INFINITY"}[kind]
        gen.emit.pre[stage].append(f"{ctype} {accumulator} = {initial};")
        code = gen.emit.use(scalar, stage)
        if kind in ("sum", "mean"):
            gen.emit.body[stage].append(f"{accumulator} += {code};")
            gen.emit.reductions[stage].append(f"reduction(+:{accumulator})")
        else:
            pick = _maximum_code if kind == "amax" else _minimum_code  # NaN wins, as in torch
            gen.emit.body[stage].append(f"{accumulator} = {pick(accumulator, code)};")
            gen.emit.reductions[stage].append(
                f"reduction({'max' if kind == 'amax' else 'min'}:{accumulator})"
            )
            # omp's max/min reduction does not propagate NaN; the NaN check keeps it per lane
        result = gen.emit.fresh("r")
        gen.emit.pre[stage + 1].append(f"const {ctype} {result} = {accumulator};")
        out[index] = Scalar(result, "scalar_t", scalar.uses_b, False, stage + 1)
    return out


def _broadcast_back(lanes: Lanes, shape: tuple[int, ...]) -> Lanes:
    return np.broadcast_to(lanes, shape)


def _var_mean(gen: _Generator, node: fx.Node) -> tuple[Value, Value]:
    """``var_mean(x, dims, correction=c, keepdim=k)``: the mean, then the mean square of the
    deviations from it (two passes where the dimensions are a row's features)."""
    source: Value = gen.values[_args(node)[0]]
    dims = _reduced_dims(source, _args(node)[1] if len(_args(node)) > 1 else node.kwargs.get("dim"))
    correction: Any = node.kwargs.get("correction", 1)
    correction = 1 if correction is None else correction
    keep = bool(node.kwargs.get("keepdim", False))
    if source.batch is not None and source.batch in dims:
        raise Unsupported(f"{node.name}: a variance over the batch")
    count = math.prod(source.shape[d] for d in dims)
    last = len(source.shape) - 1
    lane_axes = [d for d in dims if not (source.unit and d == last)]
    over_units = source.unit and last in dims
    reduce_axes = lane_axes + ([last] if over_units else [])
    total = _combine_lanes(gen, source.lanes, reduce_axes, "sum", node)
    if over_units:
        total = _row_reduce(gen, total, "sum", node)
    number = gen.constant(count, gen.dtype).code
    mean = _map(
        gen,
        total,
        lambda s: gen.emit.define(
            f"({s.code} / {number})", "scalar_t", s.uses_b, s.uses_u, s.stage
        ),
    )
    spread: Lanes = np.broadcast_to(mean, source.lanes.shape)
    squares: Lanes = np.empty(source.lanes.shape, dtype=object)
    for index in np.ndindex(*source.lanes.shape) if source.lanes.shape else [()]:
        x, m = source.lanes[index], spread[index]
        stage = max(x.stage, m.stage)
        uses_u = x.uses_u or m.uses_u
        xc = gen.emit.use(x, stage) if uses_u else x.code
        deviation = gen.emit.define(
            f"({xc} - {m.code})", "scalar_t", x.uses_b or m.uses_b, uses_u, stage
        )
        squares[index] = gen.emit.define(
            f"({deviation.code} * {deviation.code})", "scalar_t", deviation.uses_b, uses_u, stage
        )
    spread_total = _combine_lanes(gen, squares, reduce_axes, "sum", node)
    if over_units:
        spread_total = _row_reduce(gen, spread_total, "sum", node)
    denominator = gen.constant(max(count - correction, 0), gen.dtype).code
    var = _map(
        gen,
        spread_total,
        lambda s: gen.emit.define(
            f"({s.code} / {denominator})", "scalar_t", s.uses_b, s.uses_u, s.stage
        ),
    )
    results = []
    meta = node.meta["val"]
    pair = isinstance(meta, (tuple, list))  # var_mean; var alone has one result
    for position, lanes in enumerate((var, mean)):
        kept = lanes if keep else np.asarray(np.squeeze(lanes, axis=tuple(dims)), dtype=object)
        value = meta[position] if pair else meta
        batch = gen.batch_of(node, position) if pair else gen.batch_of(node)
        results.append(gen.make_value(tuple(value.shape), batch, kept, value.dtype))
    return results[0], results[1]


def _best_lane(
    gen: _Generator, node: fx.Node, source: Value, dim: int, keep: bool, larger: bool
) -> tuple[Lanes, Lanes]:
    """The extreme value along lane axis ``dim`` and its first index (torch's tie rule)."""
    if dim == source.batch or (source.unit and dim == len(source.shape) - 1 and gen.unit != 1):
        raise Unsupported(f"{node.name}: an arg-max or arg-min over the batch or a row's features")
    lanes = source.lanes
    size = lanes.shape[dim]
    shape = list(lanes.shape)
    shape[dim] = 1
    values: Lanes = np.empty(shape, dtype=object)
    indices: Lanes = np.empty(shape, dtype=object)
    op = "<" if larger else ">"
    for index in np.ndindex(*shape):
        scalars = [lanes[(*index[:dim], j, *index[dim + 1 :])] for j in range(size)]
        stage = max(s.stage for s in scalars)
        uses_u = any(s.uses_u for s in scalars)
        uses_b = any(s.uses_b for s in scalars)
        codes = [gen.emit.use(s, stage) if uses_u else s.code for s in scalars]
        best = gen.emit.define(codes[0], "scalar_t", uses_b, uses_u, stage)
        where = gen.emit.define("0", "int64_t", uses_b, uses_u, stage)
        for j, code in enumerate(codes[1:], start=1):
            # the first NaN wins, as in torch; written so that gcc vectorises it
            better = (
                f"(({best.code} {op} {code}) || ({code} != {code} && {best.code} == {best.code}))"
            )
            new_where = gen.emit.define(
                f"({better} ? {j} : {where.code})", "int64_t", uses_b, uses_u, stage
            )
            best = gen.emit.define(
                f"({better} ? {code} : {best.code})", "scalar_t", uses_b, uses_u, stage
            )
            where = new_where
        values[index], indices[index] = best, where
    if not keep:
        values = np.asarray(np.squeeze(values, axis=dim), dtype=object)
        indices = np.asarray(np.squeeze(indices, axis=dim), dtype=object)
    return values, indices


def _max_dim(gen: _Generator, node: fx.Node) -> tuple[Value, Value]:
    source: Value = gen.values[_args(node)[0]]
    dim = _args(node)[1] % len(source.shape)
    keep = bool(_args(node)[2] if len(_args(node)) > 2 else node.kwargs.get("keepdim", False))
    larger = node.target == aten.max.dim
    values, indices = _best_lane(gen, node, source, dim, keep, larger)
    meta = node.meta["val"]
    return (
        gen.make_value(tuple(meta[0].shape), gen.batch_of(node, 0), values, meta[0].dtype),
        gen.make_value(tuple(meta[1].shape), gen.batch_of(node, 1), indices, meta[1].dtype),
    )


def _argmax(gen: _Generator, node: fx.Node) -> Value:
    source: Value = gen.values[_args(node)[0]]
    if len(_args(node)) < 2 or _args(node)[1] is None:
        raise Unsupported(f"{node.name}: an arg-max over every element")
    dim = _args(node)[1] % len(source.shape)
    keep = bool(_args(node)[2] if len(_args(node)) > 2 else node.kwargs.get("keepdim", False))
    _, indices = _best_lane(gen, node, source, dim, keep, node.target == aten.argmax.default)
    meta = node.meta["val"]
    return gen.make_value(tuple(meta.shape), gen.batch_of(node), indices, meta.dtype)


def _gather(gen: _Generator, node: fx.Node) -> Value:
    """``gather`` along a lane axis: each result lane picks the lane its index names."""
    source: Value = gen.values[_args(node)[0]]
    dim = _args(node)[1] % len(source.shape)
    index: Value = gen.values[_args(node)[2]]
    if dim == source.batch or (source.unit and dim == len(source.shape) - 1 and gen.unit != 1):
        raise Unsupported(f"{node.name} gathers along the batch or a row's features")
    meta = node.meta["val"]
    shape = tuple(meta.shape)
    batch = gen.batch_of(node)
    grid = _lane_shape(shape, batch, gen.is_unit(shape, batch), gen.unit)
    picks: Lanes = np.broadcast_to(index.lanes, grid)
    out: Lanes = np.empty(grid, dtype=object)
    size = source.lanes.shape[dim]
    for position in np.ndindex(*grid) if grid else [()]:
        chosen = picks[position]
        options = [
            source.lanes[
                tuple(
                    min(p, source.lanes.shape[a] - 1) if a != dim else j
                    for a, p in enumerate(position)
                )
            ]
            for j in range(size)
        ]
        stage = max([chosen.stage] + [o.stage for o in options])
        uses_u = chosen.uses_u or any(o.uses_u for o in options)
        uses_b = chosen.uses_b or any(o.uses_b for o in options)
        pick = gen.emit.use(chosen, stage) if uses_u else chosen.code
        code = gen.emit.use(options[-1], stage) if uses_u else options[-1].code
        for j in range(size - 2, -1, -1):
            option = gen.emit.use(options[j], stage) if uses_u else options[j].code
            code = f"({pick} == {j} ? {option} : {code})"
        out[position] = gen.emit.define(code, "scalar_t", uses_b, uses_u, stage)
    return Value(shape, batch, gen.is_unit(shape, batch), out, meta.dtype)


def _scatter_add(gen: _Generator, node: fx.Node) -> Value:
    """``scatter_add`` along a lane axis: each source lane is added to the lane its index names."""
    base: Value = gen.values[_args(node)[0]]
    dim = _args(node)[1] % len(base.shape)
    index: Value = gen.values[_args(node)[2]]
    source: Value = gen.values[_args(node)[3]]
    if dim == base.batch or (base.unit and dim == len(base.shape) - 1 and gen.unit != 1):
        raise Unsupported(f"{node.name} scatters along the batch or a row's features")
    lanes: Lanes = np.array(base.lanes, dtype=object, copy=True)
    src_grid = source.lanes
    picks: Lanes = np.broadcast_to(index.lanes, src_grid.shape)
    for position in np.ndindex(*src_grid.shape) if src_grid.shape else [()]:
        for j in range(lanes.shape[dim]):
            target = tuple(
                min(p, lanes.shape[a] - 1) if a != dim else j for a, p in enumerate(position)
            )
            old, add, pick = lanes[target], src_grid[position], picks[position]
            stage = max(old.stage, add.stage, pick.stage)
            uses_u = old.uses_u or add.uses_u or pick.uses_u
            uses_b = old.uses_b or add.uses_b or pick.uses_b
            codes = [gen.emit.use(s, stage) if uses_u else s.code for s in (old, add, pick)]
            lanes[target] = gen.emit.define(
                f"({codes[2]} == {j} ? {codes[0]} + {codes[1]} : {codes[0]})",
                "scalar_t",
                uses_b,
                uses_u,
                stage,
            )
    return Value(base.shape, base.batch, base.unit, lanes, base.dtype)


def _to_copy(gen: _Generator, node: fx.Node) -> Value:
    source: Value = gen.values[_args(node)[0]]
    meta = node.meta["val"]
    dtype = meta.dtype
    if dtype == source.dtype:
        return source
    if dtype not in _CTYPES:
        raise Unsupported(f"{node.name}: a conversion to {dtype}")
    ctype = "scalar_t" if dtype.is_floating_point else _CTYPES[dtype]
    cast = gen.emit.scalar if ctype == "scalar_t" else ctype
    lanes = _map(
        gen,
        source.lanes,
        lambda s: gen.emit.define(
            f"(({cast}){gen.emit.use(s, s.stage) if s.uses_u else s.code})",
            ctype,
            s.uses_b,
            s.uses_u,
            s.stage,
        ),
    )
    return Value(source.shape, source.batch, source.unit, lanes, dtype)


def _flat_args(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [item for v in value for item in _flat_args(v)]
    if isinstance(value, dict):
        return [item for v in value.values() for item in _flat_args(v)]
    return [value]


_RANDOM_OR_INPUT = {aten.rand.default, aten.randn.default, aten.bernoulli.default}
"""Never folded: a draw is not a constant."""

_HANDLERS: dict[Any, Callable[[_Generator, fx.Node], Any]] = {
    aten.view.default: _reshape,
    aten._unsafe_view.default: _reshape,
    aten.reshape.default: _reshape,
    aten.permute.default: _permute,
    aten.transpose.int: _transpose,
    aten.unsqueeze.default: _unsqueeze,
    aten.squeeze.dim: _squeeze,
    aten.squeeze.dims: _squeeze,
    aten.squeeze.default: _squeeze,
    aten.expand.default: _expand,
    aten.slice.Tensor: _slice,
    aten.split_with_sizes.default: _split,
    aten.split.Tensor: _split,
    aten.cat.default: _cat,
    aten.clone.default: _identity,
    aten.alias.default: _identity,
    aten.select.int: _select,
    aten.full_like.default: _full,
    aten.slice_scatter.default: _slice_scatter,
    aten.sum.dim_IntList: lambda gen, node: _reduce(gen, node, "sum"),
    aten.mean.dim: lambda gen, node: _reduce(gen, node, "mean"),
    aten.amax.default: lambda gen, node: _reduce(gen, node, "amax"),
    aten.amin.default: lambda gen, node: _reduce(gen, node, "amin"),
    aten.var_mean.correction: _var_mean,
    aten.var.correction: lambda gen, node: _var_mean(gen, node)[0],
    aten.max.dim: _max_dim,
    aten.min.dim: _max_dim,
    aten.argmax.default: _argmax,
    aten.argmin.default: _argmax,
    aten.gather.default: _gather,
    aten.scatter_add.default: _scatter_add,
    aten._to_copy.default: _to_copy,
}
"""Views, reductions and the lane operations, by target."""


def generate(
    graph: fx.Graph, batch_dims: BatchDims, unit: int, dtype: torch.dtype, name: str
) -> Kernel:
    """Write ``graph`` as the C function ``name`` (see the module's docstring).

    Parameters
    ----------
    graph : torch.fx.Graph
        Core ATen operations, every node with ``meta["val"]`` (its traced value).
    batch_dims : mapping
        Each node's batch dimension (:data:`BatchDims`).
    unit : int
        Features of one unit: the cell's ``hidden_size``.
    dtype : torch.dtype
        float32 or float64: the kernel's floating-point type.
    name : str
        The C function's name.

    Returns
    -------
    Kernel

    Raises
    ------
    Unsupported
        Naming what the generator cannot write.
    """
    if dtype not in (torch.float32, torch.float64):
        raise Unsupported(f"dtype {dtype}: the compiled engine computes in float32 or float64")
    generator = _Generator(graph, batch_dims, unit, dtype)
    outputs = generator.run()
    inputs = [buffer for _, buffer, output in generator.buffers if not output]
    body = generator.emit.source(name, generator.buffers)
    written = iter(buffer for _, buffer, output in generator.buffers if output)
    final = tuple(None if item is None else next(written) for item in outputs)
    return Kernel(name, prelude(generator.emit.scalar) + body + "\n", tuple(inputs), final)
