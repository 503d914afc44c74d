"""An independent, step-by-step LSTM written from the documented equations.

It shares no code with the package: each sequence runs on its own, over its true length
only, one 1-D step at a time, with the gate blocks sliced by hand in the documented order
forget, input, output, candidate. Tests compare the driver (masking, batching, stacking)
and the cell against it in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# (W_ih, W_hh, b_ih, b_hh) of one cell; biases may be None.
CellWeights = tuple[Tensor, Tensor, Tensor | None, Tensor | None]


def lstm_step(x: Tensor, h: Tensor, c: Tensor, weights: CellWeights) -> tuple[Tensor, Tensor]:
    """One step on 1-D vectors: x (F,), h and c (H,)."""
    w_ih, w_hh, b_ih, b_hh = weights
    size = h.shape[0]
    a = w_ih @ x + w_hh @ h
    if b_ih is not None and b_hh is not None:
        a = a + b_ih + b_hh
    f = torch.sigmoid(a[0:size])
    i = torch.sigmoid(a[size : 2 * size])
    o = torch.sigmoid(a[2 * size : 3 * size])
    g = torch.tanh(a[3 * size : 4 * size])
    c = f * c + i * g
    h = o * torch.tanh(c)
    return h, c


def run_reference(
    x: Tensor,
    weights: dict[tuple[int, int], CellWeights],
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    lengths: list[int] | None = None,
    h0: Tensor | None = None,
    c0: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run a stacked (bi)directional LSTM sequence by sequence.

    Parameters
    ----------
    x : (B, T, F) batch-first input.
    weights : (layer, direction) -> cell weights in f, i, o, g layout.
    lengths : true length of each sequence (default: all T).
    h0, c0 : (L*D, B, H) initial states (default zeros).

    Returns
    -------
    outputs (B, T, D*H) with zeros past each end, h_n and c_n (L*D, B, H).
    """
    batch, seq_len, _ = x.shape
    directions = 2 if bidirectional else 1
    cells = num_layers * directions
    lengths = lengths if lengths is not None else [seq_len] * batch
    if h0 is None:
        h0 = x.new_zeros(cells, batch, hidden_size)
    if c0 is None:
        c0 = x.new_zeros(cells, batch, hidden_size)
    outputs = x.new_zeros(batch, seq_len, directions * hidden_size)
    h_n = [[x.new_zeros(0)] * batch for _ in range(cells)]
    c_n = [[x.new_zeros(0)] * batch for _ in range(cells)]
    for b in range(batch):
        n = lengths[b]
        layer_input = [x[b, t] for t in range(n)]
        for layer in range(num_layers):
            per_direction = []
            for direction in range(directions):
                index = layer * directions + direction
                h, c = h0[index, b], c0[index, b]
                out: list[Tensor] = [x.new_zeros(0)] * n
                order = range(n - 1, -1, -1) if direction == 1 else range(n)
                for t in order:
                    h, c = lstm_step(layer_input[t], h, c, weights[(layer, direction)])
                    out[t] = h
                per_direction.append(out)
                h_n[index][b], c_n[index][b] = h, c
            layer_input = [torch.cat([d[t] for d in per_direction]) for t in range(n)]
        for t in range(n):
            outputs[b, t] = layer_input[t]
    stack = lambda rows: torch.stack([torch.stack(row) for row in rows])  # noqa: E731
    return outputs, stack(h_n), stack(c_n)


def run_stack_reference(
    x: Tensor,
    lengths: list[int],
    num_layers: int,
    bidirectional: bool,
    step: Callable[[int, int, Tensor, Tensor, Any], tuple[Tensor, Any]],
    initial: Callable[[], tuple[Tensor, Any]],
) -> tuple[Tensor, Tensor, list[list[Any]]]:
    """Any cell's stack, sequence by sequence over its true length, one 1-D step at a time.

    ``step(layer, direction, x_t, h, state)`` computes one step from the paper's equations;
    ``initial()`` gives one sequence's (h, state). Returns outputs (B, T, D*H) with zeros
    past each end, h_n (L*D, B, H), and the final state of every cell and sequence as
    ``states[cell][b]``.
    """
    batch, seq_len = x.shape[0], x.shape[1]
    directions = 2 if bidirectional else 1
    h_size = initial()[0].shape[0]
    outputs = x.new_zeros(batch, seq_len, directions * h_size)
    h_n = x.new_zeros(num_layers * directions, batch, h_size)
    states: list[list[Any]] = [[None] * batch for _ in range(num_layers * directions)]
    for b, n in enumerate(lengths):
        layer_input = [x[b, t] for t in range(n)]
        for layer in range(num_layers):
            per_direction = []
            for direction in range(directions):
                h, state = initial()
                out: list[Tensor] = [h] * n
                for t in range(n - 1, -1, -1) if direction else range(n):
                    h, state = step(layer, direction, layer_input[t], h, state)
                    out[t] = h
                per_direction.append(out)
                h_n[layer * directions + direction, b] = h
                states[layer * directions + direction][b] = state
            layer_input = [torch.cat([d[t] for d in per_direction]) for t in range(n)]
        for t in range(n):
            outputs[b, t] = layer_input[t]
    return outputs, h_n, states
