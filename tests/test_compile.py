"""torch.compile of a model holding each registered cell: same results as eager, forward and
backward, on every engine the cell runs on by default and on the reference path; and the
whole forward traced into one graph (no graph break in the time loop).

Axes: the cell (its ``forward_cell`` is what Dynamo traces step by step) is crossed with the
engine; ragged lengths are masked by the driver, the same code for every cell, so they are
compiled once per engine (the LSTM's kernel and the step loop), not once per cell.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from builders import NAMES, build, parts

# (cell, engine, ragged lengths): every cell on its default engine over full-length
# sequences, and ragged lengths on the LSTM's kernel and on the step loop.
CASES = [(name, "auto", False) for name in NAMES] + [
    ("lstm", "auto", True),
    ("lstm", "reference", True),
    ("nn-lstm", "auto", False),  # lstm.nn.LSTM (nn.LSTM's face) on its kernel
    ("nn-lstm", "auto", True),
    ("nn-lstm-step", "auto", False),  # a user's step on lstm.nn.LSTM
]


# Dynamo reads .grad of a non-leaf while tracing torch.lstm on packed data (torch 2.13).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
@pytest.mark.parametrize(("name", "engine", "ragged"), CASES)
def test_compiled_model_matches_eager(name: str, engine: str, ragged: bool) -> None:
    torch._dynamo.reset()
    # Small on purpose: the reference path unrolls every step of every cell into the graph.
    num_layers = 2 if engine == "auto" and name in ("lstm", "nn-lstm") else 1
    model = build(name, 3, 4, dtype=torch.float32, num_layers=num_layers)
    model.engine = engine  # build gives eval mode (lane choices are argmax by default)
    # Full-length batches must trace whole: a graph break inside the time loop would leave
    # the loop to eager mode. Ragged lengths are read on the host, a graph break by design.
    compiled = torch.compile(model, fullgraph=not ragged)
    x = torch.randn(2, 3, 3, requires_grad=True)
    lengths = torch.tensor([3, 2]) if ragged else None
    out, (hidden, state) = model(x, lengths=lengths)
    c_out, (c_hidden, c_state) = compiled(x, lengths=lengths)
    torch.testing.assert_close(c_out, out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_hidden, hidden, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_state, state, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(out.sum() + _total(state), x)
    (c_grad,) = torch.autograd.grad(c_out.sum() + _total(c_state), x)
    torch.testing.assert_close(c_grad, grad, rtol=1e-5, atol=1e-6)


def _total(state: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.stack([part.sum() for part in parts(state)]).sum()


@pytest.mark.parametrize("engine", ["auto", "reference"])
def test_the_layer_stack_and_both_directions_trace_into_one_graph(engine: str) -> None:
    # Two layers, both directions, on the kernel and on the step loop. The stack and the
    # reversed direction are the driver's, the same for every cell (each cell's own step is
    # traced with fullgraph above). Traced only (the "eager" backend): what Dynamo sees
    # does not depend on the backend.
    torch._dynamo.reset()
    counters.clear()
    model = build("lstm", 3, 4, dtype=torch.float32, num_layers=2, bidirectional=True)
    model.engine = engine
    x = torch.randn(2, 2, 3)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x)[0], model(x)[0], rtol=0, atol=0)
    assert counters["stats"]["unique_graphs"] == 1
