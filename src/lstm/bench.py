"""Side-by-side speed of ``lstm`` cells, ``torch.nn.LSTM`` and the reference path.

``python -m lstm bench`` (or :func:`run_benchmark`) times, in one process and interleaved
round by round, three candidates for every registered cell and shape:

* ``lstm``: the cell as a user gets it (``engine="auto"``: the fast path where it applies);
* ``lstm.nn``: for the stock LSTM cell only, ``lstm.nn.LSTM`` (nn.LSTM's face, its own
  weights in nn.LSTM's layout) with the same weights;
* ``fused``: for the families with a hand-written step rule, the same module on the fused
  engine (``engine="fused"``), their default before the compiled engine: beside ``lstm``,
  the compiled engine's before and after;
* ``nn.LSTM``: ``torch.nn.LSTM`` of the same sizes (for the LSTM cell, the exact conversion
  of the same weights);
* ``reference``: the same module held on the per-step ``forward_cell`` loop: what a cell
  that overrides ``forward_cell`` runs by default;
* ``hoisted``: the same loop with the input projection hoisted out of it
  (``engine="hoisted"``): the opt-in acceleration for such cells.

Each is timed in two modes: ``forward`` (under ``torch.no_grad``) and ``train`` (forward,
``out.sum()`` and backward, input requiring grad as it does inside a deeper model). Timings
come from ``torch.utils.benchmark`` (``blocked_autorange``). Each candidate is timed in a pair
with ``nn.LSTM``, alternating round by round in one process; its figure is the median over
all rounds' measurements and its ratio is that median over ``nn.LSTM``'s median in the same
pair (ratios of medians). In ``train`` mode the peak memory of one
training step is measured too, in a fresh subprocess per candidate (Linux only; see
:func:`peak_training_memory`).

The ``lstm`` candidate is also timed against its **GEMM floor** (:func:`gemm_floor`): the same
matrix products the cell must do, and nothing else, timed alone in the same process with the
same number of threads, in its own interleaved pair with the candidate (A B A B; ratio of
medians). The products are read from the module itself (:func:`gemm_products`), so the floor
exists for every registered cell and for a user's cell: for every cell (layer, direction),
an ``nn.Linear`` part named ``i2h`` is an input map, applied to all steps as one product
``(batch * seq_len, in) x (in, out)``; every other ``nn.Linear`` part (``h2h``, ``h2p``, ...)
is a recurrent map, one ``(batch, in) x (in, out)`` product per step. ``forward`` is those
products; ``train`` adds, for ``i2h``, the input gradient ``(batch * seq_len, out) x (out,
in)`` and the weight gradient ``(out, batch * seq_len) x (batch * seq_len, in)``, and for
each recurrent map its weight gradient as one product over all steps and one
recurrent-gradient product ``(batch, out) x (out, in)`` per step. Other parts (a peephole
vector, a LayerNorm) add no product. ``time / floor`` is how far a cell is from the time its
matrix products alone take on this machine: the part of its time that better element-wise
code, fewer kernel launches or less Python could remove.

Shapes are given by name (:data:`SHAPES`: ``tiny``, DeepLog-sized, batch 32, 10 steps, input
1, hidden 64, two layers; ``small``; ``medium``; ``large``) or as ``B,T,I,H`` or
``B,T,I,H,L`` (``L`` layers).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lstm import _atomic as atomic
from lstm.cells.lstm import LSTM
from lstm.cells.torch_lstm import LSTM as TorchFaceLSTM
from lstm.driver import Recurrent
from lstm.registry import CELLS, create, get_cell

CANDIDATES = ("lstm", "lstm.nn", "fused", "nn.LSTM", "reference", "hoisted")
"""Every candidate, in table order; ``lstm.nn`` exists for the stock LSTM cell only, and
``fused`` for the families with a hand-written step rule."""
MODES = ("forward", "train")
FLOOR = "floor"
"""The name of the GEMM floor in a timed pair (:func:`gemm_floor`)."""


SHAPE_FIELDS = ("batch", "seq_len", "input_size", "hidden_size", "num_layers")


@dataclass(frozen=True)
class Shape:
    """One benchmark shape: input ``(batch, seq_len, input_size)``, ``hidden_size``, layers.

    Every candidate is built with ``num_layers`` stacked layers (one direction) and timed on
    an input of shape ``(batch, seq_len, input_size)``.
    """

    batch: int
    seq_len: int
    input_size: int
    hidden_size: int
    label: str = ""
    num_layers: int = 1

    @property
    def name(self) -> str:
        """``label`` if given, else ``BxTxIxH`` (with `` L<layers>`` after it for several)."""
        dims = f"{self.batch}x{self.seq_len}x{self.input_size}x{self.hidden_size}"
        if self.num_layers > 1:
            dims += f" L{self.num_layers}"
        return self.label or dims

    @property
    def sizes(self) -> str:
        """``"B,T,I,H"``, or ``"B,T,I,H,L"`` with several layers: what :meth:`parse` takes."""
        sizes = [self.batch, self.seq_len, self.input_size, self.hidden_size]
        sizes += [self.num_layers] if self.num_layers > 1 else []
        return ",".join(str(size) for size in sizes)

    @classmethod
    def parse(cls, text: str) -> Shape:
        """Parse a name of :data:`SHAPES`, ``"B,T,I,H"`` or ``"B,T,I,H,L"``.

        Parameters
        ----------
        text : str
            ``"tiny"``, ``"small"``, ``"medium"`` or ``"large"`` (any case), or four or five
            comma-separated positive integers: batch, seq_len, input_size, hidden_size and
            optionally num_layers (default 1), e.g. ``"64,100,256,256"`` or ``"32,10,1,64,2"``.

        Returns
        -------
        Shape
            The named shape (with its label), or an unlabelled one of those sizes.

        Raises
        ------
        ValueError
            If the text is neither a name nor four or five comma-separated integers, or if a
            size is below 1; the message names what was expected and what was given.
        """
        named = SHAPES.get(text.strip().lower())
        if named is not None:
            return named
        parts = [part.strip() for part in text.split(",")]
        if len(parts) not in (4, 5) or not all(p.isascii() and p.isdigit() for p in parts):
            raise ValueError(
                f"expected a shape name ({', '.join(SHAPES)}) or 4 or 5 comma-separated "
                f"integers 'batch,seq_len,input,hidden[,layers]', got {text!r}"
            )
        sizes = [int(part) for part in parts]
        named_sizes = zip(SHAPE_FIELDS[: len(sizes)], sizes, strict=True)
        small = [f"{name}={size}" for name, size in named_sizes if size < 1]
        if small:
            raise ValueError(
                f"expected every size of a shape >= 1, got {', '.join(small)} in {text!r}"
            )
        batch, seq_len, input_size, hidden_size = sizes[:4]
        num_layers = sizes[4] if len(sizes) == 5 else 1
        return cls(batch, seq_len, input_size, hidden_size, num_layers=num_layers)


SHAPES: dict[str, Shape] = {
    "tiny": Shape(32, 10, 1, 64, "tiny", num_layers=2),
    "small": Shape(8, 200, 64, 64, "small"),
    "medium": Shape(64, 100, 256, 256, "medium"),
    "large": Shape(32, 50, 512, 512, "large"),
}
"""The named shapes ``--shape`` takes. ``tiny`` is DeepLog-sized: the log-key model of Du et
al. (2017), two layers of 64 units over windows of 10 keys of one feature, in batches of 32."""

DEFAULT_SHAPES = tuple(SHAPES.values())


@dataclass
class Result:
    """Timings of one candidate for one cell, shape and mode (seconds per call).

    ``dims`` is ``(batch, seq_len, input_size, hidden_size)`` and ``num_layers`` the layers.
    Every time and ratio of a result comes from one interleaved group: the candidate,
    ``nn.LSTM`` (``torch_median_s``) and, where asked for, its GEMM floor (:func:`gemm_floor`,
    ``floor_median_s``); ``ratio_to_torch`` is ``median_s / torch_median_s`` and
    ``ratio_to_floor`` ``median_s / floor_median_s`` (None where no floor was timed).
    ``engine`` and ``engine_reason`` are what ``engine_for`` says the candidate runs in that
    mode (``"nn.LSTM"`` for torch's own module).
    """

    cell: str
    shape: str
    dims: tuple[int, int, int, int]
    mode: str
    candidate: str
    median_s: float
    iqr_s: float
    measurements: int
    first_call_s: float
    peak_memory_bytes: int | None = None
    ratio_to_torch: float | None = field(default=None)
    engine: str = ""
    engine_reason: str = ""
    ratio_to_floor: float | None = None
    floor_median_s: float | None = None
    num_layers: int = 1
    torch_median_s: float | None = None


def build_candidates(
    cell: str, shape: Shape, dtype: torch.dtype, seed: int = 0
) -> dict[str, nn.Module]:
    """The modules compared for one cell and shape, in ``CANDIDATES`` order.

    Parameters
    ----------
    cell : str
        A registered cell name.
    shape : Shape
        Sizes and ``num_layers`` of every candidate (one direction, batch first).
    dtype : torch.dtype
    seed : int
        Seeds the initialisation, so that every process builds the same weights.

    Returns
    -------
    dict of str to nn.Module
        ``lstm``, ``lstm.nn`` (stock LSTM cell only: ``lstm.nn.LSTM``, batch first, with the
        same weights), ``fused`` (families with a step rule: the fused engine), ``nn.LSTM``
        (the exact conversion of ``lstm`` for the stock LSTM cell, else a fresh
        ``torch.nn.LSTM`` of the same sizes), ``reference`` and ``hoisted``.
    """
    torch.manual_seed(seed)
    ours = create(
        cell, shape.input_size, shape.hidden_size, num_layers=shape.num_layers, dtype=dtype
    )
    reference = copy.deepcopy(ours)
    reference.engine = "reference"
    hoisted = copy.deepcopy(ours)
    hoisted.engine = "hoisted"
    faces: dict[str, nn.Module] = {}
    fast = type(ours).step_source.fast_path
    if fast is not None and fast.engine == "fused":
        fused = copy.deepcopy(ours)
        fused.engine = "fused"
        faces["fused"] = fused
    if isinstance(ours, LSTM) and not type(ours).step_source.overrides(LSTM):
        torch_lstm = ours.to_torch()
        faces["lstm.nn"] = TorchFaceLSTM.from_torch(torch_lstm)
    else:
        torch_lstm = nn.LSTM(
            shape.input_size,
            shape.hidden_size,
            num_layers=shape.num_layers,
            batch_first=True,
            dtype=dtype,
        )
    candidates = {"lstm": ours, **faces, "nn.LSTM": torch_lstm}
    candidates |= {"reference": reference, "hoisted": hoisted}
    return {name: candidates[name] for name in CANDIDATES if name in candidates}


def make_step(module: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    """A closure running one forward (no grad) or one training step of ``module`` on ``x``."""
    if mode == "forward":

        def forward() -> None:
            with torch.no_grad():
                module(x)

        return forward
    if mode != "train":
        raise ValueError(f"expected mode in {MODES}, got {mode!r}")
    x = x.detach().requires_grad_()

    def train() -> None:
        x.grad = None
        module.zero_grad(set_to_none=True)
        out, _ = module(x)
        out.sum().backward()

    return train


@dataclass(frozen=True)
class Product:
    """``count`` matrix products ``left @ right`` that one call of a cell must do.

    Attributes
    ----------
    part : str
        What it computes, e.g. ``"cell (1, 0) h2h: recurrent gradient"``.
    left : (int, int)
        Shape of the left operand, ``(rows, inner)``.
    right : (int, int)
        Shape of the right operand, ``(inner, columns)``.
    count : int
        1 for a product over all steps at once; ``seq_len`` for one product per step.
    """

    part: str
    left: tuple[int, int]
    right: tuple[int, int]
    count: int

    def __post_init__(self) -> None:
        if self.left[1] != self.right[0]:
            raise ValueError(
                f"{self.part}: expected the inner sizes of {self.left} x {self.right} to agree, "
                f"got {self.left[1]} and {self.right[0]}"
            )

    @property
    def flops(self) -> int:
        """Floating-point operations of all ``count`` products (a multiply-add counts 2)."""
        return 2 * self.left[0] * self.left[1] * self.right[1] * self.count


def gemm_products(module: nn.Module, shape: Shape, mode: str) -> list[Product]:
    """The matrix products a cell must do on an input of ``shape``: its GEMM floor's work.

    Read from the module's parts, so it holds for any :class:`~lstm.driver.Recurrent`: for
    every cell ``(layer, direction)`` (:meth:`~lstm.driver.Recurrent.cell_indices`), an
    ``nn.Linear`` part named ``i2h`` is an input map, applied to all steps in one product
    ``(batch * seq_len, in) x (in, out)``; every other ``nn.Linear`` part (``h2h``, ``h2p``,
    ...) is a recurrent map, one product ``(batch, in) x (in, out)`` per step. ``in`` and
    ``out`` are the Linear's ``in_features`` and ``out_features`` (a layer above the first
    reads the layer below). In ``train`` mode, after all forward products: for ``i2h``, the
    input gradient ``(batch * seq_len, out) x (out, in)`` and the weight gradient ``(out,
    batch * seq_len) x (batch * seq_len, in)``; for each recurrent map, the weight gradient
    as one product ``(out, batch * seq_len) x (batch * seq_len, in)`` and the recurrent
    gradient ``(batch, out) x (out, in)`` once per step. Parts that are not ``nn.Linear``
    (a peephole vector, a LayerNorm) add none.

    Parameters
    ----------
    module : lstm.driver.Recurrent
        The cell, with any number of layers and directions; ``torch.nn.LSTM`` and
        ``lstm.nn.LSTM`` are read as :meth:`lstm.LSTM.from_torch` of it.
    shape : Shape
        Its ``batch`` and ``seq_len`` are used; the sizes come from the module.
    mode : str
        ``"forward"`` or ``"train"``.

    Returns
    -------
    list of Product
        Forward products cell by cell, then (``train``) the backward ones.

    Raises
    ------
    ValueError
        For a mode other than ``"forward"`` and ``"train"``.
    TypeError
        If ``module`` is neither a :class:`~lstm.driver.Recurrent` nor a ``torch.nn.LSTM``.
    """
    if mode not in MODES:
        raise ValueError(f"expected mode in {MODES}, got {mode!r}")
    if isinstance(module, TorchFaceLSTM):
        module = module.to_torch()
    if isinstance(module, nn.LSTM):
        module = LSTM.from_torch(module)
    if not isinstance(module, Recurrent):
        raise TypeError(
            f"expected an lstm.driver.Recurrent or torch.nn.LSTM, got {type(module).__name__}"
        )
    batch, steps, rows = shape.batch, shape.seq_len, shape.batch * shape.seq_len
    forward: list[Product] = []
    backward: list[Product] = []
    for layer, direction in module.cell_indices():
        for name, part in module.cell_parts(layer, direction).items():
            if not isinstance(part, nn.Linear):
                continue
            fan_in, fan_out = part.in_features, part.out_features
            where = f"cell {(layer, direction)} {name}"
            if name == "i2h":
                forward.append(Product(f"{where}: input map", (rows, fan_in), (fan_in, fan_out), 1))
                backward += [
                    Product(f"{where}: input gradient", (rows, fan_out), (fan_out, fan_in), 1),
                    Product(f"{where}: weight gradient", (fan_out, rows), (rows, fan_in), 1),
                ]
            else:
                forward.append(
                    Product(f"{where}: recurrent map", (batch, fan_in), (fan_in, fan_out), steps)
                )
                backward += [
                    Product(f"{where}: weight gradient", (fan_out, rows), (rows, fan_in), 1),
                    Product(
                        f"{where}: recurrent gradient", (batch, fan_out), (fan_out, fan_in), steps
                    ),
                ]
    return forward + backward if mode == "train" else forward


def gemm_floor(
    module: nn.Module, shape: Shape, mode: str, dtype: torch.dtype | None = None
) -> Callable[[], None]:
    """A closure doing only the matrix products of one call of ``module``: its GEMM floor.

    Every :class:`Product` of :func:`gemm_products` is one plain ``torch.mm`` of random
    operands made here, once, outside the closure (no autograd, no ``addmm``, no ``out=``),
    repeated ``count`` times. Time it as the cells are timed (same process, same threads:
    :func:`time_interleaved` passes ``num_threads`` to the timer); a cell's time over this
    closure's time is how far it is from what its matrix products alone cost.

    Parameters
    ----------
    module : lstm.driver.Recurrent or torch.nn.LSTM
    shape : Shape
        Its ``batch`` and ``seq_len`` (the sizes come from the module).
    mode : str
        ``"forward"`` or ``"train"``.
    dtype : torch.dtype, optional
        Of the operands; default the module's parameters' (float32 without parameters).

    Returns
    -------
    callable
        Takes no arguments and returns None.
    """
    products = gemm_products(module, shape, mode)
    first = next(module.parameters(), None)
    dtype = dtype or (first.dtype if first is not None else torch.float32)
    device = first.device if first is not None else torch.device("cpu")
    operands = [
        (
            torch.randn(product.left, dtype=dtype, device=device),
            torch.randn(product.right, dtype=dtype, device=device),
            product.count,
        )
        for product in products
    ]

    def floor() -> None:
        for left, right, count in operands:
            for _ in range(count):
                torch.mm(left, right)

    return floor


def engine_of(module: nn.Module, x: torch.Tensor, mode: str) -> tuple[str, str]:
    """The engine ``module`` runs on ``x`` in ``mode`` (as :func:`make_step` calls it), and why."""
    if not isinstance(module, Recurrent):
        return "nn.LSTM", "torch's own module"
    with torch.set_grad_enabled(mode == "train"):
        engine = module.engine_for(x.detach().requires_grad_(mode == "train"))
    return engine.name, engine.reason


def time_interleaved(
    steps: dict[str, Callable[[], None]], rounds: int, min_run_time: float, threads: int
) -> dict[str, list[float]]:
    """Per-call times of each step, measured round by round in a rotating order.

    Parameters
    ----------
    steps : dict of str to callable
        What to time, by name.
    rounds : int
        Rounds; in each, every step is measured once for ``min_run_time`` seconds, the first
        one moving along by one each round (A B, B A, ...).
    min_run_time : float
        Seconds per measurement (``blocked_autorange``).
    threads : int
        Torch threads while every step is timed: given to every ``Timer`` as
        ``num_threads``, whose default (1) would time the steps on one thread whatever the
        process uses. The GEMM floor is timed through here too, so it always runs on the
        same number of threads as the cells it is compared with.

    Returns
    -------
    dict of str to list of float
        Seconds per call of each measurement, by name.
    """
    # Imported here, not at the top: torch.utils.benchmark is slow to import and, on a CUDA
    # build of torch without the CUDA toolkit, warns that CUDA_HOME is unset; every
    # ``python -m lstm`` command (``--help`` included) imports this module for its flags.
    from torch.utils import benchmark

    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            timer = benchmark.Timer(
                stmt="step()", globals={"step": steps[name]}, num_threads=threads
            )
            times[name].extend(timer.blocked_autorange(min_run_time=min_run_time).times)
    return times


def peak_training_memory(cell: str, shape: Shape, candidate: str, dtype: torch.dtype) -> int | None:
    """Peak extra resident memory (bytes) of one training step, or None off Linux.

    Runs in a fresh interpreter: build the candidate, take one warm-up step, reset the
    kernel's high-water mark (``/proc/self/clear_refs``), take one more step and report how
    far the resident set rose above where it started. glibc is told to return freed blocks of
    64 KiB and more to the system at once, so the resident set follows what is really live.
    """
    if not sys.platform.startswith("linux"):
        return None
    spec = json.dumps(
        {"cell": cell, "shape": asdict(shape), "candidate": candidate, "dtype": str(dtype)}
    )
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    completed = subprocess.run(
        [sys.executable, "-m", "lstm.bench", "--memory-probe", spec],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"memory probe failed for {candidate} {shape.name}: {completed.stderr[-2000:]}"
        )
    return int(completed.stdout.strip().splitlines()[-1])


def _memory_probe(spec_text: str) -> None:
    """The subprocess side of :func:`peak_training_memory`; prints the figure in bytes."""
    spec = json.loads(spec_text)
    shape = Shape(**spec["shape"])
    dtype = getattr(torch, spec["dtype"].removeprefix("torch."))
    module = build_candidates(spec["cell"], shape, dtype)[spec["candidate"]]
    x = torch.randn(shape.batch, shape.seq_len, shape.input_size, dtype=dtype)
    step = make_step(module, x, "train")
    step()

    def status(key: str) -> int:
        with open("/proc/self/status", encoding="ascii") as lines:
            for line in lines:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"{key} missing from /proc/self/status")

    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")  # resets VmHWM to the current resident set
    start = status("VmRSS:")
    step()
    print(status("VmHWM:") - start)


def run_benchmark(
    cells: list[str] | None = None,
    shapes: tuple[Shape, ...] | list[Shape] = DEFAULT_SHAPES,
    modes: tuple[str, ...] | list[str] = MODES,
    rounds: int = 4,
    min_run_time: float = 0.5,
    threads: int | None = None,
    dtype: torch.dtype = torch.float32,
    memory: bool = True,
    reference: bool = True,
    floor_for: tuple[str, ...] | list[str] = ("lstm",),
    *,
    into: list[Result] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Measure every cell × shape × mode × candidate; return one :class:`Result` each.

    Parameters
    ----------
    cells : list of str, optional
        Registered names; default ``["lstm"]``.
    shapes : sequence of Shape
        Default :data:`DEFAULT_SHAPES`: tiny (32, 10, 1, 64, two layers), small (8, 200, 64,
        64), medium (64, 100, 256, 256), large (32, 50, 512, 512).
    modes : sequence of str
        ``"forward"`` and/or ``"train"``.
    rounds : int
        Interleaved rounds; each measures both members of a pair for ``min_run_time`` seconds.
    threads : int, optional
        Threads for the timed code, the GEMM floor's included; default
        ``torch.get_num_threads()``.
    memory : bool
        Also measure the peak memory of a training step (``train`` mode, Linux).
    reference : bool
        Include the reference and hoisted paths (slow for long sequences).
    floor_for : sequence of str
        Candidates also timed in a pair with their GEMM floor (:func:`gemm_floor`), which
        fills their ``ratio_to_floor``; their group with ``nn.LSTM`` then has three members.
        Names of :data:`CANDIDATES`; those not measured (``reference`` and ``hoisted``
        without ``reference``) are skipped.
    into : list of Result, optional
        Results are appended here as each cell, shape and mode is done, so that a caller
        interrupted (Ctrl-C) keeps what was measured.
    progress : callable, optional
        Given one line after each cell, shape and mode: what was measured, and about how
        long the rest will take.

    Returns
    -------
    list of Result
        One per cell, shape, mode and candidate, in that order.

    Raises
    ------
    ValueError
        If ``floor_for`` names something other than a candidate.
    """
    unknown = [name for name in floor_for if name not in CANDIDATES]
    if unknown:
        raise ValueError(f"expected floor_for names among {CANDIDATES}, got {unknown}")
    cells = cells or ["lstm"]
    threads = threads or torch.get_num_threads()
    wanted = [c for c in CANDIDATES if reference or c not in ("reference", "hoisted")]
    results: list[Result] = [] if into is None else into
    total, done, started = len(cells) * len(shapes) * len(modes), 0, time.perf_counter()
    for cell in cells:
        for shape in shapes:
            x = torch.randn(shape.batch, shape.seq_len, shape.input_size, dtype=dtype)
            for mode in modes:
                modules = build_candidates(cell, shape, dtype)
                names = [name for name in wanted if name in modules]
                floored = [name for name in names if name in floor_for]
                steps = {name: make_step(modules[name], x, mode) for name in names}
                floors = {name: gemm_floor(modules[name], shape, mode, dtype) for name in floored}
                first_call = _first_calls(steps, floors, min_run_time)
                groups = _time_groups(steps, floors, rounds, min_run_time, threads)
                found = []
                for name in names:
                    # nn.LSTM without a floor of its own: its times in lstm's group
                    group = groups.get(name) or {name: groups["lstm"][name]}
                    result = _summarise(cell, shape, mode, name, group)
                    result.first_call_s = first_call[name]
                    result.engine, result.engine_reason = engine_of(modules[name], x, mode)
                    if memory and mode == "train" and name in ("lstm", "lstm.nn", "nn.LSTM"):
                        result.peak_memory_bytes = peak_training_memory(cell, shape, name, dtype)
                    found.append(result)
                results.extend(found)
                done += 1
                if progress is not None:
                    progress(_progress_line(found, done, total, time.perf_counter() - started))
    return results


def _progress_line(found: list[Result], done: int, total: int, elapsed: float) -> str:
    """``[done/total] cell shape mode: lstm 1.23 ms (1.05x nn.LSTM, kernel); about 3 min left``."""
    ours = next(result for result in found if result.candidate == "lstm")
    left = elapsed / done * (total - done)
    when = "done" if done == total else f"about {_duration(left)} left"
    return (
        f"[{done}/{total}] {ours.cell} {ours.shape} {ours.mode}: lstm "
        f"{ours.median_s * 1e3:.2f} ms ({ours.ratio_to_torch or 0.0:.2f}x nn.LSTM, "
        f"{ours.engine}); {when}"
    )


def _duration(seconds: float) -> str:
    """``"40 s"``, ``"3 min"``, ``"1.5 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _first_calls(
    steps: dict[str, Callable[[], None]],
    floors: dict[str, Callable[[], None]],
    min_run_time: float,
) -> dict[str, float]:
    """Seconds of each step's first call, then a warm-up of every step and floor, untimed.

    The first call builds what is built once (a traced and compiled step, oneDNN's
    primitives for a shape); the warm-up then runs each at least twice more and for at
    least a fifth of ``min_run_time``, so that no timed block pays for a cold cache or a
    lazily grown buffer.
    """
    first_call = {}
    for name, step in steps.items():
        started = time.perf_counter()
        step()
        first_call[name] = time.perf_counter() - started
    for call in [*steps.values(), *floors.values()]:
        started, calls = time.perf_counter(), 0
        while calls < 2 or time.perf_counter() - started < min_run_time / 5:
            call()
            calls += 1
    return first_call


def _time_groups(
    steps: dict[str, Callable[[], None]],
    floors: dict[str, Callable[[], None]],
    rounds: int,
    min_run_time: float,
    threads: int,
) -> dict[str, dict[str, list[float]]]:
    """Time each candidate in one interleaved group: it, nn.LSTM and, if any, its floor.

    Returns
    -------
    dict of str to dict of str to list of float
        By candidate: the times of every member of its group (``nn.LSTM`` is in every
        group; it has one of its own only where its floor is timed).
    """
    # One group per candidate: a slow, allocation-heavy path in the same rotation perturbs
    # whatever runs after it. Its floor is in its group, so that every ratio it reports
    # divides times of the same rounds.
    groups = {}
    for name, step in steps.items():
        members = {name: step} if name == "nn.LSTM" else {name: step, "nn.LSTM": steps["nn.LSTM"]}
        if name in floors:
            members[FLOOR] = floors[name]
        if len(members) > 1:
            groups[name] = time_interleaved(members, rounds, min_run_time, threads)
    return groups


def _summarise(
    cell: str, shape: Shape, mode: str, name: str, group: dict[str, list[float]]
) -> Result:
    """One candidate's :class:`Result` from its interleaved group (:func:`_time_groups`)."""
    times = group[name]
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [0.0, 0.0, 0.0]
    median = statistics.median(times)
    result = Result(
        cell=cell,
        shape=shape.name,
        dims=(shape.batch, shape.seq_len, shape.input_size, shape.hidden_size),
        mode=mode,
        candidate=name,
        median_s=median,
        iqr_s=quartiles[2] - quartiles[0],
        measurements=len(times),
        first_call_s=0.0,
        ratio_to_torch=median / statistics.median(group["nn.LSTM"]),
        num_layers=shape.num_layers,
        torch_median_s=statistics.median(group["nn.LSTM"]),
    )
    if FLOOR in group:
        result.floor_median_s = statistics.median(group[FLOOR])
        result.ratio_to_floor = median / result.floor_median_s
    return result


def format_table(results: list[Result], *, wide: bool = False) -> str:
    """A plain-text table: one row per cell, shape, mode and candidate.

    Columns: the engine the candidate runs (``engine_for``), its median in ms, ``nn.LSTM``'s
    median in the same interleaved group and their ratio, and, where its GEMM floor was
    timed (in that group too), its ratio to the floor: every ratio divides two times of the
    same row. With ``wide``, also the floor's ms, the interquartile range, the first call
    and the peak memory of a training step over ``nn.LSTM``'s. Then the engine of every
    candidate of this package, with its reason. The default table of a run of the named
    shapes is at most 100 columns wide.

    Parameters
    ----------
    results : list of Result
        As :func:`run_benchmark` returns them.
    wide : bool, default False
        The extra columns.

    Returns
    -------
    str
        The table, lines joined by newlines.
    """
    torch_memory = {
        (r.cell, r.shape, r.mode): r.peak_memory_bytes for r in results if r.candidate == "nn.LSTM"
    }
    header = ["cell", "shape", "mode", "candidate", "engine", "ms", "nn.LSTM ms", "/nn.LSTM"]
    header += ["/floor"]
    if wide:
        header += ["floor ms", "IQR ms", "first call ms", "memory /nn.LSTM"]
    rows = []
    for r in results:
        floor = f"{r.ratio_to_floor:.2f}x" if r.ratio_to_floor is not None else ""
        torch_ms = f"{r.torch_median_s * 1e3:.2f}" if r.torch_median_s is not None else ""
        row = [r.cell, r.shape, r.mode, r.candidate, r.engine, f"{r.median_s * 1e3:.2f}"]
        row += [torch_ms, f"{r.ratio_to_torch or 0.0:.2f}x", floor]
        if wide:
            theirs = torch_memory.get((r.cell, r.shape, r.mode))
            memory = (
                f"{r.peak_memory_bytes / theirs:.2f}x"
                if r.peak_memory_bytes is not None and theirs
                else ""
            )
            floor_ms = f"{r.floor_median_s * 1e3:.2f}" if r.floor_median_s is not None else ""
            row += [floor_ms, f"{r.iqr_s * 1e3:.2f}", f"{r.first_call_s * 1e3:.1f}", memory]
        rows.append(row)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    left = 5  # cell, shape, mode, candidate, engine: text; the rest are numbers
    lines = [
        " ".join(
            text.ljust(width) if index < left else text.rjust(width)
            for index, (text, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    shown = [r for r in results if r.candidate != "nn.LSTM"]
    reasons = sorted({(r.cell, r.mode, r.candidate, r.engine, r.engine_reason) for r in shown})
    lines += ["", "engines (model.engine_for):"]
    lines += [
        textwrap.fill(
            f"{cell} {mode} {name}: {engine} -- {why}",
            width=100,
            initial_indent="  ",
            subsequent_indent="      ",
        )
        for cell, mode, name, engine, why in reasons
    ]
    return "\n".join(lines)


def machine_description() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),  # type: ignore[no-untyped-call]
    }


def write_json(path: Path, results: list[Result], config: dict[str, Any]) -> None:
    """Write results, configuration and machine description atomically (temp file + rename)."""
    payload = {
        "machine": machine_description(),
        "config": config,
        "results": [asdict(result) for result in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, payload)


def chart_groups(results: list[Result]) -> list[tuple[str, str, str]]:
    """The (cell, shape, mode) groups of ``results`` in the order they were measured: the
    order of :func:`format_table`'s rows, which the chart keeps."""
    return list(dict.fromkeys((r.cell, r.shape, r.mode) for r in results))


def plot(path: Path, results: list[Result]) -> None:
    """A PNG bar chart of every candidate's time relative to ``nn.LSTM`` (lower is faster).

    Raises
    ------
    ModuleNotFoundError
        If matplotlib is not installed (``pip install 'pure-lstm[plot]'``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = chart_groups(results)
    names = [c for c in CANDIDATES if any(r.candidate == c for r in results)]
    width = 0.8 / len(names)
    # room for every bar's label, written upright so that neighbours cannot overlap
    figure, axes = plt.subplots(figsize=(max(6.0, 0.3 * len(groups) * len(names) + 1.5), 4.5))
    for offset, name in enumerate(names):
        values: list[float] = []
        for group in groups:
            match = [
                r for r in results if (r.cell, r.shape, r.mode) == group and r.candidate == name
            ]
            values.append(match[0].ratio_to_torch or 0.0 if match else 0.0)
        positions = [i + (offset - (len(names) - 1) / 2) * width for i in range(len(groups))]
        bars = axes.bar(positions, values, width, label=name)
        axes.bar_label(bars, fmt="%.2f", fontsize=6, rotation=90, padding=2)
    axes.margins(y=0.15)  # the upright labels of the tallest bars stay inside
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(groups)), [f"{c}\n{s}\n{m}" for c, s, m in groups], fontsize=8)
    axes.set_ylabel("time / nn.LSTM time (median)")
    axes.set_title("lstm vs torch.nn.LSTM (lower is faster)")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # off the bars
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_figure(path, figure)


FLOOR_HELP = (
    "GEMM floor (the lstm/floor column): the same matrix products the cell must do, timed "
    "alone in the same process with the same --threads, interleaved with the cell (A B A B, "
    "ratio of medians). forward: each i2h (input map) over all steps as one product, "
    "(batch*seq_len, in) x (in, out), and one product (batch, in) x (in, out) per step for "
    "every other Linear part (h2h, h2p, ...) of every layer and direction. train adds the "
    "input gradient and the weight gradient of i2h (one product each over all steps), and for "
    "each recurrent map its weight gradient (one product over all steps) and one "
    "recurrent-gradient product per step. Parts that are not Linear add none."
)


def _shape_argument(text: str) -> Shape:
    try:
        return Shape.parse(text)
    except ValueError as error:  # argparse shows an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m lstm bench``: what to measure, how, and where to write it.

    Also sets the parser's description and its epilog, the definition of the GEMM floor.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``bench`` sub-parser (or ``python -m lstm.bench``'s own parser).
    """
    parser.description = (
        "Time lstm cells beside torch.nn.LSTM, the reference path and their GEMM floor, "
        "interleaved in one process."
    )
    parser.epilog = FLOOR_HELP
    _add_workload_arguments(parser)
    _add_timing_arguments(parser)
    _add_output_arguments(parser)


def _cell_argument(text: str) -> str:
    """``--cell``'s value, checked: a registered name or an importable ``module:Class``."""
    try:
        get_cell(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cell``, ``--all-cells``, ``--shape``, ``--mode``, ``--dtype``."""
    parser.add_argument(
        "--cell",
        action="append",
        type=_cell_argument,
        metavar="NAME",
        help=f"one of {', '.join(sorted(CELLS))}, or your own class as "
        "package.module:ClassName (repeatable; default lstm)",
    )
    parser.add_argument("--all-cells", action="store_true", help="every registered cell")
    named = ", ".join(
        f"{name} ({shape.batch},{shape.seq_len},{shape.input_size},{shape.hidden_size}"
        + (f", {shape.num_layers} layers" if shape.num_layers > 1 else "")
        + (": DeepLog-sized" if name == "tiny" else "")
        + ")"
        for name, shape in SHAPES.items()
    )
    parser.add_argument(
        "--shape",
        action="append",
        type=_shape_argument,
        metavar="NAME|B,T,I,H[,L]",
        help=f"a name: {named}; or batch,seq_len,input,hidden[,layers] (repeatable; "
        f"default {', '.join(shape.name for shape in DEFAULT_SHAPES)})",
    )
    parser.add_argument(
        "--mode",
        choices=[*MODES, "both"],
        default="both",
        help="forward (no grad), train (forward and backward) or both (default %(default)s)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default="float32",
        help="of the weights and inputs (default %(default)s)",
    )


def _add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rounds``, ``--min-run-time``, ``--threads``."""
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        metavar="N",
        help="interleaved rounds (default %(default)s)",
    )
    parser.add_argument(
        "--min-run-time",
        type=float,
        default=0.5,
        metavar="S",
        help="seconds per measurement (default %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads while timing, the GEMM floor too (default: torch.get_num_threads())",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--floor-for``, ``--no-memory``, ``--no-reference``, ``--json``, ``--plot``."""
    parser.add_argument(
        "--floor-for",
        action="append",
        choices=CANDIDATES,
        metavar="NAME",
        help=f"also time this candidate against its GEMM floor: one of {', '.join(CANDIDATES)} "
        "(repeatable; default lstm)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the reference and hoisted paths"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the results here, with the machine and the command (default: none)",
    )
    parser.add_argument(
        "--wide",
        action="store_true",
        help="also print the floor's ms, the interquartile range, the first call and the "
        "peak memory (the JSON has them all)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE",
        help="write a PNG chart here (default: none)",
    )


def run(args: argparse.Namespace) -> list[Result]:
    """Run ``python -m lstm bench`` with parsed arguments; print the table, write JSON/PNG."""
    if args.rounds < 1 or args.min_run_time <= 0 or (args.threads is not None and args.threads < 1):
        raise ValueError(
            f"expected --rounds >= 1, --min-run-time > 0 and --threads >= 1, got {args.rounds}, "
            f"{args.min_run_time}, {args.threads}"
        )
    cells = sorted(CELLS) if args.all_cells else (args.cell or ["lstm"])
    modes = MODES if args.mode == "both" else (args.mode,)
    shapes = tuple(args.shape) if args.shape else DEFAULT_SHAPES
    results: list[Result] = []
    print(
        f"timing {len(cells) * len(shapes) * len(modes)} cell, shape and mode groups; a line "
        "as each is done (Ctrl-C stops and keeps what was measured)",
        file=sys.stderr,
    )
    try:
        run_benchmark(
            cells=cells,
            shapes=shapes,
            modes=modes,
            rounds=args.rounds,
            min_run_time=args.min_run_time,
            threads=args.threads,
            dtype=getattr(torch, args.dtype),
            memory=not args.no_memory,
            reference=not args.no_reference,
            floor_for=args.floor_for or ("lstm",),
            into=results,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except KeyboardInterrupt:
        print(f"interrupted: keeping the {len(results)} results measured", file=sys.stderr)
        _report(args, shapes, results)
        raise
    _report(args, shapes, results)
    return results


def _report(args: argparse.Namespace, shapes: tuple[Shape, ...], results: list[Result]) -> None:
    """Print the table, and write the JSON and the chart where the flags ask for them."""
    if not results:
        return
    print(format_table(results, wide=args.wide))
    if args.json is not None:
        config = {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
        }
        config["shape"] = [asdict(shape) for shape in shapes]
        config.pop("handler", None)
        write_json(args.json, results, config)
        print(f"wrote {args.json}")
    if args.plot is not None:
        plot(args.plot, results)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-probe":
        _memory_probe(sys.argv[2])
    else:
        parser = argparse.ArgumentParser(
            prog="python -m lstm.bench", description=__doc__.splitlines()[0]
        )
        add_arguments(parser)
        run(parser.parse_args())
