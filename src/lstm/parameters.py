"""The parameters of one cell: how they are named per layer and direction, and registered.

A cell's :meth:`~lstm.driver.Recurrent.build_cell` returns a dict of plain names (``i2h``,
``h2h``, ...). The driver registers them once per layer and direction under those names
plus a suffix, as ``torch.nn.LSTM`` names its weights: ``""`` for layer 0 forward (so a
single-layer LSTM has exactly the keys ``i2h.weight``, ``i2h.bias``, ``h2h.weight``,
``h2h.bias``), ``"_reverse"``, ``"_l1"``, ``"_l1_reverse"``, and so on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import torch
from torch import nn

if TYPE_CHECKING:
    from lstm.driver import Recurrent

ModuleT = TypeVar("ModuleT", bound=nn.Module)

CellPart: TypeAlias = nn.Module | nn.Parameter
"""One named part of a cell: a module (``nn.Linear``, ``nn.LayerNorm``, ...) or a parameter."""

Device: TypeAlias = torch.device | str | None
"""The ``device`` factory argument of :meth:`~lstm.driver.Recurrent.build_cell`."""

DType: TypeAlias = torch.dtype | None
"""The ``dtype`` factory argument of :meth:`~lstm.driver.Recurrent.build_cell`."""


def cell_suffix(layer: int, direction: int) -> str:
    """Suffix of the parameter names of one cell, in ``torch.nn.LSTM``'s convention.

    Parameters
    ----------
    layer : int
        Layer index, from 0.
    direction : int
        0 for forward, 1 for reverse.

    Returns
    -------
    str
        ``""`` for (0, 0), ``"_reverse"`` for (0, 1), ``"_l{layer}"`` and
        ``"_l{layer}_reverse"`` for deeper layers.

    Examples
    --------
    >>> cell_suffix(0, 0), cell_suffix(0, 1), cell_suffix(2, 1)
    ('', '_reverse', '_l2_reverse')
    """
    layer_part = f"_l{layer}" if layer > 0 else ""
    return layer_part + ("_reverse" if direction == 1 else "")


def linear_maps(
    input_size: int,
    hidden_size: int,
    width: int,
    *,
    bias: bool,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, CellPart]:
    """The two maps of the reference page's cell, for :meth:`Recurrent.build_cell`.

    Parameters
    ----------
    input_size, hidden_size : int
        In-features of ``i2h`` and ``h2h``.
    width : int
        Out-features of both: ``4 * hidden_size`` for the LSTM's four gate blocks.
    bias : bool
    device, dtype : optional

    Returns
    -------
    dict
        ``{"i2h": nn.Linear(input_size, width), "h2h": nn.Linear(hidden_size, width)}``.
    """
    return {
        "i2h": nn.Linear(input_size, width, bias=bias, device=device, dtype=dtype),
        "h2h": nn.Linear(hidden_size, width, bias=bias, device=device, dtype=dtype),
    }


def register_cell(
    module: nn.Module, owner: str, parts: Any, names: tuple[str, ...], suffix: str
) -> tuple[str, ...]:
    """Register one cell's parts on ``module`` under ``name + suffix``; return their names.

    Parameters
    ----------
    module : nn.Module
        The module that owns every cell's parameters.
    owner : str
        Class name for error messages.
    parts : dict of str to nn.Module or nn.Parameter
        What ``build_cell`` returned.
    names : tuple of str
        The names the cells registered so far have (empty for the first): every cell must
        have the same.
    suffix : str
        :func:`cell_suffix` of the cell.

    Raises
    ------
    TypeError
        If ``parts`` is not a non-empty dict of modules and parameters.
    ValueError
        If its names differ from the other cells'.
    """
    if not isinstance(parts, dict) or not parts:
        raise TypeError(
            f"{owner}.build_cell: expected a non-empty dict of name -> nn.Module or "
            f"nn.Parameter, got {type(parts).__name__}"
        )
    if names and tuple(parts) != names:
        raise ValueError(
            f"{owner}.build_cell: expected the same names for every cell, "
            f"got {tuple(parts)} after {names}"
        )
    for name, part in parts.items():
        if isinstance(part, nn.Parameter):
            module.register_parameter(name + suffix, part)
        elif isinstance(part, nn.Module):
            module.add_module(name + suffix, part)
        else:
            raise TypeError(
                f"{owner}.build_cell: expected {name!r} to be an nn.Module or nn.Parameter, "
                f"got {type(part).__name__}"
            )
    return tuple(parts)


def register_cells(module: Recurrent, device: Device, dtype: DType) -> tuple[str, ...]:
    """Build every cell of ``module`` and register its parts; return the parts' plain names.

    Calls ``module.build_cell(width, hidden_size, device=device, dtype=dtype)`` once per
    ``(layer, direction)`` of ``module.cell_indices()``, ``width`` being
    ``module.layer_input_size(layer)``, and registers what it returns with
    :func:`register_cell` under the suffix :func:`cell_suffix` gives.

    Raises
    ------
    TypeError, ValueError
        As :func:`register_cell`, naming the class.
    """
    owner = type(module).__name__
    names: tuple[str, ...] = ()
    for layer, direction in module.cell_indices():
        width = module.layer_input_size(layer)
        parts = module.build_cell(width, module.hidden_size, device=device, dtype=dtype)
        names = register_cell(module, owner, parts, names, cell_suffix(layer, direction))
    return names


def view_with(module: ModuleT, parts: dict[str, CellPart], cell_index: tuple[int, int]) -> ModuleT:
    """A shallow copy of ``module`` in which ``module.<name>`` is ``parts[name]``.

    The copy is of the same class and shares every attribute and every other parameter; it
    owns nothing and is never registered anywhere. This is how one class serves every layer
    and direction: :meth:`lstm.driver.Recurrent.layer_cell` and the hoisted engine step such
    views.

    Parameters
    ----------
    module : nn.Module
    parts : dict of str to nn.Module or nn.Parameter
        What to put in place of the parts of the same name.
    cell_index : (layer, direction)
        The cell the view stands for, stored as its ``cell_index``.
    """
    view = object.__new__(type(module))
    view.__dict__.update(module.__dict__)
    parameters = dict(module._parameters)
    modules = dict(module._modules)
    for name, part in parts.items():
        if isinstance(part, nn.Parameter):
            parameters[name] = part
        else:
            modules[name] = part
    view.__dict__["_parameters"] = parameters
    view.__dict__["_modules"] = modules
    view.__dict__["cell_index"] = cell_index
    return view


def cell_parts(module: nn.Module, names: tuple[str, ...], suffix: str) -> dict[str, CellPart]:
    """The parts of one cell registered on ``module``, under their plain names.

    Parameters
    ----------
    module : nn.Module
    names : tuple of str
        The plain names every cell has.
    suffix : str
        :func:`cell_suffix` of the cell.
    """
    parts: dict[str, CellPart] = {}
    for name in names:
        parameter = module._parameters.get(name + suffix)
        parts[name] = parameter if parameter is not None else module._modules[name + suffix]  # type: ignore[assignment]
    return parts


def part_tensor(part: CellPart, name: str) -> Any:
    """``part.<name>``, read straight from the part's parameters where it is one.

    The same value as ``getattr(part, name)``: an instance attribute of that name takes
    precedence, as in Python's look-up; a registered parameter is then read without the
    ``nn.Module.__getattr__`` call that a missing attribute costs (a few hundred
    nanoseconds, on every kernel call for every weight).
    """
    parameters = part.__dict__.get("_parameters")
    if parameters is not None and name in parameters and name not in part.__dict__:
        return parameters[name]
    return getattr(part, name)


def reset_parts(cells: Iterable[dict[str, CellPart]]) -> None:
    """Call ``reset_parameters()`` on every part of ``cells`` that has that method.

    Parameters
    ----------
    cells : iterable of dict of str to nn.Module or nn.Parameter
        The parts of each cell, as :func:`cell_parts` returns them. A bare ``nn.Parameter``
        has no ``reset_parameters`` and is left as it is.
    """
    for parts in cells:
        for part in parts.values():
            reset = getattr(part, "reset_parameters", None)
            if callable(reset):
                reset()
