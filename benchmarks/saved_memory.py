"""Bytes each engine saves for backward, per cell: the activation memory of a training step.

Counted with ``torch.autograd.graph.saved_tensors_hooks`` (every engine saves through
``save_for_backward``, so the hooks see all of it), each distinct tensor once, after a
first call (which traces the compiled engine's step and is not counted). Parameters saved
by an engine are counted too: they are the same for every engine of a cell.

Usage::

    python benchmarks/saved_memory.py                          # (8, 200, 64, 64), 2 layers
    python benchmarks/saved_memory.py --shape 64,100,256,256 --layers 1
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor

import lstm


def saved_bytes(model: lstm.Recurrent, x: Tensor) -> int:
    """Bytes of the distinct tensors one forward of ``model`` saves for backward."""
    seen: dict[tuple[int, int, tuple[int, ...]], int] = {}

    def pack(tensor: Tensor) -> Tensor:
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        seen[key] = tensor.numel() * tensor.element_size()
        return tensor

    model(x)  # the first call traces: not counted
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="8,200,64,64", help="batch,seq_len,input,hidden")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--cells", nargs="+", default=sorted(lstm.CELLS))
    args = parser.parse_args()
    batch, steps, features, hidden = (int(v) for v in args.shape.split(","))
    x = torch.randn(batch, steps, features, requires_grad=True)
    engines = ("compiled", "fused", "reference")
    print("| cell | " + " | ".join(f"{e} MB" for e in engines) + " | compiled / fused |")
    print("|---|" + "---|" * (len(engines) + 1))
    for name in args.cells:
        model = lstm.create(name, features, hidden, num_layers=args.layers)
        found = {}
        for engine in engines:
            model.engine = engine
            if model.engine_for(x).name != engine:
                continue
            found[engine] = saved_bytes(model, x)
        if "compiled" not in found or "fused" not in found:
            continue
        cells = " | ".join(f"{found[e] / 1e6:.2f}" if e in found else "-" for e in engines)
        print(f"| {name} | {cells} | {found['compiled'] / found['fused']:.2f} |")


if __name__ == "__main__":
    main()
