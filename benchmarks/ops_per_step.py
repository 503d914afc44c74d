"""How many ATen operations each cell dispatches per time step: the kernel launches a GPU pays.

On a GPU every ATen operation of the per-step loop is (at least) one kernel launch, a few
microseconds each, whatever the tensor size; at small batches the launches, not the
arithmetic, set the time. This counts them on the CPU, where the same operations run: the
top-level ATen operations recorded by ``torch.profiler`` for one call at ``seq_len`` T and
at 2T, their difference divided by T (so what a call does once drops out), for forward
(no grad) and for a training step (forward and backward). The compiled engine's
generated kernels are not ATen operations: beside the products counted here, it calls one
per step forward (two in training), from C++, with no Python in between.

Usage::

    python benchmarks/ops_per_step.py                 # every registered cell, engine auto
    python benchmarks/ops_per_step.py --cells lstm cifg --engine reference
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import lstm


def top_level_ops(step: object) -> int:
    """ATen operations dispatched by ``step()`` that no other recorded operation called."""
    with profile(activities=[ProfilerActivity.CPU]) as recorded:
        step()  # type: ignore[operator]
    events = recorded.events()
    return sum(1 for event in events if event.name.startswith("aten::") and not _nested(event))


def _nested(event: object) -> bool:
    parent = getattr(event, "cpu_parent", None)
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = getattr(parent, "cpu_parent", None)
    return False


def per_step(name: str, engine: str, train: bool, steps: int = 8) -> float:
    """ATen operations per time step of ``name`` (hidden 32, batch 4, one layer)."""
    torch.manual_seed(0)
    model = lstm.create(name, 16, 32)
    model.engine = engine
    counts = []
    for seq_len in (steps, 2 * steps):
        x = torch.randn(4, seq_len, 16, requires_grad=train)

        def call(x: torch.Tensor = x) -> None:
            if train:
                model(x)[0].sum().backward()
            else:
                with torch.no_grad():
                    model(x)

        call()  # warm up
        counts.append(top_level_ops(call))
    return (counts[1] - counts[0]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=sorted(lstm.CELLS))
    parser.add_argument("--engine", default="auto", choices=list(lstm.engines.ENGINES))
    args = parser.parse_args()
    print("| cell | engine | forward ops / step | training ops / step |")
    print("|---|---|---|---|")
    for name in args.cells:
        model = lstm.create(name, 16, 32)
        model.engine = args.engine
        ran = model.engine_for(torch.randn(4, 8, 16, requires_grad=True)).name
        forward, train = per_step(name, args.engine, False), per_step(name, args.engine, True)
        print(f"| {name} | {ran} | {forward:.1f} | {train:.1f} |")


if __name__ == "__main__":
    main()
