"""Ragged training batches: nn.LSTM on a PackedSequence against lstm.LSTM with lengths.

Run: python benchmarks/packed_training.py [--hidden 64] [--lengths 50,100,500,1000,2000]
    [--always-step]

One batch of ``--batch`` sequences whose lengths spread from 1 to T, most of them short
(``length_b = max(1, round(T * ((b + 1) / B) ** 3))``, as in ``load_scaling.py``); a step is
forward and backward with the input requiring grad. ``nn.LSTM`` is ``lstm.LSTM(...).to_torch()``
(the same weights), fed a ``PackedSequence``; ``lstm.LSTM`` gets ``lengths=`` and, above
``PACKED_TRAINING_MAX_LEN`` steps, runs its hoisted per-step path instead of the packed kernel.
``--always-step`` sets that limit to 0, so that ``lstm.LSTM`` steps at every length: the
ratio is then the packed kernel's time over the hoisted path's, the comparison that set the
limit. The two are timed interleaved in one process (after one warm-up step each), and the
ratio is of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstm
from lstm.cells import lstm as lstm_cells


def spread_lengths(batch: int, longest: int) -> torch.Tensor:
    """Lengths 1..longest, most of them short."""
    return torch.tensor([max(1, round(longest * ((b + 1) / batch) ** 3)) for b in range(batch)])


def measure(batch: int, size: int, longest: int, repeats: int) -> tuple[float, float]:
    """Median seconds of a training step of lstm.LSTM and of nn.LSTM (packed)."""
    lengths = spread_lengths(batch, longest)
    ours = lstm.LSTM(size, size)
    theirs = ours.to_torch()
    x = torch.randn(batch, longest, size)

    def step_ours() -> None:
        inputs = x.clone().requires_grad_()
        out, _ = ours(inputs, lengths=lengths)
        out.sum().backward()

    def step_theirs() -> None:
        inputs = x.clone().requires_grad_()
        packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        out, _ = theirs(packed)
        out.data.sum().backward()

    steps: dict[str, Callable[[], None]] = {"lstm": step_ours, "nn.LSTM": step_theirs}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up
    for _ in range(repeats):  # interleaved
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    return statistics.median(times["lstm"]), statistics.median(times["nn.LSTM"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64, help="input and hidden size")
    parser.add_argument("--lengths", default="50,100,200,500,1000,2000", help="values of T")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--always-step", action="store_true", help="lstm.LSTM never packs")
    args = parser.parse_args()
    if args.always_step:
        lstm_cells.PACKED_TRAINING_MAX_LEN = 0
    torch.manual_seed(0)
    print(f"PACKED_TRAINING_MAX_LEN = {lstm_cells.PACKED_TRAINING_MAX_LEN}; batch {args.batch}, "
          f"hidden {args.hidden}, {torch.get_num_threads()} threads")  # fmt: skip
    print("| T | total steps | lstm ms | nn.LSTM packed ms | nn.LSTM / lstm |")
    print("|---|---|---|---|---|")
    for longest in (int(value) for value in args.lengths.split(",")):
        ours, theirs = measure(args.batch, args.hidden, longest, args.repeats)
        total = int(spread_lengths(args.batch, longest).sum())
        print(
            f"| {longest} | {total} | {ours * 1e3:.0f} | {theirs * 1e3:.0f} | "
            f"{theirs / ours:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
