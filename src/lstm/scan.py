"""The time loop: ``forward_cell`` at every step, one direction at a time, layer by layer.

This is the reference path of every cell (and, with the input projection hoisted, the
hoisted engine; see :mod:`lstm.engines`). :func:`run_stack` runs the layers and directions
and applies dropout between layers; :func:`run_direction` runs one cell over time, holding
finished sequences still and applying the recurrent regularisers (variational recurrent
dropout, zoneout).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lstm.checks import check_step_results, stepping
from lstm.state import CellState, State, combine_states, map_state

if TYPE_CHECKING:
    from lstm.driver import Recurrent

PrepareCell = Callable[["Recurrent", Tensor, tuple[Tensor, ...]], "Recurrent"]
"""``prepare(cell, layer_input (B, T, F), steps)``: the cell to step for one layer/direction."""

RunDirection = Callable[
    ["Recurrent", Tensor, CellState, "Tensor | None", bool], tuple[Tensor, CellState]
]
"""``run(cell, layer_input (B, T, F), initial, mask (T, B, 1) or None, reverse)``: a whole
direction at once, returning outputs ``(B, T, H)`` and the final state (the fused engine,
:func:`lstm.fused.run_fused_direction`)."""


def run_stack(
    module: Recurrent,
    inputs: Tensor,
    initial: Sequence[CellState],
    lengths: Tensor | None,
    *,
    prepare: PrepareCell | None = None,
    collect: list[list[State]] | None = None,
    run: RunDirection | None = None,
) -> tuple[Tensor, Sequence[CellState]]:
    """``forward_cell`` at every step of every layer and direction.

    Parameters
    ----------
    module : Recurrent
    inputs : Tensor of shape (batch, seq_len, input_size)
    initial : list of (hidden, state)
        One per cell, in the order layer 0 forward, layer 0 reverse, layer 1 forward, ...
    lengths : Tensor of shape (batch,) on the CPU, or None
        None when every sequence runs to seq_len.
    prepare : callable, optional
        Turns each cell (a :meth:`~lstm.driver.Recurrent.layer_cell` view) into the object
        stepped, given the layer's input (the hoisted engine's input projection).
    collect : list, optional
        If given, one list per direction of the last layer's per-step states (in time order,
        zero past each sequence's end) is appended to it.
    run : callable, optional
        Runs a whole direction instead of stepping ``forward_cell`` (:data:`RunDirection`);
        not with ``prepare`` or ``collect``.

    Returns
    -------
    outputs : Tensor of shape (batch, seq_len, num_directions * hidden_size)
        Zero past each sequence's end.
    finals : list of (hidden, state)
        One per cell, in the order of ``initial``.
    """
    mask = None  # mask[t]: which sequences are still running at step t
    if lengths is not None:
        positions = torch.arange(inputs.shape[1]).unsqueeze(1)  # (T, 1)
        mask = (positions < lengths.unsqueeze(0)).unsqueeze(-1).to(inputs.device)  # (T, B, 1)
    finals: list[CellState] = []
    layer_input = inputs  # (B, T, F)
    for layer in range(module.num_layers):
        outputs = []
        # T x (B, F): unbind, not x[:, t], keeps backward O(T); a whole-direction run slices
        # the layer's input itself.
        steps = layer_input.unbind(1) if run is None else ()
        for direction in range(module.num_directions):
            cell = module.layer_cell(layer, direction)
            index = layer * module.num_directions + direction
            if run is not None:
                out, final = run(cell, layer_input, initial[index], mask, direction == 1)
                outputs.append(out)
                finals.append(final)
                continue
            if prepare is not None:
                cell = prepare(cell, layer_input, steps)
            record: list[State] | None = None
            if collect is not None and layer == module.num_layers - 1:
                record = []
                collect.append(record)
            out, final = run_direction(module, cell, steps, initial[index], mask, direction, record)
            outputs.append(out)  # (B, T, H)
            finals.append(final)
        layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
        if module.training and module.dropout > 0 and layer < module.num_layers - 1:
            layer_input = layer_dropout(layer_input, module.dropout)
    return layer_input, finals


def layer_dropout(values: Tensor, probability: float) -> Tensor:
    """Dropout between layers, its mask drawn in ``(B, T, F)`` order whatever the memory
    layout of ``values``: an engine whose outputs are a transposed view draws the same mask
    as one whose outputs are contiguous (``F.dropout`` draws in the input's memory order).
    For contiguous values it is ``F.dropout``'s result, bit for bit."""
    if probability >= 1:
        return values * 0
    keep = 1 - probability
    noise = torch.empty(values.shape, dtype=values.dtype, device=values.device)
    return values * noise.bernoulli_(keep).div_(keep)


def run_direction(
    module: Recurrent,
    cell: Recurrent,
    steps: tuple[Tensor, ...],
    initial: CellState,
    mask: Tensor | None,
    direction: int,
    record: list[State] | None = None,
) -> tuple[Tensor, CellState]:
    """``cell.forward_cell`` at every step of one direction, in Python.

    ``steps`` holds T tensors (B, F); ``mask`` is (T, B, 1) or None; direction 1 runs from
    the last step to the first. Returns the outputs (B, T, H) in time order and the final
    (hidden, state); appends the state after every step to ``record`` (in time order, zero
    past each sequence's end) if given. The first step's results are checked; the cell's own
    argument checks are skipped (see :func:`lstm.checks.stepping`).
    """
    hidden, state = initial
    order = range(len(steps) - 1, -1, -1) if direction == 1 else range(len(steps))
    outputs: list[Tensor] = []  # in processing order; reversed at the end for reverse
    recurrent_mask = recurrent_dropout_mask(hidden, module.recurrent_dropout, module.training)
    owner = f"{type(module).__name__}.forward_cell"

    def zone(previous: Tensor, new: Tensor) -> Tensor:
        return zone_out(previous, new, module.zoneout, module.training)

    with stepping(cell):
        for count, t in enumerate(order):
            hidden_in = hidden if recurrent_mask is None else hidden * recurrent_mask
            new_hidden, new_state = cell.forward_cell(steps[t], hidden_in, state)
            if count == 0:
                check_step_results(owner, new_hidden, new_state, hidden, state)
            if module.zoneout > 0:
                new_hidden = zone(hidden, new_hidden)
                new_state = combine_states(zone, state, new_state)
            hidden, state = _advance(hidden, state, new_hidden, new_state, outputs, record, mask, t)
    if direction == 1:
        outputs.reverse()
        if record is not None:
            record.reverse()
    return torch.stack(outputs, dim=1), (hidden, state)


def _advance(
    hidden: Tensor,
    state: State,
    new_hidden: Tensor,
    new_state: State,
    outputs: list[Tensor],
    record: list[State] | None,
    mask: Tensor | None,
    t: int,
) -> CellState:
    """Take one step's results: sequences past their end keep their state and output zeros."""
    if mask is None:
        outputs.append(new_hidden)
        if record is not None:
            record.append(new_state)
        return new_hidden, new_state
    running = mask[t]  # (B, 1): sequences whose step t is real

    def zero_past_end(part: Tensor) -> Tensor:
        return torch.where(running, part, 0.0)

    def keep_past_end(old: Tensor, new: Tensor) -> Tensor:
        return torch.where(running, new, old)

    outputs.append(zero_past_end(new_hidden))
    if record is not None:
        record.append(map_state(zero_past_end, new_state))
    return keep_past_end(hidden, new_hidden), combine_states(keep_past_end, state, new_state)


def recurrent_dropout_mask(hidden: Tensor, probability: float, training: bool) -> Tensor | None:
    """One variational dropout mask ``(B, H)`` for a whole sequence, or None when inactive.

    Gal & Ghahramani (2016): the hidden state each step receives is multiplied by the same
    mask, scaled by ``1 / (1 - p)``.
    """
    if not training or probability == 0:
        return None
    keep = 1.0 - probability
    return torch.bernoulli(torch.full_like(hidden, keep)) / keep


def zone_out(previous: Tensor, new: Tensor, probability: float, training: bool) -> Tensor:
    """Zoneout (Krueger et al. 2017): keep each unit's previous value with ``probability``.

    In eval mode the expectation is used: ``new + probability * (previous - new)``.
    """
    if training:
        keep_previous = torch.bernoulli(torch.full_like(new, probability)).bool()
        return torch.where(keep_previous, previous, new)
    return torch.lerp(new, previous, probability)
