"""The parameters of one cell: how they are named per layer and direction, and registered.

A cell's :meth:`~lstm.driver.Recurrent.build_cell` returns a dict of plain names (``i2h``,
``h2h``, ...). The driver registers them once per layer and direction under those names
plus a suffix (:meth:`~lstm.driver.Recurrent.cell_suffix`). The reference page's cells use
:func:`cell_suffix`: ``""`` for layer 0 forward (so a single-layer LSTM has exactly the keys
``i2h.weight``, ``i2h.bias``, ``h2h.weight``, ``h2h.bias``), ``"_reverse"``, ``"_l1"``,
``"_l1_reverse"``, and so on; ``lstm.nn.LSTM`` uses ``torch.nn.LSTM``'s own,
:func:`torch_suffix` (``weight_ih_l0``, ``weight_ih_l0_reverse``, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import torch
from torch import nn

if TYPE_CHECKING:
    from lstm.driver import Recurrent

ModuleT = TypeVar("ModuleT", bound=nn.Module)

CellPart: TypeAlias = nn.Module | nn.Parameter | None
"""One named part of a cell: a module (``nn.Linear``, ``nn.LayerNorm``, ...) or a parameter;
None for a part this module does not have (see :func:`register_cell`)."""

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


def torch_suffix(layer: int, direction: int) -> str:
    """Suffix of the parameter names of one cell in ``torch.nn.LSTM``: ``"_l{layer}"``, then
    ``"_reverse"`` for direction 1.

    Examples
    --------
    >>> torch_suffix(0, 0), torch_suffix(0, 1), torch_suffix(2, 1)
    ('_l0', '_l0_reverse', '_l2_reverse')
    """
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


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
    parts : dict of str to nn.Module, nn.Parameter or None
        What ``build_cell`` returned. None marks a part this module does not have (a bias
        with ``bias=False``, as ``torch.nn.LSTMCell``'s ``bias_ih``): nothing is registered
        for it, and :func:`cell_parts` gives None under its plain name.
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
            f"{owner}.build_cell: expected a non-empty dict of name -> nn.Module, "
            f"nn.Parameter or None, got {type(parts).__name__}"
        )
    if names and tuple(parts) != names:
        raise ValueError(
            f"{owner}.build_cell: expected the same names for every cell, "
            f"got {tuple(parts)} after {names}"
        )
    for name, part in parts.items():
        if part is None:
            continue
        if isinstance(part, nn.Parameter):
            module.register_parameter(name + suffix, part)
        elif isinstance(part, nn.Module):
            module.add_module(name + suffix, part)
        else:
            raise TypeError(
                f"{owner}.build_cell: expected {name!r} to be an nn.Module, nn.Parameter or "
                f"None, got {type(part).__name__}"
            )
    return tuple(parts)


def register_cells(module: Recurrent, device: Device, dtype: DType) -> tuple[str, ...]:
    """Build every cell of ``module`` and register its parts; return the parts' plain names.

    Calls ``module.build_cell(width, hidden_size, device=device, dtype=dtype)`` once per
    ``(layer, direction)`` of ``module.cell_indices()``, ``width`` being
    ``module.layer_input_size(layer)``, and registers what it returns with
    :func:`register_cell` under the suffix ``module.cell_suffix(layer, direction)`` gives.

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
        suffix = module.cell_suffix(layer, direction)
        names = register_cell(module, owner, parts, names, suffix)
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
    parts : dict of str to nn.Module, tensor or None
        What to put in place of the parts of the same name: a module among the view's
        modules; a tensor (a parameter, or a parametrized weight as computed now) or None
        (a part the module does not have) among its parameters, where ``view.<name>``
        finds it.
    cell_index : (layer, direction)
        The cell the view stands for, stored as its ``cell_index``.
    """
    view = object.__new__(type(module))
    view.__dict__.update(module.__dict__)
    parameters = dict(module._parameters)
    modules = dict(module._modules)
    for name, part in parts.items():
        if isinstance(part, nn.Module):
            modules[name] = part
        else:
            parameters[name] = part
    view.__dict__["_parameters"] = parameters
    view.__dict__["_modules"] = modules
    view.__dict__["cell_index"] = cell_index
    return view


def cell_parts(module: nn.Module, names: tuple[str, ...], suffix: str) -> dict[str, Any]:
    """The parts of one cell registered on ``module``, under their plain names.

    A registered parameter or module is read straight from its dict. Any other value is what
    ``getattr(module, name + suffix)`` gives now: a parametrized weight (computed), a tensor
    assigned in place of a parameter (as ``torch.nn.utils.weight_norm`` does at every call),
    or None for a part the module does not have (see :func:`register_cell`) or no longer
    has (deleted).

    Parameters
    ----------
    module : nn.Module
    names : tuple of str
        The plain names every cell has.
    suffix : str
        The cell's suffix (:meth:`~lstm.driver.Recurrent.cell_suffix`).
    """
    parts: dict[str, Any] = {}
    for name in names:
        full_name = name + suffix
        part: Any = module._parameters.get(full_name)
        if part is None:
            part = module._modules.get(full_name)
        if part is None:
            part = getattr(module, full_name, None)
        parts[name] = part
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


# ---------------------------------------------------------------------- read-only copies
_INPLACE_DUNDERS = frozenset(
    [
        "__iadd__",
        "__isub__",
        "__imul__",
        "__imatmul__",
        "__itruediv__",
        "__ifloordiv__",
        "__imod__",
        "__ipow__",
        "__iand__",
        "__ior__",
        "__ixor__",
        "__ilshift__",
        "__irshift__",
    ]
)
"""The augmented assignments (``w += 1``), which write in place."""


class ReadOnlyCopy(torch.Tensor):
    """A tensor computed from a module's parameters that refuses every write.

    A copy shown under another name or layout (``lstm.LSTM``'s ``weight_ih_l0``, computed
    from ``i2h.weight``) cannot reach the parameter it was computed from, so a write to it
    would silently do nothing. Any in-place operation on it or on a view of it (``fill_``,
    ``copy_``, ``nn.init.*_``, ``w[0] = 1``, ``w += 1``, ``out=w``, ``requires_grad_``),
    setting ``.data`` or ``.requires_grad``, and reading ``.grad`` (a copy has none) raise
    ``RuntimeError`` with the message given at construction. Reading works: results that
    share its memory (``.data``, ``.detach()``, slices, ``.T``) are read-only copies too;
    every other result is a plain tensor; ``.numpy()`` gives a read-only array; pickling
    gives a plain tensor.

    Made with :meth:`wrap`, never directly.
    """

    refusal: str = "a read-only copy: a write to it would change nothing"
    """The message of every refused write: what the tensor is and what to do instead."""

    @classmethod
    def wrap(cls, tensor: torch.Tensor, refusal: str) -> ReadOnlyCopy:
        """``tensor`` (already a copy) as a read-only copy refusing writes with ``refusal``."""
        copy = tensor.as_subclass(cls)
        copy.refusal = refusal
        return copy

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        sources = [arg for arg in _flat(args, kwargs) if isinstance(arg, ReadOnlyCopy)]
        if _writes(func, args, kwargs):
            raise RuntimeError(sources[0].refusal if sources else cls.refusal)
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        if getattr(func, "__name__", "") == "numpy":
            result.flags.writeable = False
            return result
        return _mark_aliases(result, sources)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Pickled as the plain tensor it holds: torch.load(weights_only=True) takes it back.
        plain = self.as_subclass(torch.Tensor).clone()
        return plain.__reduce_ex__(protocol)  # type: ignore[no-untyped-call]


def _flat(args: Any, kwargs: Any) -> list[Any]:
    """The arguments of a call, with those inside lists and tuples (one level)."""
    flat: list[Any] = []
    for value in (*args, *kwargs.values()):
        flat.extend(value if isinstance(value, (list, tuple)) else (value,))
    return flat


def _writes(func: Any, args: Any, kwargs: Any) -> bool:
    """Whether calling ``func`` would write to a :class:`ReadOnlyCopy` among its arguments."""
    name = getattr(func, "__name__", "")
    if name == "__set__":  # setting .data, .requires_grad, .grad, ...
        return True
    if name == "__get__":  # reading a property: only .grad is refused (a copy has none)
        return getattr(getattr(func, "__self__", None), "__name__", "") == "grad"
    target = args[0] if args else None
    if isinstance(target, ReadOnlyCopy) and (
        name in _INPLACE_DUNDERS
        or name == "__setitem__"
        or (name.endswith("_") and not name.startswith("__"))
    ):
        return True
    if kwargs.get("inplace") is True and isinstance(target, ReadOnlyCopy):
        return True
    out = kwargs.get("out")
    outs = out if isinstance(out, (list, tuple)) else (out,)
    return any(isinstance(tensor, ReadOnlyCopy) for tensor in outs)


def _mark_aliases(result: Any, sources: list[ReadOnlyCopy]) -> Any:
    """``result`` with every tensor that shares memory with a source made read-only too."""
    if isinstance(result, (list, tuple)):
        return type(result)(_mark_aliases(item, sources) for item in result)
    if not isinstance(result, torch.Tensor) or not sources:
        return result
    pointer = result.untyped_storage().data_ptr()
    for source in sources:
        if pointer and source.untyped_storage().data_ptr() == pointer:
            return ReadOnlyCopy.wrap(result, source.refusal)
    return result
