"""The state a cell carries, as the driver handles it without looking inside.

A state is a tensor, or a tuple of tensors, whose second-to-last dimension is the batch:
``(batch, hidden_size)`` for the LSTM, ``(k, batch, hidden_size)`` for an Array-LSTM with k
lanes, ``(c, n, m)`` for the sLSTM. This module maps functions over its parts, stacks the
states of all cells (layers x directions) the way ``torch.nn.LSTM`` returns them, and builds
the initial state of every cell: from :meth:`~lstm.driver.Recurrent.init_hidden`, or from the
stacked tensors a caller passes to ``forward``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast, overload

import torch
from torch import Tensor

from lstm.checks import ShapeError, check_tensor, describe, shape_str

if TYPE_CHECKING:
    from lstm.driver import Recurrent

State: TypeAlias = Tensor | tuple[Tensor, ...]
"""What a cell carries besides its hidden output: a tensor or tuple of tensors, batch at dim -2."""

CellState: TypeAlias = tuple[Tensor, State]
"""``(hidden, state)`` of one cell: hidden ``(batch, hidden_size)``, the state as above."""


def map_state(fn: Callable[[Tensor], Tensor], state: State) -> State:
    """Apply ``fn`` to the tensor, or to each tensor of the tuple, that makes up ``state``."""
    if isinstance(state, tuple):
        return tuple(fn(part) for part in state)
    return fn(state)


def state_parts(state: State) -> tuple[Tensor, ...]:
    """The tensors of ``state``: itself alone, or the tuple's members."""
    return state if isinstance(state, tuple) else (state,)


def from_parts(parts: Sequence[Tensor], like: State) -> State:
    """The inverse of :func:`state_parts`: a tuple if ``like`` is one, else the single tensor."""
    return tuple(parts) if isinstance(like, tuple) else parts[0]


def combine_states(fn: Callable[[Tensor, Tensor], Tensor], old: State, new: State) -> State:
    """``fn(old_part, new_part)`` for each tensor of two states of the same structure."""
    parts = zip(state_parts(old), state_parts(new), strict=True)
    return from_parts([fn(old_part, new_part) for old_part, new_part in parts], new)


def stack_states(states: Sequence[State], batch: int) -> State:
    """Concatenate per-cell states ``(*lead, B, X)`` into ``(cells * prod(lead), B, X)``.

    Every size is spelled out (no -1), so that an empty batch (B = 0) stacks too.
    """
    columns = zip(*(state_parts(state) for state in states), strict=True)
    stacked = [torch.cat([_flat_lead(part, batch) for part in column]) for column in columns]
    return from_parts(stacked, states[0])


def _flat_lead(part: Tensor, batch: int) -> Tensor:
    """``(*lead, B, X)`` as ``(prod(lead), B, X)``."""
    return part.reshape(math.prod(part.shape[:-2]), batch, part.shape[-1])


def per_step_states(per_direction: Sequence[Sequence[State]]) -> State:
    """Per-step states ``(*lead, B, X)`` of each direction into ``(*lead, B, T, D*X)``."""
    first = per_direction[0][0]
    columns = []
    for index in range(len(state_parts(first))):
        directions = [
            torch.stack([state_parts(state)[index] for state in steps], dim=-2)
            for steps in per_direction
        ]  # each (*lead, B, T, X)
        columns.append(directions[0] if len(directions) == 1 else torch.cat(directions, -1))
    return from_parts(columns, first)


class StackedCells(Sequence[CellState]):
    """Per-cell ``(hidden, state)`` pairs, as views of stacked ``(cells, batch, ·)`` tensors.

    An immutable sequence, for engines that work cell by cell (the pairs are unbound from the
    stacks on first use), which also keeps the two stacked tensors it was made from: an
    engine that runs every cell at once (the LSTM's kernel) takes them as they are, and gives
    its final states back in one, which ``forward`` returns as they are
    (:func:`stacked_cells`), without unbinding or stacking the cells at all.
    """

    def __init__(self, hidden: Tensor, state: Tensor) -> None:
        if hidden.shape[:1] != state.shape[:1]:
            raise ShapeError(
                f"StackedCells: expected hidden and state with as many cells, got "
                f"{shape_str(hidden.shape)} and {shape_str(state.shape)}"
            )
        self.hidden, self.state = hidden, state
        self._cells: tuple[CellState, ...] | None = None

    def _unbound(self) -> tuple[CellState, ...]:
        if self._cells is None:
            self._cells = tuple(zip(self.hidden.unbind(0), self.state.unbind(0), strict=True))
        return self._cells

    def __len__(self) -> int:
        return self.hidden.shape[0]

    @overload
    def __getitem__(self, index: int) -> CellState: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[CellState]: ...

    def __getitem__(self, index: int | slice) -> CellState | Sequence[CellState]:
        return self._unbound()[index]


def stacked_cells(cells: Sequence[CellState]) -> tuple[Tensor, Tensor] | None:
    """``(hidden, state)``, each ``(cells, batch, ·)``, if ``cells`` are :class:`StackedCells`.

    The stacked tensors equal ``torch.stack`` of the cells' hidden and state tensors (the
    cells are views of them); any other sequence (a list made from one, say) gives None.
    """
    if not isinstance(cells, StackedCells):
        return None
    if cells.hidden.dim() != 3 or cells.state.dim() != 3:
        return None
    return cells.hidden, cells.state


# ------------------------------------------------------------------ the original's layout
# The original implementation kept every tensor 3-D: hidden (1, batch, hidden_size) and the
# state (1, batch, hidden_size) for its LSTM, (k, batch, hidden_size) for its Array-LSTMs; its
# initHidden returned them so, and its forward_cell and update_hidden took and gave them so.
# They are accepted here by this one explicit rule, and by no other reshape: a 3-D hidden of
# leading size 1 marks the call; hidden loses that 1, and each state tensor either loses a
# leading 1 (one dimension more than the cell's own state tensors, :attr:`state_rank`) or, for
# a cell whose state tensors are 3-D already (k lanes), is taken as it is.

StepMethod = TypeVar("StepMethod", bound=Callable[..., tuple[Tensor, Any]])


def in_original_layout(hidden: Any) -> bool:
    """Whether ``hidden`` is 3-D, as in the original implementation's ``(1, batch, H)``."""
    return isinstance(hidden, Tensor) and hidden.dim() == 3


def from_original_layout(
    owner: str, hidden: Tensor, state: Any, hidden_size: int, state_rank: int = 2
) -> tuple[Tensor, State]:
    """Bring a (hidden, state) in the original implementation's layout to the cell's own.

    Parameters
    ----------
    owner : str
        Name used in error messages, e.g. ``"LSTM.forward_cell"``.
    hidden : Tensor of shape (1, batch, hidden_size)
    state : Tensor, or a tuple or list of tensors
        Each either the cell's own shape with a leading 1 (``(1, batch, H)`` for the LSTM,
        ``(1, k, batch, H)`` for an Array-LSTM), or, where the cell's own state tensors are
        3-D (``state_rank=3``), that shape itself: ``(k, batch, H)``, the original's.
    hidden_size : int
        For the messages.
    state_rank : int, default 2
        The rank of each of the cell's own state tensors (:attr:`lstm.Recurrent.state_rank`).

    Returns
    -------
    hidden : Tensor of shape (batch, hidden_size)
    state : Tensor or tuple of Tensors of the cell's own shapes
        Views of the given tensors.

    Raises
    ------
    lstm.ShapeError
        If ``hidden``'s leading dimension is not exactly 1, or a state tensor is of neither
        accepted rank, or of the higher rank without a leading 1.
    TypeError
        If a state part is not a floating-point tensor.
    """
    if hidden.shape[0] != 1:
        wanted = f"{shape_str(['batch', hidden_size])} or {shape_str([1, 'batch', hidden_size])}"
        raise ShapeError(
            f"{owner}: expected hidden of shape {wanted} (the original implementation's "
            f"layout), got {shape_str(hidden.shape)}"
        )
    if isinstance(state, list):
        state = tuple(state)
    parts = state if isinstance(state, tuple) else (state,)
    for index, part in enumerate(parts):
        name = f"state[{index}]" if isinstance(state, tuple) else "state"
        part = check_tensor(owner, name, part)
        if part.dim() == state_rank == 3:
            continue  # (k, batch, H): the original's layout is the cell's own
        if part.dim() != state_rank + 1 or part.shape[0] != 1:
            if state_rank == 3:
                lanes: list[int | str] = ["k", "batch", hidden_size]
                wanted = f"{shape_str(lanes)} or {shape_str([1, *lanes])}"
                raise ShapeError(
                    f"{owner}: expected {name} of shape {wanted} with hidden's "
                    f"{shape_str(hidden.shape)} (the original implementation's layout), "
                    f"got {shape_str(part.shape)}"
                )
            raise ShapeError(
                f"{owner}: expected {name} with a leading dimension of 1, as hidden's "
                f"{shape_str(hidden.shape)} (the original implementation's layout), "
                f"got {shape_str(part.shape)}"
            )
    squeezed = map_state(lambda part: part.squeeze(0) if part.dim() > state_rank else part, state)
    return hidden.squeeze(0), squeezed


def to_original_layout(hidden: Tensor, state: State, given: State) -> tuple[Tensor, State]:
    """The inverse of :func:`from_original_layout`: hidden ``(1, batch, H)``, and a leading 1
    on each state tensor whose counterpart in ``given`` (the caller's) had one."""
    pairs = zip(state_parts(state), state_parts(given), strict=True)
    parts = [part.unsqueeze(0) if old.dim() > part.dim() else part for part, old in pairs]
    return hidden.unsqueeze(0), from_parts(parts, state)


def takes_original_layout(step: StepMethod) -> StepMethod:
    """Let a ``forward_cell(x, hidden, state)`` also take the original implementation's layout.

    Called with hidden ``(1, batch, hidden_size)`` and the state as
    :func:`from_original_layout` takes it (``x`` stays ``(batch, input_size)``), the wrapped
    step runs on the cell's own shapes and gives back its results in the layout the caller
    used. Any other call goes straight to ``step`` (the time loop's always does).
    """

    @functools.wraps(step)
    def forward_cell(cell: Any, x: Any, hidden: Any, state: Any) -> tuple[Tensor, Any]:
        if not in_original_layout(hidden):
            return step(cell, x, hidden, state)
        owner = f"{type(cell).__name__}.forward_cell"
        given = tuple(state) if isinstance(state, list) else state
        hidden, state = from_original_layout(
            owner, hidden, given, cell.hidden_size, cell.state_rank
        )
        return to_original_layout(*step(cell, x, hidden, state), given)

    return cast(StepMethod, forward_cell)


def default_state(module: Recurrent, cell: Recurrent, inputs: Tensor) -> CellState:
    """``cell.initHidden(inputs)``, checked: hidden ``(B, output_size)``, state parts batch at -2.

    ``initHidden``, not ``init_hidden``: a subclass may override either name, and the base
    ``initHidden`` defers to ``init_hidden``. A result in the original implementation's
    layout, hidden ``(1, B, H)`` and each state tensor with a leading 1, loses that 1
    (:func:`from_original_layout`).
    """
    owner = type(module).__name__
    result = cell.initHidden(inputs)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(
            f"{owner}.init_hidden: expected a (hidden, state) pair, got {type(result).__name__}"
        )
    hidden, state = result
    if isinstance(state, list):
        state = tuple(state)
    if in_original_layout(hidden):
        owner_hook = f"{owner}.init_hidden"
        rank = module.state_rank
        hidden, state = from_original_layout(owner_hook, hidden, state, module.hidden_size, rank)
    batch = inputs.shape[0]
    if not isinstance(hidden, Tensor) or hidden.shape != (batch, module.output_size):
        got = shape_str(hidden.shape) if isinstance(hidden, Tensor) else type(hidden).__name__
        raise ShapeError(
            f"{owner}.init_hidden: expected hidden of shape "
            f"{shape_str([batch, module.output_size])}, got {got}"
        )
    for part in state_parts(state):
        if not isinstance(part, Tensor) or part.dim() < 2 or part.shape[-2] != batch:
            got = shape_str(part.shape) if isinstance(part, Tensor) else type(part).__name__
            raise ShapeError(
                f"{owner}.init_hidden: expected state tensors of shape "
                f"(..., {batch}, features) (batch at dim -2), got {got}"
            )
    return hidden, state


def initial_states(
    module: Recurrent, inputs: Tensor, hidden: Any, unbatched: bool
) -> Sequence[CellState]:
    """Initial ``(hidden, state)`` of every cell, in the order layer 0 fwd, layer 0 rev, ...

    Parameters
    ----------
    module : Recurrent
    inputs : Tensor of shape (batch, seq_len, input_size)
    hidden : None or (hidden, state)
        None for every cell's :meth:`~lstm.driver.Recurrent.init_hidden`; else the stacked
        tensors ``forward`` was given (see :func:`split_stacked`), checked against the
        shapes that ``init_hidden`` gives one cell.
    unbatched : bool
        Whether ``forward``'s input had no batch dimension (nor then do the given states).
    """
    cells = list(module.cell_indices())
    if hidden is None and _starts_from_zeros(module):
        batch, count = inputs.shape[0], len(cells)
        zeros = inputs.new_zeros(count, batch, module.output_size)
        return StackedCells(zeros, inputs.new_zeros(count, batch, module.hidden_size))
    template = default_state(module, module, inputs)
    if hidden is None:
        rest = [default_state(module, module.layer_cell(*index), inputs) for index in cells[1:]]
        return [template, *rest]
    owner = type(module).__name__
    if not isinstance(hidden, (tuple, list)) or len(hidden) != 2:
        raise TypeError(
            f"{owner}: expected hidden to be a (hidden, state) tuple, got {describe(hidden)}"
        )
    count = len(cells)
    # The hidden output is narrower than the state only in a projected LSTM (nn.LSTM's name).
    width = "hidden_size" if module.output_size == module.hidden_size else "proj_size"
    per_cell = not module.stacked_states_only
    hiddens = check_stacked(
        owner, "hidden", hidden[0], template[0], count, inputs, unbatched, width, per_cell
    )
    like, given = template[1], hidden[1]
    if not isinstance(like, tuple):
        states = check_stacked(
            owner, "state", given, like, count, inputs, unbatched, per_cell=per_cell
        )
        if like.dim() == 2:  # (B, X) per cell, as the hidden: the caller's tensors are stacks
            return StackedCells(_as_stack(hiddens), _as_stack(states))
        pairs = zip(_split(hiddens, template[0]), _split(states, like), strict=True)
        return list(pairs)
    hidden_parts = _split(hiddens, template[0])
    if not isinstance(given, (tuple, list)) or len(given) != len(like):
        raise TypeError(
            f"{owner}: expected state to be a tuple of {len(like)} tensors, got {describe(given)}"
        )
    columns = [
        split_stacked(
            owner, f"state[{i}]", part, like_part, count, inputs, unbatched, per_cell=per_cell
        )
        for i, (part, like_part) in enumerate(zip(given, like, strict=True))
    ]
    rows: list[State] = [tuple(row) for row in zip(*columns, strict=True)]
    return list(zip(hidden_parts, rows, strict=True))


def _starts_from_zeros(module: Recurrent) -> bool:
    """Whether every cell starts from the driver's ``init_hidden``: zeros.

    True where the driver's ``init_hidden`` and ``initHidden`` are the only definitions of
    those names in the module's class hierarchy (looked up on each call, so a method patched
    in later counts) and neither is set on the module itself: then every cell's initial
    state is ``zeros(batch, output_size), zeros(batch, hidden_size)`` of the input's dtype
    and device, made here for all cells at once.
    """
    if "init_hidden" in module.__dict__ or "initHidden" in module.__dict__:
        return False
    definitions = 0  # the driver's two, and any other
    for klass in type(module).__mro__:
        names = klass.__dict__
        definitions += ("init_hidden" in names) + ("initHidden" in names)
    return definitions == 2


def split_stacked(
    owner: str,
    name: str,
    given: Any,
    like: Tensor,
    count: int,
    inputs: Tensor,
    unbatched: bool,
    width: str = "hidden_size",
    per_cell: bool = True,
) -> list[Tensor]:
    """Check a caller's stacked state tensor against one cell's and split it per cell.

    ``like`` is one cell's tensor, shape ``(*lead, B, X)``; the stacked form is
    ``(count * prod(lead), B, X)``, without ``B`` for unbatched input. The per-cell form
    ``like`` itself is accepted when there is a single cell, unless ``per_cell`` is False
    (:attr:`~lstm.driver.Recurrent.stacked_states_only`). ``width`` names ``X`` in the
    error message (``"proj_size"`` for a projected LSTM's hidden).

    Raises
    ------
    TypeError
        If ``given`` is not a floating-point tensor of the input's dtype.
    lstm.ShapeError
        If its shape is not the expected one.
    ValueError
        If its device is not the input's.
    """
    checked = check_stacked(owner, name, given, like, count, inputs, unbatched, width, per_cell)
    return _split(checked, like)


def check_stacked(
    owner: str,
    name: str,
    given: Any,
    like: Tensor,
    count: int,
    inputs: Tensor,
    unbatched: bool,
    width: str = "hidden_size",
    per_cell: bool = True,
) -> Tensor:
    """:func:`split_stacked`'s checks; ``given`` with a batch dimension, not yet split.

    Returns ``given`` itself, or ``given.unsqueeze(-2)`` for unbatched input: shape
    ``(count * prod(lead), B, X)``, or ``like``'s own shape for a single cell given so.
    """
    checked = check_tensor(owner, name, given)
    lead = math.prod(like.shape[:-2])
    batch, features = like.shape[-2], like.shape[-1]
    accepted: list[tuple[int, ...]]
    if unbatched:
        accepted = [(count * lead, features)]
        meaning = f"(num_layers*num_directions, {width}) for unbatched input"
    else:
        accepted = [(count * lead, batch, features)]
        meaning = f"(num_layers*num_directions, batch, {width})"
        if per_cell and count == 1 and tuple(like.shape) not in accepted:
            accepted.append(tuple(like.shape))
    if tuple(checked.shape) not in accepted:
        options = " or ".join(shape_str(shape) for shape in accepted)
        raise ShapeError(
            f"{owner}: expected {name} of shape {options} {meaning}, got {shape_str(checked.shape)}"
        )
    if checked.dtype != inputs.dtype:
        raise TypeError(
            f"{owner}: expected {name} of dtype {inputs.dtype} (the input's), got {checked.dtype}"
        )
    if checked.device != inputs.device:
        raise ValueError(
            f"{owner}: expected {name} on {inputs.device} (the input's), got {checked.device}"
        )
    return checked.unsqueeze(-2) if unbatched else checked  # (count*lead, 1, X) if unbatched


def _split(checked: Tensor, like: Tensor) -> list[Tensor]:
    """A :func:`check_stacked` tensor as one tensor of ``like``'s shape per cell."""
    if tuple(checked.shape) == tuple(like.shape):
        return [checked]
    lead = math.prod(like.shape[:-2])
    return [chunk.reshape(like.shape) for chunk in torch.split(checked, lead)]


def _as_stack(checked: Tensor) -> Tensor:
    """A :func:`check_stacked` tensor of ``(B, X)`` cells as ``(cells, B, X)``."""
    return checked if checked.dim() == 3 else checked.unsqueeze(0)
