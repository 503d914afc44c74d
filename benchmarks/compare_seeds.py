"""``python -m lstm compare`` over several seeds, with the mLSTM's per-head norm as a cell.

Runs the command once per seed (each in its own folder under ``--out``), the cells at the
budget of the default ``lstm`` byte model, and prints each cell's validation and test BPC as
the mean over the seeds with the lowest and highest run. ``mlstm-norm`` is registered here,
for this script only: ``lstm.MLSTM`` with ``head_norm=True`` (the xLSTM block's per-head
norm of the read-out), so it goes through the same width search as every cell.

Usage::

    python benchmarks/compare_seeds.py --seeds 0 1 2 --out /tmp/seeds \\
        --json benchmarks/compare-seeds.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path
from typing import Any

import lstm
from lstm.cli import main as cli


class HeadNormMLSTM(lstm.MLSTM):
    """``lstm.MLSTM`` with ``head_norm=True`` by default (every other option as it has)."""

    __init__ = functools.partialmethod(lstm.MLSTM.__init__, head_norm=True)  # type: ignore[assignment]


def summarise(runs: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per cell: its width and parameters, and each BPC's mean, lowest and highest run."""
    cells = [entry["cell"] for entry in next(iter(runs.values()))]
    rows = []
    for cell in cells:
        found = [entry for entries in runs.values() for entry in entries if entry["cell"] == cell]
        row: dict[str, Any] = {
            "cell": cell,
            "hidden": found[0]["hidden"],
            "parameters": found[0]["parameters"],
        }
        for key in ("validation_bpc", "test_bpc"):
            values = [entry[key] for entry in found]
            row[key] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
        row["test_bpc_by_seed"] = {
            str(seed): next(e["test_bpc"] for e in entries if e["cell"] == cell)
            for seed, entries in runs.items()
        }
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`summarise`'s rows."""
    lines = [
        "| cell | hidden | parameters | validation BPC, mean (lowest, highest) "
        "| test BPC, mean (lowest, highest) | test BPC by seed |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        spans = [
            f"{row[key]['mean']:.3f} ({row[key]['min']:.3f}, {row[key]['max']:.3f})"
            for key in ("validation_bpc", "test_bpc")
        ]
        seeds = ", ".join(f"{value:.3f}" for value in row["test_bpc_by_seed"].values())
        lines.append(
            f"| {row['cell']} | {row['hidden']} | {row['parameters']:,} | "
            f"{spans[0]} | {spans[1]} | {seeds} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cells", nargs="+", default=["lstm", "slstm", "mlstm", "mlstm-norm"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/compare-seeds"))
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--threads", type=int, help="passed to compare")
    args = parser.parse_args()
    lstm.CELLS["mlstm-norm"] = HeadNormMLSTM
    runs: dict[int, list[dict[str, Any]]] = {}
    for seed in args.seeds:
        folder = args.out / f"seed-{seed}"
        command = ["compare", "--cells", *args.cells, "--seed", str(seed)]
        command += ["--out", str(folder), "--force", "--quiet"]
        command += [] if args.threads is None else ["--threads", str(args.threads)]
        if cli(command) != 0:
            raise SystemExit(f"python -m lstm {' '.join(command)} failed")
        runs[seed] = json.loads((folder / "compare.json").read_text())["entries"]
    rows = summarise(runs)
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps({"seeds": args.seeds, "cells": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
