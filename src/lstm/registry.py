"""The one registry of cells: a plain dict from name to class.

The command line, the benchmark and the generic tests all read :data:`CELLS`; a new cell is
added here, by hand, next to its import. Every registered class is constructed as
``cls(input_size, hidden_size, **options)`` with the driver's keyword options
(see :class:`lstm.driver.Recurrent`).
"""

from __future__ import annotations

from lstm.cells.lstm import LSTM
from lstm.driver import Recurrent

CELLS: dict[str, type[Recurrent]] = {
    "lstm": LSTM,
}


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
