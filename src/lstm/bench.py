"""Side-by-side speed of ``lstm`` cells, ``torch.nn.LSTM`` and the reference path.

``python -m lstm bench`` (or :func:`run_benchmark`) times, in one process and interleaved
round by round, three candidates for every registered cell and shape:

* ``lstm``: the cell as a user gets it (``engine="auto"``: the fast path where it applies);
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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lstm import _atomic as atomic
from lstm.cells.lstm import LSTM
from lstm.driver import Recurrent
from lstm.registry import CELLS, create

CANDIDATES = ("lstm", "nn.LSTM", "reference", "hoisted")
MODES = ("forward", "train")


@dataclass(frozen=True)
class Shape:
    """One benchmark shape: ``(batch, seq_len, input_size, hidden_size)``."""

    batch: int
    seq_len: int
    input_size: int
    hidden_size: int
    label: str = ""

    @property
    def name(self) -> str:
        """``label`` if given, else ``BxTxIxH``."""
        dims = f"{self.batch}x{self.seq_len}x{self.input_size}x{self.hidden_size}"
        return self.label or dims

    @classmethod
    def parse(cls, text: str) -> Shape:
        """Parse ``"64,100,256,256"`` (batch, seq_len, input_size, hidden_size).

        Raises
        ------
        ValueError
            Unless the text is four comma-separated positive integers.
        """
        parts = text.split(",")
        if len(parts) != 4 or not all(part.strip().isdigit() for part in parts):
            raise ValueError(
                "expected a shape as four positive integers 'batch,seq_len,input,hidden', "
                f"got {text!r}"
            )
        batch, seq_len, input_size, hidden_size = (int(part) for part in parts)
        if min(batch, seq_len, input_size, hidden_size) < 1:
            raise ValueError(f"expected every size of a shape >= 1, got {text!r}")
        return cls(batch, seq_len, input_size, hidden_size)


DEFAULT_SHAPES = (
    Shape(8, 200, 64, 64, "small"),
    Shape(64, 100, 256, 256, "medium"),
    Shape(32, 50, 512, 512, "large"),
)


@dataclass
class Result:
    """Timings of one candidate for one cell, shape and mode (seconds per call).

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


def build_candidates(
    cell: str, shape: Shape, dtype: torch.dtype, seed: int = 0
) -> dict[str, nn.Module]:
    """The modules compared for one cell and shape, in ``CANDIDATES`` order.

    Parameters
    ----------
    cell : str
        A registered cell name.
    shape : Shape
    dtype : torch.dtype
    seed : int
        Seeds the initialisation, so that every process builds the same weights.
    """
    torch.manual_seed(seed)
    ours = create(cell, shape.input_size, shape.hidden_size, dtype=dtype)
    reference = copy.deepcopy(ours)
    reference.engine = "reference"
    hoisted = copy.deepcopy(ours)
    hoisted.engine = "hoisted"
    if isinstance(ours, LSTM) and not type(ours).step_source.overrides(LSTM):
        torch_lstm = ours.to_torch()
    else:
        torch_lstm = nn.LSTM(shape.input_size, shape.hidden_size, batch_first=True, dtype=dtype)
    return {"lstm": ours, "nn.LSTM": torch_lstm, "reference": reference, "hoisted": hoisted}


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
    """Per-call times of each step, measured round by round in a rotating order."""
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
) -> list[Result]:
    """Measure every cell × shape × mode × candidate; return one :class:`Result` each.

    Parameters
    ----------
    cells : list of str, optional
        Registered names; default ``["lstm"]``.
    shapes : sequence of Shape
        Default: small (8, 200, 64, 64), medium (64, 100, 256, 256), large (32, 50, 512, 512).
    modes : sequence of str
        ``"forward"`` and/or ``"train"``.
    rounds : int
        Interleaved rounds; each measures both members of a pair for ``min_run_time`` seconds.
    threads : int, optional
        Threads for the timed code; default ``torch.get_num_threads()``.
    memory : bool
        Also measure the peak memory of a training step (``train`` mode, Linux).
    reference : bool
        Include the reference and hoisted paths (slow for long sequences).
    """
    cells = cells or ["lstm"]
    threads = threads or torch.get_num_threads()
    names = [c for c in CANDIDATES if reference or c in ("lstm", "nn.LSTM")]
    results: list[Result] = []
    for cell in cells:
        for shape in shapes:
            x = torch.randn(shape.batch, shape.seq_len, shape.input_size, dtype=dtype)
            for mode in modes:
                modules = build_candidates(cell, shape, dtype)
                steps = {name: make_step(modules[name], x, mode) for name in names}
                first_call = {}
                for name, step in steps.items():
                    started = time.perf_counter()
                    step()
                    first_call[name] = time.perf_counter() - started
                # Each candidate is timed in its own interleaved pair with nn.LSTM: a slow,
                # allocation-heavy path in the same rotation perturbs whatever runs after it.
                pairs = {
                    name: time_interleaved(
                        {name: steps[name], "nn.LSTM": steps["nn.LSTM"]},
                        rounds,
                        min_run_time,
                        threads,
                    )
                    for name in names
                    if name != "nn.LSTM"
                }
                times = {name: pair[name] for name, pair in pairs.items()}
                times["nn.LSTM"] = pairs["lstm"]["nn.LSTM"]
                for name in names:
                    torch_times = pairs.get(name, pairs["lstm"])["nn.LSTM"]
                    result = _summarise(cell, shape, mode, name, times[name], torch_times)
                    result.first_call_s = first_call[name]
                    result.engine, result.engine_reason = engine_of(modules[name], x, mode)
                    if memory and mode == "train" and name in ("lstm", "nn.LSTM"):
                        result.peak_memory_bytes = peak_training_memory(cell, shape, name, dtype)
                    results.append(result)
    return results


def _summarise(
    cell: str, shape: Shape, mode: str, name: str, times: list[float], torch_times: list[float]
) -> Result:
    """One candidate's :class:`Result` from its times and nn.LSTM's in the same pair."""
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [0.0, 0.0, 0.0]
    median = statistics.median(times)
    return Result(
        cell=cell,
        shape=shape.name,
        dims=(shape.batch, shape.seq_len, shape.input_size, shape.hidden_size),
        mode=mode,
        candidate=name,
        median_s=median,
        iqr_s=quartiles[2] - quartiles[0],
        measurements=len(times),
        first_call_s=0.0,
        ratio_to_torch=median / statistics.median(torch_times),
    )


def format_table(results: list[Result]) -> str:
    """A plain-text table: one row per cell, shape and mode; medians in ms, ratios to torch."""
    rows: dict[tuple[str, str, str], dict[str, Result]] = {}
    for result in results:
        rows.setdefault((result.cell, result.shape, result.mode), {})[result.candidate] = result
    names = [c for c in CANDIDATES if any(r.candidate == c for r in results)]
    header = f"{'cell':<10} {'shape':<18} {'mode':<8} {'engine':<9}"
    header += "".join(f" {name + ' ms':>13}" for name in names)
    header += "".join(f" {name + '/torch':>15}" for name in names if name != "nn.LSTM")
    header += f" {'memory lstm/torch':>18}"
    lines = [header, "-" * len(header)]
    for (cell, shape, mode), by_name in rows.items():
        line = f"{cell:<10} {shape:<18} {mode:<8} {by_name['lstm'].engine:<9}"
        line += "".join(f" {by_name[name].median_s * 1e3:>13.2f}" for name in names)
        line += "".join(
            f" {by_name[name].ratio_to_torch or 0.0:>14.2f}x" for name in names if name != "nn.LSTM"
        )
        ours, theirs = by_name["lstm"], by_name["nn.LSTM"]
        memory = ""
        if ours.peak_memory_bytes is not None and theirs.peak_memory_bytes:
            memory = f"{ours.peak_memory_bytes / theirs.peak_memory_bytes:.2f}x"
        lines.append(line + f" {memory:>18}")
    reasons = {
        (r.cell, r.mode, r.engine, r.engine_reason) for r in results if r.candidate == "lstm"
    }
    lines += ["", "engine of the lstm column (model.engine_for):"]
    lines += [f"  {cell} {mode}: {name} -- {why}" for cell, mode, name, why in sorted(reasons)]
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

    groups = sorted({(r.cell, r.shape, r.mode) for r in results}, key=lambda g: [str(p) for p in g])
    names = [c for c in CANDIDATES if any(r.candidate == c for r in results)]
    width = 0.8 / len(names)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.4 * len(groups)), 4.0))
    for offset, name in enumerate(names):
        values: list[float] = []
        for group in groups:
            match = [
                r for r in results if (r.cell, r.shape, r.mode) == group and r.candidate == name
            ]
            values.append(match[0].ratio_to_torch or 0.0 if match else 0.0)
        positions = [i + (offset - (len(names) - 1) / 2) * width for i in range(len(groups))]
        bars = axes.bar(positions, values, width, label=name)
        axes.bar_label(bars, fmt="%.2f", fontsize=7)
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(groups)), [f"{c}\n{s}\n{m}" for c, s, m in groups], fontsize=8)
    axes.set_ylabel("time / nn.LSTM time (median)")
    axes.set_title("lstm vs torch.nn.LSTM (lower is faster)")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_figure(path, figure)


def _shape_argument(text: str) -> Shape:
    try:
        return Shape.parse(text)
    except ValueError as error:  # argparse shows an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m lstm bench``: what to measure, how, and where to write it."""
    _add_workload_arguments(parser)
    _add_timing_arguments(parser)
    _add_output_arguments(parser)


def _add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cell``, ``--all-cells``, ``--shape``, ``--mode``, ``--dtype``."""
    parser.add_argument(
        "--cell",
        action="append",
        choices=sorted(CELLS),
        metavar="NAME",
        help=f"one of {', '.join(sorted(CELLS))} (repeatable; default lstm)",
    )
    parser.add_argument("--all-cells", action="store_true", help="every registered cell")
    parser.add_argument(
        "--shape",
        action="append",
        type=_shape_argument,
        metavar="B,T,I,H",
        help="batch,seq_len,input,hidden (repeatable); default the small, medium and large shapes",
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
        help="torch threads while timing (default: torch.get_num_threads())",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-memory``, ``--no-reference``, ``--json``, ``--plot``."""
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the reference and hoisted paths"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench.json"),
        metavar="FILE",
        help="write the results here (default %(default)s)",
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
    results = run_benchmark(
        cells=cells,
        shapes=shapes,
        modes=modes,
        rounds=args.rounds,
        min_run_time=args.min_run_time,
        threads=args.threads,
        dtype=getattr(torch, args.dtype),
        memory=not args.no_memory,
        reference=not args.no_reference,
    )
    print(format_table(results))
    config = {
        key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()
    }
    config["shape"] = [asdict(shape) for shape in shapes]
    config.pop("handler", None)
    write_json(args.json, results, config)
    print(f"wrote {args.json}")
    if args.plot is not None:
        plot(args.plot, results)
        print(f"wrote {args.plot}")
    return results


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-probe":
        _memory_probe(sys.argv[2])
    else:
        parser = argparse.ArgumentParser(
            prog="python -m lstm.bench", description=__doc__.splitlines()[0]
        )
        add_arguments(parser)
        run(parser.parse_args())
