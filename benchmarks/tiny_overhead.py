"""The Python around the kernel: lstm.LSTM against nn.LSTM where the kernel call is cheap.

Run: python benchmarks/tiny_overhead.py [--threads 1,2] [--rounds 7] [--min-time 0.2]
    [--shapes tiny,medium]

``tiny`` is a DeepLog-sized model, ``lstm.LSTM(1, 64, num_layers=2)`` on a batch of 32
sequences of 10 steps, where the kernel takes some hundred microseconds and every
microsecond of Python around it shows; ``medium`` is ``lstm.LSTM(256, 256)`` on 64 x 100
steps, where the kernel dominates. ``nn.LSTM`` is ``model.to_torch()`` (the same weights).

Two modes, each step made by ``lstm.bench.make_step`` (what ``python -m lstm bench`` times):
``forward`` under ``torch.no_grad()``, and ``train``: gradients cleared, forward with the
input requiring grad, ``out.sum().backward()``. For every shape, mode and thread count
the two modules are timed with ``torch.utils.benchmark.Timer(num_threads=n)``, interleaved
(one ``blocked_autorange`` of each per round, ``--rounds`` rounds); the figure printed is
the median of lstm.LSTM's per-round medians over nn.LSTM's.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from torch.utils.benchmark import Timer

import lstm
from lstm.bench import make_step

SHAPES = {
    # name: (batch, seq_len, input_size, hidden_size, num_layers)
    "tiny": (32, 10, 1, 64, 2),
    "medium": (64, 100, 256, 256, 1),
}


def ratio(shape: str, mode: str, threads: int, rounds: int, min_time: float) -> float:
    """Median time of lstm.LSTM over nn.LSTM's, interleaved, for one configuration."""
    torch.manual_seed(0)
    batch, seq_len, input_size, hidden_size, layers = SHAPES[shape]
    ours = lstm.LSTM(input_size, hidden_size, num_layers=layers)
    theirs = ours.to_torch()
    x = torch.randn(batch, seq_len, input_size)
    timers = {
        name: Timer("run()", globals={"run": make_step(model, x, mode)}, num_threads=threads)
        for name, model in (("lstm", ours), ("nn.LSTM", theirs))
    }
    medians: dict[str, list[float]] = {name: [] for name in timers}
    for timer in timers.values():
        timer.timeit(20)  # warm-up
    for _ in range(rounds):
        for name, timer in timers.items():
            medians[name].append(timer.blocked_autorange(min_run_time=min_time).median)
    ours_s, theirs_s = (statistics.median(medians[name]) for name in ("lstm", "nn.LSTM"))
    print(
        f"{shape:>6} {mode:>7} threads={threads}  lstm {ours_s * 1e6:9.1f} us  "
        f"nn.LSTM {theirs_s * 1e6:9.1f} us  ratio {ours_s / theirs_s:.3f}x",
        flush=True,
    )
    return ours_s / theirs_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per figure")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per measurement")
    parser.add_argument("--shapes", default="tiny,medium", help=f"of {', '.join(SHAPES)}")
    parser.add_argument("--modes", default="forward,train", help="forward, train or both")
    args = parser.parse_args()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load}, "
        f"{args.rounds} rounds, ratio = lstm.LSTM / nn.LSTM"
    )
    for shape in args.shapes.split(","):
        for mode in args.modes.split(","):
            for threads in (int(n) for n in args.threads.split(",")):
                ratio(shape, mode, threads, args.rounds, args.min_time)


if __name__ == "__main__":
    main()
