"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import Tensor, nn

from lstm import LSTM, Recurrent
from reference import CellWeights

DOUBLE = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def reference_weights(model: Recurrent) -> dict[tuple[int, int], CellWeights]:
    """The (W_ih, W_hh, b_ih, b_hh) of every cell of an LSTM-layout model."""
    weights = {}
    for layer in range(model.num_layers):
        for direction in range(model.num_directions):
            parts = model.cell_parts(layer, direction)
            i2h, h2h = parts["i2h"], parts["h2h"]
            weights[(layer, direction)] = (i2h.weight, h2h.weight, i2h.bias, h2h.bias)
    return weights


def make_lstm(**options: object) -> LSTM:
    options.setdefault("dtype", DOUBLE)
    return LSTM(3, 4, **options)  # type: ignore[arg-type]


def projection(probes: list[torch.Tensor], tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A random linear function of several outputs, to compare all their gradients at once."""
    return torch.stack([(p * t).sum() for p, t in zip(probes, tensors, strict=True)]).sum()


@pytest.fixture
def linear_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How often each ``nn.Linear`` (by ``id``) runs its forward during the test."""
    calls: Counter[int] = Counter()
    original = nn.Linear.forward

    def counting(self: nn.Linear, x: Tensor) -> Tensor:
        calls[id(self)] += 1
        return original(self, x)

    monkeypatch.setattr(nn.Linear, "forward", counting)
    return calls
