"""The mLSTM's two forms against nn.LSTM as sequences grow, and its chunk size.

Run: python benchmarks/mlstm_seq_len.py [--threads 1] [--rounds 3] [--min-run-time 0.5]
    [--seq-lens 128,256,512,1024,2048,4096] [--step-max 1024] [--chunks 16,32,64,128,256]
    [--json benchmarks/mlstm-seq-len.json] [--plot benchmarks/mlstm-seq-len.png]

A training step (forward, ``out.sum()``, backward, the input requiring grad; what
``python -m lstm bench`` calls ``train``) on a batch of 8 sequences of 256 features, hidden
size 256, float32, for:

* ``parallel``: ``lstm.MLSTM(256, 256)`` (4 heads) on its own engine, the chunkwise form;
* ``step``: the same module with ``engine = "reference"``: ``forward_cell`` at every step
  (only up to ``--step-max`` steps: it grows linearly, and is slow);
* ``nn.LSTM``: ``torch.nn.LSTM(256, 256, batch_first=True)``.

Every seq_len's candidates are timed interleaved (``lstm.bench.time_interleaved``, one
``blocked_autorange`` each per round, the order turning every round) with
``torch.utils.benchmark.Timer(num_threads=--threads)``; the figures are medians and ratios
of medians. Then the chunk sizes, at seq_len 512, interleaved likewise.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from torch import nn

import lstm
from lstm import _atomic as atomic
from lstm.bench import make_step, time_interleaved

BATCH, FEATURES, HIDDEN = 8, 256, 256


def candidates(seq_len: int, step_max: int, chunk_size: int) -> dict[str, nn.Module]:
    """The modules timed at one seq_len (the step form only up to ``step_max``)."""
    torch.manual_seed(0)
    parallel = lstm.MLSTM(FEATURES, HIDDEN, chunk_size=chunk_size)
    found: dict[str, nn.Module] = {"parallel": parallel}
    if seq_len <= step_max:
        step = lstm.MLSTM(FEATURES, HIDDEN, chunk_size=chunk_size)
        step.load_state_dict(parallel.state_dict())
        step.engine = "reference"
        found["step"] = step
    found["nn.LSTM"] = nn.LSTM(FEATURES, HIDDEN, batch_first=True)
    return found


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--seq-lens", default="128,256,512,1024,2048,4096")
    parser.add_argument("--step-max", type=int, default=1024)
    parser.add_argument("--chunks", default="16,32,64,128,256")
    parser.add_argument("--chunk-size", type=int, default=64, help="for the seq_len curve")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    curve = []
    print(f"training step, batch {BATCH}, {FEATURES} -> {HIDDEN}, {args.threads} thread(s)")
    print(
        f"{'seq_len':>7} {'parallel ms':>11} {'step ms':>9} {'nn.LSTM ms':>10} "
        f"{'parallel/nn.LSTM':>16} {'step/parallel':>13}"
    )
    for seq_len in (int(text) for text in args.seq_lens.split(",")):
        x = torch.randn(BATCH, seq_len, FEATURES)
        modules = candidates(seq_len, args.step_max, args.chunk_size)
        steps = {name: make_step(module, x, "train") for name, module in modules.items()}
        got = medians(time_interleaved(steps, args.rounds, args.min_run_time, args.threads))
        row = {"seq_len": seq_len, **{name: got[name] for name in got}}
        curve.append(row)
        step_ms = f"{got['step'] * 1e3:9.1f}" if "step" in got else f"{'-':>9}"
        speedup = f"{got['step'] / got['parallel']:12.1f}x" if "step" in got else f"{'-':>13}"
        print(
            f"{seq_len:>7} {got['parallel'] * 1e3:11.1f} {step_ms} {got['nn.LSTM'] * 1e3:10.1f} "
            f"{got['parallel'] / got['nn.LSTM']:15.2f}x {speedup}"
        )
    chunk_rows = []
    x = torch.randn(BATCH, 512, FEATURES)
    chunk_steps = {}
    for chunk in (int(text) for text in args.chunks.split(",")):
        torch.manual_seed(0)
        chunk_steps[f"chunk {chunk}"] = make_step(
            lstm.MLSTM(FEATURES, HIDDEN, chunk_size=chunk), x, "train"
        )
    chunk_steps["nn.LSTM"] = make_step(nn.LSTM(FEATURES, HIDDEN, batch_first=True), x, "train")
    got = medians(time_interleaved(chunk_steps, args.rounds, args.min_run_time, args.threads))
    print(f"\nchunk size at seq_len 512 (training step; nn.LSTM {got['nn.LSTM'] * 1e3:.1f} ms)")
    for name, seconds in got.items():
        if name != "nn.LSTM":
            chunk_rows.append({"chunk_size": int(name.split()[1]), "seconds": seconds})
            print(f"{name:>10}: {seconds * 1e3:8.1f} ms  {seconds / got['nn.LSTM']:.2f}x nn.LSTM")
    if args.json is not None:
        config = {
            "threads": args.threads,
            "rounds": args.rounds,
            "min_run_time": args.min_run_time,
            "batch": BATCH,
            "features": FEATURES,
            "hidden": HIDDEN,
            "chunk_size": args.chunk_size,
            "torch": torch.__version__,
        }
        atomic.write_json(args.json, {"config": config, "seq_len": curve, "chunks": chunk_rows})
    if args.plot is not None:
        plot(args.plot, curve, args.threads)


def plot(path: Path, curve: list[dict[str, float]], threads: int) -> None:
    """Milliseconds per training step against seq_len, log-log, one line per candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for name, style in (("parallel", "o-"), ("step", "s--"), ("nn.LSTM", "^-")):
        points = [(row["seq_len"], row[name] * 1e3) for row in curve if name in row]
        label = {"parallel": "mLSTM, parallel form", "step": "mLSTM, step form"}.get(name, name)
        axes.plot(*zip(*points, strict=True), style, label=label)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("seq_len")
    axes.set_ylabel("ms per training step")
    axes.set_title(f"batch {BATCH}, {FEATURES} -> {HIDDEN}, {threads} thread(s)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    atomic.write_figure(path, figure)


if __name__ == "__main__":
    main()
