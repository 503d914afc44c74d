"""The independent, step-by-step reference every cell is compared with.

It shares no code with the package: :func:`run_reference` runs each sequence on its own, over
its true length only, one 1-D step at a time, layer by layer and direction by direction,
with a step function written from the cell's published equations (the gate blocks sliced
by hand). It is the only runner of its kind in the tests; each family's test file writes
its equations as a step and calls it. The LSTM's equations are here (:func:`lstm_step`),
since the driver's tests, the engines' tests and the property tests compare with them too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Step = Callable[[int, int, Tensor, Tensor, Any], tuple[Tensor, Any]]
"""``step(layer, direction, x_t, h, state) -> (h, state)`` on 1-D vectors."""

Initial = Callable[[int, int], tuple[Tensor, Any]]
"""``initial(cell, b) -> (h, state)``: cell ``layer * directions + direction``, sequence b."""

# (W_ih, W_hh, b_ih, b_hh) of one LSTM cell; biases may be None.
CellWeights = tuple[Tensor, Tensor, Tensor | None, Tensor | None]


def run_reference(
    x: Tensor,
    step: Step,
    initial: Initial,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    lengths: list[int] | None = None,
) -> tuple[Tensor, Tensor, list[list[Any]]]:
    """Run any cell's stack sequence by sequence, over each true length, one step at a time.

    Parameters
    ----------
    x : (B, T, F) batch-first input.
    step : one step of one cell, from the paper's equations.
    initial : one sequence's initial (h, state) in one cell.
    lengths : true length of each sequence (default: all T).

    Returns
    -------
    outputs (B, T, D*H) with zeros past each end, h_n (L*D, B, H), and the final state of
    every cell and sequence as ``states[cell][b]`` (see :func:`stack_states`).
    """
    batch, seq_len = x.shape[0], x.shape[1]
    directions = 2 if bidirectional else 1
    lengths = lengths if lengths is not None else [seq_len] * batch
    h_size = initial(0, 0)[0].shape[0]
    outputs = x.new_zeros(batch, seq_len, directions * h_size)
    h_n = x.new_zeros(num_layers * directions, batch, h_size)
    states: list[list[Any]] = [[None] * batch for _ in range(num_layers * directions)]
    for b, n in enumerate(lengths):
        layer_input = [x[b, t] for t in range(n)]
        for layer in range(num_layers):
            per_direction = []
            for direction in range(directions):
                cell = layer * directions + direction
                h, state = initial(cell, b)
                out: list[Tensor] = [h] * n
                for t in range(n - 1, -1, -1) if direction else range(n):
                    h, state = step(layer, direction, layer_input[t], h, state)
                    out[t] = h
                per_direction.append(out)
                h_n[cell, b] = h
                states[cell][b] = state
            layer_input = [torch.cat([d[t] for d in per_direction]) for t in range(n)]
        for t in range(n):
            outputs[b, t] = layer_input[t]
    return outputs, h_n, states


def stack_states(states: list[list[Any]]) -> Any:
    """``states[cell][b]`` in the driver's layout: each tensor of a sequence's state, shaped
    (*lead, H), becomes (cells * lead, B, H); a tuple state becomes a tuple of those."""
    first = states[0][0]
    if isinstance(first, tuple):
        return tuple(
            stack_states([[state[index] for state in row] for row in states])
            for index in range(len(first))
        )
    stacked = torch.stack([torch.stack(row) for row in states])  # (cells, B, *lead, H)
    batch, size = stacked.shape[1], stacked.shape[-1]
    return stacked.movedim(1, -2).reshape(-1, batch, size)


def zeros_initial(like: Tensor, hidden_size: int, *state_shapes: tuple[int, ...]) -> Initial:
    """Zero h and a zero state of each shape (one shape: a tensor; several: a tuple)."""

    def initial(cell: int, b: int) -> tuple[Tensor, Any]:
        state = tuple(like.new_zeros(shape) for shape in state_shapes)
        return like.new_zeros(hidden_size), state[0] if len(state) == 1 else state

    return initial


# ------------------------------------------------------------------ the LSTM's equations


def lstm_step(x: Tensor, h: Tensor, c: Tensor, weights: CellWeights) -> tuple[Tensor, Tensor]:
    """One step on 1-D vectors: x (F,), h and c (H,); blocks forget, input, output, candidate.

    h may be narrower than c (a projected LSTM's (P,) hidden); the h returned is always
    o * tanh(c), of c's size: a projection is the caller's.
    """
    w_ih, w_hh, b_ih, b_hh = weights
    size = c.shape[0]
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


def lstm_steps(weights: dict[tuple[int, int], CellWeights]) -> Step:
    """The LSTM step of every cell, from its weights by (layer, direction)."""

    def step(layer: int, direction: int, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return lstm_step(x, h, c, weights[(layer, direction)])

    return step


def given_initial(h0: Tensor, c0: Tensor) -> Initial:
    """Initial states taken from stacked (L*D, B, H) tensors, as the driver takes them."""
    return lambda cell, b: (h0[cell, b], c0[cell, b])


def lstm_reference(
    x: Tensor,
    weights: dict[tuple[int, int], CellWeights],
    num_layers: int = 1,
    bidirectional: bool = False,
    lengths: list[int] | None = None,
    h0: Tensor | None = None,
    c0: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The LSTM through :func:`run_reference`: outputs, h_n and c_n (L*D, B, H).

    ``weights`` maps (layer, direction) to the cell's weights; ``h0`` and ``c0`` are
    (L*D, B, H) initial states (default zeros).
    """
    hidden_size = weights[(0, 0)][1].shape[1]
    if h0 is None or c0 is None:
        initial = zeros_initial(x, hidden_size, (hidden_size,))
    else:
        initial = given_initial(h0, c0)
    out, h_n, states = run_reference(
        x,
        lstm_steps(weights),
        initial,
        num_layers=num_layers,
        bidirectional=bidirectional,
        lengths=lengths,
    )
    return out, h_n, stack_states(states)
