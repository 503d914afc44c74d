"""A short demonstration run: a byte-level language model on this package's own source.

Run it with ``python -m lstm.demo``. It trains ``embedding -> lstm.LSTM -> linear`` to predict
the next byte of the package's Python files (embedded, nothing is downloaded), prints the
training loss in bits per byte as it falls, then the loss on a held-out tail of the text.
It takes well under a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import math
import time
from importlib import resources

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstm import create
from lstm.registry import CELLS


def package_bytes() -> Tensor:
    """The bytes of this package's ``.py`` files, sorted by name, as an int64 tensor."""
    root = resources.files("lstm")
    names = sorted(entry.name for entry in root.iterdir() if entry.name.endswith(".py"))
    data = b"".join(root.joinpath(name).read_bytes() for name in names)
    return torch.tensor(list(data), dtype=torch.int64)


class ByteModel(nn.Module):
    """Embedding of the 256 byte values -> recurrent cell -> logits over the next byte.

    Parameters
    ----------
    cell : str
        Registered cell name (see :data:`lstm.CELLS`).
    hidden_size : int
        Width of the embedding and of the recurrent cell.
    """

    def __init__(self, cell: str, hidden_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, hidden_size)
        self.rnn = create(cell, hidden_size, hidden_size)
        self.head = nn.Linear(hidden_size, 256)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits of shape (batch, seq_len, 256) for tokens of shape (batch, seq_len)."""
        out, _ = self.rnn(self.embed(tokens))
        logits: Tensor = self.head(out)  # (B, T, 256)
        return logits


def batches(
    data: Tensor, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """A random batch of windows: inputs and next-byte targets, each (batch, seq_len)."""
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=generator)
    windows = torch.stack([data[start : start + seq_len + 1] for start in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def bits(model: nn.Module, tokens: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy in bits per byte."""
    logits = model(tokens)
    return F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1)) / math.log(2)


def main(argv: list[str] | None = None) -> float:
    """Train, print progress, and return the held-out loss in bits per byte."""
    parser = argparse.ArgumentParser(
        prog="python -m lstm.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--cell", default="lstm", choices=sorted(CELLS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.hidden < 1 or args.batch_size < 1 or args.seq_len < 2:
        parser.error("--steps, --hidden and --batch-size must be >= 1 and --seq-len >= 2")

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    data = package_bytes()
    split = int(0.9 * data.numel())
    train, held_out = data[:split], data[split:]
    model = ByteModel(args.cell, args.hidden)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    print(f"training a {args.cell} byte model on {data.numel():,} bytes of lstm's own source")
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        tokens, targets = batches(train, args.batch_size, args.seq_len, generator)
        loss = bits(model, tokens, targets)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        if step == 1 or step % 50 == 0 or step == args.steps:
            print(f"step {step:4d}  train loss {loss.item():.3f} bits/byte")
    model.eval()
    with torch.no_grad():
        tokens, targets = batches(held_out, 64, args.seq_len, generator)
        held_out_bits = bits(model, tokens, targets).item()
    elapsed = time.perf_counter() - started
    print(
        f"held-out loss {held_out_bits:.3f} bits/byte (uniform guessing: 8.000) in {elapsed:.1f}s"
    )
    return held_out_bits


if __name__ == "__main__":
    main()
