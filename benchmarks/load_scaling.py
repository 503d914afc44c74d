"""Load scaling: one batch of many short and a few very long sequences, as T grows.

Run: python benchmarks/load_scaling.py [--cells lstm,lstm@reference,slstm]
    [--max-lengths 250,500,1000,2000]

A cell is a registry name, optionally ``@engine`` (``lstm@reference``: the LSTM held on the
per-step reference path instead of its fast path).

For each cell and each longest length T, one batch holds ``--batch`` sequences whose lengths
spread from 1 to T, most of them short: ``length_b = max(1, round(T * ((b + 1) / B) ** 3))``,
so that the total number of real steps, ``sum(lengths)``, is about ``B * T / 4`` and
proportional to T. The measured step is forward and backward: ``out.sum()`` of a model
called with ``lengths``, the input requiring grad. Each point takes two fresh interpreters:

* time: the median of ``--repeats`` steps after a warm-up step;
* memory, two figures: the bytes autograd saves for the backward pass (the activations,
  which grow with the steps; the distinct storages that ``saved_tensors_hooks`` sees during
  the forward), and the peak resident memory of a step: after a warm-up step the kernel's
  high-water mark is reset (``/proc/self/clear_refs``) and the figure is how far the
  resident set rises during one more step, with glibc told to return freed blocks of
  64 KiB and more at once (as ``python -m lstm bench`` measures it; Linux only). Blocks
  under 64 KiB freed by the warm-up step are reused, so for cells whose per-step tensors are
  small the resident figure undercounts; the saved bytes do not depend on the allocator.
  The glibc setting slows allocation down, which is why time is measured in another
  interpreter, without it.

Growth is linear in the total steps when ``time / total steps`` and ``memory / total steps``
stay flat as T grows; the table prints both, and both per padded step (``B * T``), since a
cell on the reference path runs every padded step (masked) while the LSTM's fast path packs
the batch and runs only the real ones. Results go to ``benchmarks/load-scaling.json``,
written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import lstm
from lstm.registry import takes_lanes

OUTPUT = Path(__file__).with_name("load-scaling.json")


def spread_lengths(batch: int, longest: int) -> list[int]:
    """Lengths from 1 to ``longest``, most short: the cube of an even spread in (0, 1]."""
    return [max(1, round(longest * ((b + 1) / batch) ** 3)) for b in range(batch)]


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """The subprocess side: one cell, one T; ``spec["figure"]`` is "time" or "memory"."""
    torch.manual_seed(0)
    name, _, engine = spec["cell"].partition("@")
    lanes = {"k": 4} if takes_lanes(lstm.CELLS[name]) else {}
    model = lstm.create(name, spec["input_size"], spec["hidden_size"], **lanes)
    model.engine = engine or "auto"
    lengths = torch.tensor(spread_lengths(spec["batch"], spec["max_length"]))
    x = torch.randn(spec["batch"], spec["max_length"], spec["input_size"], requires_grad=True)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = model(x, lengths=lengths)
        out.sum().backward()

    step()  # warm-up
    if spec["figure"] == "memory":
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")  # resets VmHWM to the current resident set
        start = _status("VmRSS:")
        step()
        peak = _status("VmHWM:") - start
        storages: dict[int, int] = {}

        def record(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(record, lambda tensor: tensor):
            out, _ = model(x, lengths=lengths)
        out.sum().backward()
        return {"peak_bytes": peak, "saved_bytes": sum(storages.values())}
    times = []
    for _ in range(spec["repeats"]):
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    return {"seconds": statistics.median(times), "all_seconds": times}


def _status(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as lines:
        for line in lines:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} missing from /proc/self/status")


def run_probe(spec: dict[str, Any], environment: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--probe", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"probe {spec} failed:\n{completed.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return figures


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Time and (on Linux) peak memory of one point, each in a fresh interpreter."""
    figures = run_probe({**spec, "figure": "time"}, dict(os.environ))
    figures["peak_bytes"] = figures["saved_bytes"] = None
    if sys.platform.startswith("linux"):
        returned = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
        figures.update(run_probe({**spec, "figure": "memory"}, {**os.environ, **returned}))
    lengths = spread_lengths(spec["batch"], spec["max_length"])
    total, padded = sum(lengths), spec["batch"] * spec["max_length"]
    point = {**spec, "total_steps": total, "padded_steps": padded, **figures}
    point["us_per_total_step"] = 1e6 * figures["seconds"] / total
    point["us_per_padded_step"] = 1e6 * figures["seconds"] / padded
    if figures["peak_bytes"] is not None:
        point["peak_bytes_per_total_step"] = figures["peak_bytes"] / total
        point["saved_bytes_per_total_step"] = figures["saved_bytes"] / total
        point["saved_bytes_per_padded_step"] = figures["saved_bytes"] / padded
    return point


def format_table(points: list[dict[str, Any]]) -> str:
    header = (
        "| cell | T | total steps | padded steps | time ms | µs / total step | "
        "µs / padded step | saved MiB | saved KiB / total step | saved KiB / padded step | "
        "peak RSS MiB | peak RSS KiB / total step |"
    )
    rows = [header, "|" + "---|" * 12]
    for p in points:
        memory_columns = (
            f"{p['saved_bytes'] / 2**20:.1f} | {p['saved_bytes_per_total_step'] / 1024:.2f} | "
            f"{p['saved_bytes_per_padded_step'] / 1024:.2f} | {p['peak_bytes'] / 2**20:.1f} | "
            f"{p['peak_bytes_per_total_step'] / 1024:.2f}"
            if p["peak_bytes"] is not None
            else "n/a | n/a | n/a | n/a | n/a"
        )
        rows.append(
            f"| {p['cell']} | {p['max_length']} | {p['total_steps']} | {p['padded_steps']} | "
            f"{1e3 * p['seconds']:.1f} | {p['us_per_total_step']:.2f} | "
            f"{p['us_per_padded_step']:.2f} | {memory_columns} |"
        )
    return "\n".join(rows)


def spread(points: list[dict[str, Any]], key: str) -> str:
    """max / min of a per-step figure over one cell's points: 1.0 is perfectly linear."""
    values = [p[key] for p in points if key in p]
    return f"{max(values) / min(values):.2f}" if values and min(values) > 0 else "n/a"


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(handle.name, 0o644)  # NamedTemporaryFile makes it 0600
    os.replace(handle.name, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cells", default="lstm,lstm@reference,slstm", help="registry names, optionally @engine"
    )
    parser.add_argument("--max-lengths", default="250,500,1000,2000", help="the values of T")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=OUTPUT)
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # the subprocess side
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(json.loads(args.probe))))
        return
    points = []
    for cell in args.cells.split(","):
        lstm.get_cell(cell.partition("@")[0])  # an unknown name fails here, not in a subprocess
        for max_length in (int(value) for value in args.max_lengths.split(",")):
            spec = {
                "cell": cell,
                "max_length": max_length,
                "batch": args.batch,
                "input_size": args.input_size,
                "hidden_size": args.hidden_size,
                "repeats": args.repeats,
            }
            points.append(measure(spec))
            print(f"measured {cell} T={max_length}", file=sys.stderr)
    config = {key: value for key, value in vars(args).items() if key != "probe"}
    config["json"] = str(args.json)
    machine = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    write_json_atomically(args.json, {"machine": machine, "config": config, "points": points})
    print(format_table(points))
    for cell in args.cells.split(","):
        own = [p for p in points if p["cell"] == cell]
        print(
            f"{cell}: max/min over T, per total step, of time {spread(own, 'us_per_total_step')}"
            f", saved bytes {spread(own, 'saved_bytes_per_total_step')}"
            f", peak resident bytes {spread(own, 'peak_bytes_per_total_step')}"
        )


if __name__ == "__main__":
    main()
