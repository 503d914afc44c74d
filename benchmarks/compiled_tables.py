"""The compiled engine's before/after tables of BENCHMARKS.md, from ``python -m lstm bench`` JSON.

Reads one ``--json`` file per thread count (a run of ``bench --all-cells`` with the fused
candidate and ``--floor-for lstm --floor-for fused --floor-for nn.LSTM``) and prints, per
cell, shape and mode: the fused engine's and the compiled engine's time over ``nn.LSTM``'s
(each from its own interleaved pair with ``nn.LSTM``), the same per unit of matrix work
(divided by the cell's GEMM work over ``nn.LSTM``'s: :func:`lstm.bench.gemm_products`),
and each one's time over its GEMM floor beside ``nn.LSTM``'s.

Usage::

    python benchmarks/compiled_tables.py benchmarks/cpu-compiled-t1.json \\
        benchmarks/cpu-compiled-t2.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from lstm.bench import SHAPES, Shape, build_candidates, gemm_products


def matrix_work(cell: str, shape: Shape, mode: str) -> float:
    """The cell's GEMM floating-point operations over ``nn.LSTM``'s, at ``shape``."""
    modules = build_candidates(cell, shape, torch.float32)
    ours = sum(p.flops for p in gemm_products(modules["lstm"], shape, mode))
    theirs = sum(p.flops for p in gemm_products(modules["nn.LSTM"], shape, mode))
    return ours / theirs


def rows(path: Path) -> list[str]:
    """Markdown rows for one run (one thread count)."""
    payload = json.loads(path.read_text())
    threads = payload["config"].get("threads")
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for result in payload["results"]:
        key = (result["cell"], result["shape"], result["mode"])
        found.setdefault(key, {})[result["candidate"]] = result
    lines = []
    for (cell, shape_name, mode), by_name in found.items():
        if "fused" not in by_name:
            continue
        shape = SHAPES[shape_name]
        work = matrix_work(cell, shape, mode)
        after, before = by_name["lstm"], by_name["fused"]
        torch_floor = by_name["nn.LSTM"].get("ratio_to_floor")
        cells = [
            str(threads),
            cell,
            shape_name,
            mode,
            f"{work:.2f}",
            f"{before['ratio_to_torch']:.2f}x",
            f"{after['ratio_to_torch']:.2f}x",
            f"{after['ratio_to_torch'] / work:.2f}x",
            f"{before['ratio_to_floor']:.2f}x",
            f"{after['ratio_to_floor']:.2f}x",
            f"{torch_floor:.2f}x" if torch_floor is not None else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench --json files")
    args = parser.parse_args()
    header = [
        "threads",
        "cell",
        "shape",
        "mode",
        "matrix work / nn.LSTM's",
        "fused / nn.LSTM",
        "compiled / nn.LSTM",
        "compiled / nn.LSTM per unit of work",
        "fused / floor",
        "compiled / floor",
        "nn.LSTM / floor",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for path in args.runs:
        for line in rows(path):
            print(line)


if __name__ == "__main__":
    main()
