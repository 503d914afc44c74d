"""ArrayLSTM's vectorised lanes against a per-lane Python loop, forward + backward.

Run: python benchmarks/array_lanes.py [--shape B,T,I,H] [--k K]

The per-lane baseline is a subclass whose forward_cell loops over the k lanes in Python, as
the original implementation did; everything else (driver, input projection per step) is the
same, so the ratio isolates the lane loop. Timed with torch.utils.benchmark, interleaved.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import Tensor
from torch.utils import benchmark

from lstm import ArrayLSTM


class PerLaneArrayLSTM(ArrayLSTM):
    """The same function, one lane at a time."""

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        size = self.hidden_size
        gates = (self.i2h(x) + self.h2h(hidden)).view(x.shape[0], self.k, 4 * size)
        new_hidden = torch.zeros_like(hidden)
        new_state = []
        for lane in range(self.k):
            block = gates[:, lane]
            forget = torch.sigmoid(block[:, :size])
            input_gate = torch.sigmoid(block[:, size : 2 * size])
            output = torch.sigmoid(block[:, 2 * size : 3 * size])
            cell = forget * state[lane] + input_gate * torch.tanh(block[:, 3 * size :])
            new_state.append(cell)
            new_hidden = new_hidden + output * torch.tanh(cell)
        return new_hidden, torch.stack(new_state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="64,100,256,256")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    batch, seq_len, input_size, hidden_size = (int(v) for v in args.shape.split(","))
    torch.manual_seed(0)
    ours = ArrayLSTM(input_size, hidden_size, args.k)
    per_lane = PerLaneArrayLSTM(input_size, hidden_size, args.k)
    per_lane.load_state_dict(ours.state_dict())
    x = torch.randn(batch, seq_len, input_size, requires_grad=True)
    torch.testing.assert_close(per_lane(x)[0], ours(x)[0], rtol=1e-5, atol=1e-5)

    def step(module: ArrayLSTM) -> None:
        module.zero_grad(set_to_none=True)
        out, _ = module(x)
        out.sum().backward()

    times: dict[str, list[float]] = {"ArrayLSTM": [], "per-lane loop": []}
    for _ in range(args.rounds):
        for name, module in (("ArrayLSTM", ours), ("per-lane loop", per_lane)):
            timer = benchmark.Timer("step(module)", globals={"step": step, "module": module})
            times[name].extend(timer.blocked_autorange(min_run_time=2.0).times)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name:<14} {median * 1e3:9.1f} ms (forward + backward, median)")
    ratio = medians["per-lane loop"] / medians["ArrayLSTM"]
    print(f"per-lane loop / ArrayLSTM = {ratio:.2f}x at {args.shape}, k={args.k}")


if __name__ == "__main__":
    main()
