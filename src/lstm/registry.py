"""The one registry of cells: a plain dict from name to class.

The command line, the benchmark and the generic tests all read :data:`CELLS`; a new cell is
added here, by hand, next to its import. :func:`create` builds any of them from sizes and
the driver's keyword options (see :class:`lstm.driver.Recurrent`), passing ``k`` to the cells
that have lanes.
"""

from __future__ import annotations

import inspect
from typing import Any

from lstm.cells.array import (
    ArrayLSTM,
    AttentionArrayLSTM,
    StochasticArrayLSTM,
    StochasticMemoryArrayLSTM,
)
from lstm.cells.layernorm import LayerNormLSTM
from lstm.cells.lstm import LSTM
from lstm.cells.mlstm import MLSTM
from lstm.cells.slstm import SLSTM
from lstm.cells.variants import CIFGLSTM, PeepholeLSTM
from lstm.driver import Recurrent

CELLS: dict[str, type[Recurrent]] = {
    "lstm": LSTM,
    "array": ArrayLSTM,
    "stochastic-array": StochasticArrayLSTM,
    "attention-array": AttentionArrayLSTM,
    "stochastic-memory-array": StochasticMemoryArrayLSTM,
    "peephole": PeepholeLSTM,
    "cifg": CIFGLSTM,
    "layernorm": LayerNormLSTM,
    "slstm": SLSTM,
    "mlstm": MLSTM,
}
"""Every registered cell: name (as the command line's ``--cell`` takes it) -> class.

A plain dict: ``lstm.CELLS["mine"] = MyCell`` registers a cell for :func:`create`, the
benchmark and the command line.
"""

DEFAULT_LANES = 4
"""``k`` given by :func:`create` to a cell with lanes when the caller gives none."""


def get_cell(name: str) -> type[Recurrent]:
    """Return the class registered under ``name``.

    Raises
    ------
    ValueError
        If no cell has that name; the message lists the names there are.
    """
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; expected one of {sorted(CELLS)}") from None


def takes_lanes(cls: type[Recurrent]) -> bool:
    """Whether the class's constructor takes ``k`` (memory cells per unit)."""
    return "k" in inspect.signature(cls).parameters


def hidden_multiple(cls: type[Recurrent]) -> int:
    """What every ``hidden_size`` the class takes with its defaults is a multiple of.

    The default ``num_heads`` of a class with heads (the mLSTM splits ``hidden_size`` among
    them), else 1. :mod:`lstm.lm.compare` searches widths in these steps.
    """
    heads = inspect.signature(cls).parameters.get("num_heads")
    default = heads.default if heads is not None else 1
    return default if isinstance(default, int) and default > 0 else 1


def create(
    name: str, input_size: int, hidden_size: int, *, k: int | None = None, **options: Any
) -> Recurrent:
    """Build the cell registered as ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`CELLS`.
    input_size, hidden_size : int
    k : int, optional
        Lanes, for cells that have them (default :data:`DEFAULT_LANES`).
    **options
        The driver's keyword options (``num_layers``, ``bidirectional``, ``dtype``, ...).

    Raises
    ------
    ValueError
        For an unknown name, or a ``k`` given to a cell without lanes.
    """
    cls = get_cell(name)
    if takes_lanes(cls):
        return cls(input_size, hidden_size, k=DEFAULT_LANES if k is None else k, **options)  # type: ignore[call-arg]
    if k is not None:
        raise ValueError(f"cell {name!r} has no lanes; expected k=None, got k={k}")
    return cls(input_size, hidden_size, **options)
