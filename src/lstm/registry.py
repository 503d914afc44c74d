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


ENTRY_POINTS = "lstm.cells"
"""The entry-point group in which an installed package registers its cells by name: in its
``pyproject.toml``, ``[project.entry-points."lstm.cells"] mgu = "mypackage.cells:MGU"``."""


def get_cell(name: str) -> type[Recurrent]:
    """Return the class registered under ``name``, or named by it.

    ``name`` is, in this order: a key of :data:`CELLS`; a name an installed package gives
    in the :data:`ENTRY_POINTS` group; or ``"package.module:ClassName"``, imported (the
    module must be importable: installed, or on ``PYTHONPATH``). The command line's
    ``--cell`` and ``--cells`` take all three, and a run records the name it was given, so
    that ``evaluate`` and ``generate`` build the same class.

    Raises
    ------
    ValueError
        If no cell has that name (the message lists the names there are), or a
        ``module:Class`` cannot be imported or is not a :class:`~lstm.driver.Recurrent`.
    """
    if name in CELLS:
        return CELLS[name]
    installed = _installed_cells()
    if name in installed:
        return _load(name, installed[name])
    if ":" in name:
        return _import_cell(name)
    names = sorted(CELLS) + sorted(installed)
    raise ValueError(
        f"unknown cell {name!r}; expected one of {names}, or a class as 'package.module:Class'"
    )


def _installed_cells() -> dict[str, str]:
    """The cells installed packages register: name -> ``module:Class``."""
    from importlib.metadata import entry_points

    return {point.name: point.value for point in entry_points(group=ENTRY_POINTS)}


def _load(name: str, value: str) -> type[Recurrent]:
    """The class of an installed package's entry point ``name = value``."""
    try:
        return _import_cell(value)
    except ValueError as error:
        raise ValueError(f"cell {name!r} (entry point {ENTRY_POINTS}: {value}): {error}") from None


def _import_cell(spec: str) -> type[Recurrent]:
    """Import ``"package.module:ClassName"`` and check that it is a cell class."""
    import importlib

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected a cell as 'package.module:ClassName', got {spec!r}")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"cannot import cell {spec!r}: {error} (the module must be importable: "
            "installed, or on PYTHONPATH)"
        ) from None
    if not (isinstance(found, type) and issubclass(found, Recurrent)):
        raise ValueError(f"cell {spec!r}: expected a subclass of lstm.Recurrent, got {found!r}")
    return found


def is_own(cls: type) -> bool:
    """Whether ``cls`` is one of this package's classes (not a user's)."""
    return cls.__module__ == "lstm" or cls.__module__.startswith("lstm.")


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
