"""torch.compile of a model holding each registered cell: same results as eager, forward and
backward, on every engine the cell runs on by default and on the reference path."""

from __future__ import annotations

import pytest
import torch

from builders import NAMES, build, parts

CASES = [(name, "auto") for name in NAMES] + [("lstm", "reference")]


# Dynamo reads .grad of a non-leaf while tracing torch.lstm on packed data (torch 2.13).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
@pytest.mark.parametrize(("name", "engine"), CASES)
def test_compiled_model_matches_eager(name: str, engine: str) -> None:
    torch._dynamo.reset()
    # Small on purpose: the reference path unrolls every step of every cell into the graph.
    num_layers = 2 if engine == "auto" and name == "lstm" else 1
    model = build(name, 3, 4, dtype=torch.float32, num_layers=num_layers)
    model.engine = engine  # build gives eval mode: deterministic, stochastic pooling included
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 3, requires_grad=True)
    lengths = torch.tensor([3, 2])
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
