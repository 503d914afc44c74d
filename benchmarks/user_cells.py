"""Cells written as a user writes them, on the compiled engine, beside ``nn.LSTM``.

The README's coupled-gate LSTM (``lstm.LSTM`` with ``forward_cell`` overridden) and the
tutorial's gated recurrent cell (nn.GRU's equations on ``lstm.Recurrent``), timed as
``python -m lstm bench`` times a registered cell: each candidate in its own interleaved
pair with an ``nn.LSTM`` of the same sizes (:func:`lstm.bench.time_interleaved`, medians,
ratio of medians), and each against its GEMM floor (:func:`lstm.bench.gemm_floor`) in a
pair of its own, on the same threads. Candidates: the cell as it runs by default
(``engine="auto"``: compiled when the toolchain is there, the engine named in the table)
and its reference path (``forward_cell`` step by step: what such a cell ran before the
compiled engine). ``per unit of work`` divides by the cell's matrix work over
``nn.LSTM``'s (:func:`lstm.bench.gemm_products`).

Usage::

    python benchmarks/user_cells.py --threads 1
    python benchmarks/user_cells.py --threads 2 --shape 8,200,64,64 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch
from torch import Tensor, nn

import lstm
from lstm.bench import SHAPES, Shape, gemm_floor, gemm_products, make_step, time_interleaved


class CoupledGateLSTM(lstm.LSTM):
    """The README's cell: the input gate is one minus the forget gate."""

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        forget, _, output, candidate = (self.i2h(x) + self.h2h(hidden)).chunk(4, dim=-1)
        forget = torch.sigmoid(forget)
        state = forget * state + (1 - forget) * torch.tanh(candidate)
        return torch.sigmoid(output) * torch.tanh(state), state


class GatedRecurrentCell(lstm.Recurrent):
    """The tutorial's cell: ``h' = (1 - z) * tanh(W_n x + r * (U_n h)) + z * h``."""

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


CELLS: dict[str, type[lstm.Recurrent]] = {
    "coupled-gate": CoupledGateLSTM,
    "gated-recurrent": GatedRecurrentCell,
}


def median_ratio(times: dict[str, list[float]], name: str, other: str) -> float:
    """Median of ``name``'s times over the median of ``other``'s."""
    return statistics.median(times[name]) / statistics.median(times[other])


def measure(cell: str, shape: Shape, mode: str, rounds: int, seconds: float, threads: int) -> str:
    """One markdown row: the cell's engine, its ratios to ``nn.LSTM`` and to its floor."""
    torch.manual_seed(0)
    model = CELLS[cell](shape.input_size, shape.hidden_size, num_layers=shape.num_layers)
    reference = CELLS[cell](shape.input_size, shape.hidden_size, num_layers=shape.num_layers)
    reference.load_state_dict(model.state_dict())
    reference.engine = "reference"
    torch_lstm = nn.LSTM(
        shape.input_size, shape.hidden_size, num_layers=shape.num_layers, batch_first=True
    )
    x = torch.randn(shape.batch, shape.seq_len, shape.input_size)
    with torch.set_grad_enabled(mode == "train"):
        engine = model.engine_for(x.requires_grad_(mode == "train")).name
    x = x.detach()
    steps = {
        "cell": make_step(model, x, mode),
        "reference": make_step(reference, x, mode),
        "nn.LSTM": make_step(torch_lstm, x, mode),
    }
    steps["cell"]()  # the first call traces and compiles: not timed
    pair = time_interleaved(
        {"cell": steps["cell"], "nn.LSTM": steps["nn.LSTM"]}, rounds, seconds, threads
    )
    reference_pair = time_interleaved(
        {"reference": steps["reference"], "nn.LSTM": steps["nn.LSTM"]}, rounds, seconds, threads
    )
    floor = time_interleaved(
        {"cell": steps["cell"], "floor": gemm_floor(model, shape, mode)}, rounds, seconds, threads
    )
    torch_floor = time_interleaved(
        {"nn.LSTM": steps["nn.LSTM"], "floor": gemm_floor(torch_lstm, shape, mode)},
        rounds,
        seconds,
        threads,
    )
    work = sum(p.flops for p in gemm_products(model, shape, mode)) / sum(
        p.flops for p in gemm_products(torch_lstm, shape, mode)
    )
    to_torch = median_ratio(pair, "cell", "nn.LSTM")
    cells = [
        str(threads),
        cell,
        shape.name,
        mode,
        engine,
        f"{work:.2f}",
        f"{to_torch:.2f}x",
        f"{to_torch / work:.2f}x",
        f"{median_ratio(reference_pair, 'reference', 'nn.LSTM'):.2f}x",
        f"{median_ratio(floor, 'cell', 'floor'):.2f}x",
        f"{median_ratio(torch_floor, 'nn.LSTM', 'floor'):.2f}x",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds a measurement")
    parser.add_argument(
        "--shape", action="append", help="small, medium, tiny or batch,seq_len,input,hidden"
    )
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shapes = []
    for text in args.shape or ["small", "medium"]:
        if text in SHAPES:
            shapes.append(SHAPES[text])
        else:
            batch, steps, features, hidden = (int(v) for v in text.split(","))
            shapes.append(Shape(batch, steps, features, hidden, label=text))
    print(
        "| threads | cell | shape | mode | engine | matrix work / nn.LSTM's | cell / nn.LSTM "
        "| per unit of work | reference / nn.LSTM | cell / floor | nn.LSTM / floor |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for cell in args.cells:
        for shape in shapes:
            for mode in ("forward", "train"):
                print(measure(cell, shape, mode, args.rounds, args.min_run_time, args.threads))


if __name__ == "__main__":
    main()
