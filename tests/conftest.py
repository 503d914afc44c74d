"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import pytest
import torch

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
