"""Checks, as pure functions: constructor arguments, tensors, lengths and one step's
arguments and results.

Every check raises before any tensor is reshaped, and every message names the
owner (the class), what was expected and what was given, e.g.
``ValueError("LSTM: expected input of shape (batch, seq_len, 16), got (4, 7, 15)")``.

The time loop checks ``forward``'s arguments once and then steps a cell inside
:func:`stepping`, so that the cell's :meth:`~lstm.driver.Recurrent.forward_cell` skips the
per-step checks that a direct call makes (they would cost more than a small cell's
arithmetic).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor


class ShapeError(ValueError, RuntimeError):
    """A tensor argument of the wrong shape (or rank), raised before any reshape.

    A ``ValueError``, as every other wrong value here, and a ``RuntimeError``, which is what
    ``torch.nn.LSTM`` raises for a wrong input width or hidden shape: code written for it
    (``except RuntimeError``) catches this too. Raised for the input's rank, width and
    sizes, the initial hidden and state shapes (given, or from ``init_hidden``), the lengths'
    shape, and the arguments and results of one step. The message names the owner, the
    expected and the given shape.

    Examples
    --------
    >>> import torch, lstm
    >>> try:
    ...     lstm.LSTM(3, 4)(torch.randn(2, 5, 7))
    ... except RuntimeError as error:
    ...     print(error)
    LSTM: expected input of shape (batch, seq_len, 3), got (2, 5, 7)
    """


class DTypeError(TypeError, ValueError):
    """A tensor argument whose dtype is not the parameters' (autocast aside).

    A ``TypeError``, as this package raised it before, and a ``ValueError``, which is what
    ``torch.nn.LSTM`` raises for input of another dtype than its weights: code written for
    it (``except ValueError``) catches this too. The message names the owner, the expected
    and the given dtype.

    Examples
    --------
    >>> import torch, lstm
    >>> try:
    ...     lstm.LSTM(3, 4)(torch.randn(2, 5, 3, dtype=torch.float64))
    ... except ValueError as error:
    ...     print(error)
    LSTM: expected input of dtype torch.float32 (the parameters' dtype), got torch.float64
    """


def shape_str(shape: Sequence[int | str]) -> str:
    """Format a shape like ``(4, 7, 15)``; symbolic entries (``"batch"``) are kept as names."""
    inner = ", ".join(str(size) for size in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def check_int(owner: str, name: str, value: Any, minimum: int) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) of at least ``minimum``.

    Raises
    ------
    TypeError
        If ``value`` is not an integer.
    ValueError
        If ``value < minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{owner}: expected {name} to be an int, got {type(value).__name__} {value!r}"
        )
    if value < minimum:
        raise ValueError(f"{owner}: expected {name} >= {minimum}, got {value}")
    return value


def check_bool(owner: str, name: str, value: Any) -> bool:
    """Return ``value`` if it is a ``bool``; raise ``TypeError`` otherwise."""
    if not isinstance(value, bool):
        raise TypeError(
            f"{owner}: expected {name} to be a bool, got {type(value).__name__} {value!r}"
        )
    return value


def check_probability(owner: str, name: str, value: Any, *, include_one: bool = False) -> float:
    """Return ``value`` as a float if it is a real number in ``[0, 1)`` (``[0, 1]``).

    Parameters
    ----------
    owner, name : str
        Used in error messages.
    value : Any
        The candidate probability.
    include_one : bool, default False
        Whether 1 is allowed: ``dropout=1.0`` zeros every input of the next layer, as in
        ``torch.nn.LSTM``, whereas recurrent dropout would divide by ``1 - p``.

    Raises
    ------
    TypeError
        If ``value`` is not an ``int`` or ``float`` (``bool`` is refused).
    ValueError
        If ``value`` lies outside the interval.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{owner}: expected {name} to be a float, got {type(value).__name__} {value!r}"
        )
    inside = 0.0 <= value <= 1.0 if include_one else 0.0 <= value < 1.0
    if not inside:
        interval = "[0, 1]" if include_one else "[0, 1)"
        raise ValueError(f"{owner}: expected {name} in {interval}, got {value}")
    return float(value)


def check_device(owner: str, device: Any) -> None:
    """Raise unless ``device`` is None or something ``torch.device`` accepts.

    Raises
    ------
    TypeError
        If ``device`` is not a ``torch.device``, ``str`` or ``int`` (``bool`` is refused).
    ValueError
        If ``torch.device`` refuses it (``"gpu"``, a negative or huge index); torch's reason
        is quoted.
    """
    if device is None or isinstance(device, torch.device):
        return
    if isinstance(device, bool) or not isinstance(device, (str, int)):
        raise TypeError(
            f"{owner}: expected device to be a torch.device, str or int, got "
            f"{type(device).__name__} {device!r}"
        )
    try:
        torch.device(device)
    except (RuntimeError, ValueError) as error:  # ValueError: an index beyond int64
        raise ValueError(
            f"{owner}: expected device to be a device torch knows, got {device!r} ({error})"
        ) from None


def check_factory(owner: str, device: Any, dtype: Any) -> None:
    """Check the ``device`` and ``dtype`` factory arguments (None, or what torch accepts).

    Raises
    ------
    TypeError
        If ``dtype`` is not a floating-point ``torch.dtype``, or for a wrong device type.
    ValueError
        If ``torch.device`` refuses ``device`` (see :func:`check_device`).
    """
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(
            f"{owner}: expected dtype to be a floating-point torch.dtype, got {dtype!r}"
        )
    check_device(owner, device)


def warn_unused_dropout(owner: str, dropout: float, num_layers: int) -> None:
    """Warn, as ``torch.nn.LSTM`` does, when ``dropout`` cannot act: it acts between layers.

    Called from a constructor; the warning points at the line that called the constructor.
    """
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            f"{owner}: dropout={dropout} acts between layers, so it has no effect "
            "with num_layers=1",
            UserWarning,
            stacklevel=3,
        )


def describe(value: Any) -> str:
    """``tuple of length 2``, ``list of length 3`` or ``Tensor``: what an argument was."""
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def check_tensor(owner: str, name: str, value: Any) -> Tensor:
    """Return ``value`` if it is a dense floating-point tensor; raise ``TypeError`` otherwise."""
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{owner}: expected {name} to be a torch.Tensor, got {type(value).__name__}"
        )
    if value.is_nested or value.layout != torch.strided:
        kind = "a nested tensor" if value.is_nested else f"layout {value.layout}"
        raise TypeError(f"{owner}: expected {name} to be a dense (strided) tensor, got {kind}")
    if not torch.is_floating_point(value):
        raise TypeError(
            f"{owner}: expected {name} to be a floating-point tensor, got dtype {value.dtype}"
        )
    return value


def check_lengths(owner: str, lengths: Any, batch: int, seq_len: int) -> Tensor:
    """Validate per-sequence lengths and return them as an int64 tensor on the CPU.

    Parameters
    ----------
    owner : str
        Name used in error messages.
    lengths : Any
        Candidate lengths: a 1-D integer tensor of shape ``(batch,)``, or a list or tuple
        of ``batch`` ints (as ``pack_padded_sequence`` takes them), whose entries lie in
        ``1..seq_len``.
    batch, seq_len : int
        Batch size and padded sequence length of the input.

    Returns
    -------
    Tensor of shape (batch,), dtype int64, on the CPU.

    Raises
    ------
    TypeError
        For anything else: a tensor of another dtype, a list with a float, bool or nested
        entry (naming its index and type), a NumPy array.
    lstm.ShapeError
        If there are not ``batch`` lengths in one dimension.
    ValueError
        If a length lies outside ``1..seq_len``, or the tensor has no values (meta).
    """
    if isinstance(lengths, (list, tuple)):
        lengths = _lengths_from_sequence(owner, lengths)
    if not isinstance(lengths, Tensor):
        raise TypeError(
            f"{owner}: expected lengths to be a 1-D integer torch.Tensor or a list or tuple "
            f"of ints, got {type(lengths).__name__}"
        )
    if torch.is_floating_point(lengths) or torch.is_complex(lengths) or lengths.dtype == torch.bool:
        raise TypeError(f"{owner}: expected lengths to have an integer dtype, got {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ShapeError(
            f"{owner}: expected lengths of shape {shape_str([batch])} (one entry per sequence), "
            f"got {shape_str(lengths.shape)}"
        )
    if lengths.is_meta:
        raise ValueError(f"{owner}: expected lengths with values, got a tensor on the meta device")
    checked: Tensor = lengths.to(device="cpu", dtype=torch.int64)
    if batch > 0:
        low, high = torch.stack(torch.aminmax(checked)).tolist()  # one host sync, not two
        if low < 1 or high > seq_len:
            raise ValueError(
                f"{owner}: expected every length in 1..{seq_len} (the padded seq_len), "
                f"got values in {low}..{high}"
            )
    return checked


def _lengths_from_sequence(owner: str, lengths: Sequence[Any]) -> Tensor:
    """A list or tuple of ints as an int64 tensor ``(len(lengths),)``; TypeError otherwise."""
    for index, entry in enumerate(lengths):
        if isinstance(entry, bool) or not isinstance(entry, numbers.Integral):
            raise TypeError(
                f"{owner}: expected lengths to be a list or tuple of ints, got "
                f"{type(entry).__name__} {entry!r} at index {index}"
            )
    return torch.tensor([int(entry) for entry in lengths], dtype=torch.int64)


def check_cell_index(
    owner: str, layer: Any, direction: Any, num_layers: int, num_directions: int
) -> None:
    """Raise ``ValueError`` unless layer and direction index an existing cell."""
    if not 0 <= layer < num_layers:
        raise ValueError(f"{owner}: expected layer in 0..{num_layers - 1}, got {layer}")
    if not 0 <= direction < num_directions:
        raise ValueError(f"{owner}: expected direction in 0..{num_directions - 1}, got {direction}")


def first_parameter(module: torch.nn.Module) -> Tensor | None:
    """``next(module.parameters(), None)``, found without the generators it stacks up.

    The first parameter of the first module, in ``named_modules`` order (the module itself,
    then each child's subtree in turn), that has one; what :func:`check_like_parameters`
    compares a call's tensors with, on every call.
    """
    for parameter in module._parameters.values():
        if parameter is not None:
            return parameter
    for child in module._modules.values():
        found = None if child is None else first_parameter(child)
        if found is not None:
            return found
    return None


def check_like_parameters(
    owner: str, tensors: Sequence[tuple[str, Tensor]], parameter: Tensor | None
) -> None:
    """Check that tensors sit on the parameters' device and, outside autocast, have their dtype.

    Parameters
    ----------
    owner : str
        Name used in error messages.
    tensors : sequence of (str, Tensor) pairs
        The arguments to check, named as the messages should name them.
    parameter : Tensor or None
        Any parameter of the module (None for a module without parameters: nothing to check).

    Raises
    ------
    ValueError
        If a tensor is on another device (every device is checked before any dtype).
    TypeError
        If a tensor has another dtype while autocast is off on its device.
    """
    if parameter is None:
        return
    for name, value in tensors:
        if value.device != parameter.device:
            raise ValueError(
                f"{owner}: expected {name} on {parameter.device} (where the parameters are), "
                f"got {value.device}"
            )
    for name, value in tensors:
        if value.dtype != parameter.dtype and not torch.is_autocast_enabled(value.device.type):
            raise DTypeError(
                f"{owner}: expected {name} of dtype {parameter.dtype} (the parameters' dtype), "
                f"got {value.dtype}"
            )


def check_step_arguments(
    owner: str,
    x: Any,
    hidden: Any,
    state: Any,
    *,
    input_size: int,
    hidden_size: int,
    lead: tuple[int, ...] = (),
    parts: int = 0,
    parameter: Tensor | None = None,
    output_size: int | None = None,
    widths: Sequence[int | None] | None = None,
    x_name: str = "x",
) -> None:
    """Check the arguments of one step before any arithmetic.

    Parameters
    ----------
    owner : str
        Name used in error messages, e.g. ``"LSTM.forward_cell"``.
    x : Tensor of shape (batch, input_size)
    hidden : Tensor of shape ``(batch, output_size)``
    state : Tensor of shape ``(*lead, batch, hidden_size)``, or a tuple of ``parts`` of them
    input_size, hidden_size : int
        Features of this cell's ``x`` and state.
    lead : tuple of int, default ()
        Leading dimensions of each state tensor (``(k,)`` for k lanes).
    parts : int, default 0
        0 for a single state tensor, else the length of the state tuple.
    parameter : Tensor, optional
        Any parameter of the cell: every argument must share its device and (outside
        autocast) its dtype.
    output_size : int, optional
        Features of ``hidden`` if not ``hidden_size`` (a projected LSTM's ``proj_size``).
    widths : sequence of int or None, optional
        Features of each state tensor when they differ (one entry per part; None for
        ``hidden_size``): the mLSTM's ``(C, n, m)``.
    x_name : str, default "x"
        The name of ``x`` in messages (``"input"`` for ``lstm.nn.LSTMCell``).

    Raises
    ------
    TypeError
        For a non-tensor, a non-floating tensor, a state tuple of the wrong length or a dtype
        other than the parameters'.
    lstm.ShapeError
        For a wrong shape (a ``ValueError`` and a ``RuntimeError``).
    ValueError
        For a wrong device.
    """
    x = check_tensor(owner, x_name, x)
    if x.dim() != 2 or x.shape[1] != input_size:
        wanted = shape_str(["batch", input_size])
        raise ShapeError(f"{owner}: expected {x_name} of shape {wanted}, got {shape_str(x.shape)}")
    if parts:
        if not isinstance(state, (tuple, list)) or len(state) != parts:
            raise TypeError(
                f"{owner}: expected state to be a tuple of {parts} tensors, got {describe(state)}"
            )
        states = [(f"state[{index}]", part) for index, part in enumerate(state)]
    else:
        states = [("state", state)]
    hidden_shape = (x.shape[0], hidden_size if output_size is None else output_size)
    arguments: list[tuple[str, Any, tuple[int, ...]]] = [("hidden", hidden, hidden_shape)]
    features: list[int | None] = [None] * len(states) if widths is None else list(widths)
    for (name, part), width in zip(states, features, strict=True):
        size = hidden_size if width is None else width
        arguments.append((name, part, (*lead, x.shape[0], size)))
    tensors = [(x_name, x)]
    for name, value, shape in arguments:
        value = check_tensor(owner, name, value)
        if value.shape != shape:
            raise ShapeError(
                f"{owner}: expected {name} of shape {shape_str(shape)}, "
                f"got {shape_str(value.shape)}"
            )
        tensors.append((name, value))
    check_like_parameters(owner, tensors, parameter)


def check_forward_cell(
    cell: Any,
    x: Any,
    hidden: Any,
    state: Any,
    *,
    lead: tuple[int, ...] = (),
    parts: int = 0,
    widths: Sequence[int | None] | None = None,
) -> None:
    """Check the arguments of a built-in ``cell.forward_cell`` call before any arithmetic.

    :func:`check_step_arguments` with the sizes of the cell ``cell`` stands for (its
    ``cell_index``: a :meth:`~lstm.driver.Recurrent.layer_cell` view of a deeper layer reads
    ``num_directions * output_size`` features), hidden ``(batch, output_size)``, the state
    ``(*lead, batch, hidden_size)`` or a tuple of ``parts`` such tensors, and its parameters'
    device and dtype. Nothing is
    checked while the time loop steps ``cell`` (:func:`stepping`).

    Parameters
    ----------
    cell : Recurrent
        The module (or view) whose ``forward_cell`` was called.
    x, hidden, state
        The call's arguments.
    lead : tuple of int, default ()
    parts : int, default 0
    widths : sequence of int or None, optional
        Features of each state part where they differ (see :func:`check_step_arguments`).
    """
    if is_stepping(cell):
        return
    check_step_arguments(
        f"{type(cell).__name__}.forward_cell",
        x,
        hidden,
        state,
        input_size=cell.layer_input_size(cell.cell_index[0]),
        hidden_size=cell.hidden_size,
        lead=lead,
        parts=parts,
        parameter=first_parameter(cell),
        output_size=cell.output_size,
        widths=widths,
    )


def check_call_options(
    owner: str, engine: Any, engines: Sequence[str], return_all_states: Any
) -> None:
    """Check the engine setting and ``return_all_states`` of a ``forward`` call."""
    if not isinstance(engine, str) or engine not in engines:
        raise ValueError(f"{owner}: expected engine in {tuple(engines)}, got {engine!r}")
    if not isinstance(return_all_states, bool):
        raise TypeError(
            f"{owner}: expected return_all_states to be a bool, got "
            f"{type(return_all_states).__name__}"
        )


def check_step_results(
    owner: str, hidden: Any, state: Any, like_hidden: Tensor, like_state: Any
) -> None:
    """Check what one step returned against what it was given.

    Parameters
    ----------
    owner : str
        Name used in error messages, e.g. ``"CoupledGate.forward_cell"``.
    hidden, state : Any
        The step's results.
    like_hidden : Tensor of shape (batch, hidden_size)
    like_state : Tensor or tuple of Tensors
        The step's arguments: the results must have the same structure and shapes.

    Raises
    ------
    lstm.ShapeError
        If a result is not a tensor of the expected shape.
    """
    if not isinstance(hidden, Tensor) or hidden.shape != like_hidden.shape:
        got = shape_str(hidden.shape) if isinstance(hidden, Tensor) else type(hidden).__name__
        raise ShapeError(
            f"{owner}: expected hidden of shape {shape_str(like_hidden.shape)}, got {got}"
        )
    new_parts = state if isinstance(state, tuple) else (state,)
    old_parts = like_state if isinstance(like_state, tuple) else (like_state,)
    if len(new_parts) != len(old_parts) or any(
        not isinstance(new, Tensor) or new.shape != old.shape
        for new, old in zip(new_parts, old_parts, strict=False)
    ):
        shapes = [
            shape_str(p.shape) if isinstance(p, Tensor) else type(p).__name__ for p in new_parts
        ]
        raise ShapeError(
            f"{owner}: expected state shaped like {[shape_str(p.shape) for p in old_parts]}, "
            f"got {shapes}"
        )


_STEPPING: ContextVar[object | None] = ContextVar("lstm_stepping", default=None)


@contextmanager
def stepping(cell: object) -> Iterator[None]:
    """Within this block, ``cell`` is being stepped by the time loop.

    The loop has checked ``forward``'s arguments once (and checks the first step's results),
    so :func:`is_stepping` tells ``cell``'s own ``forward_cell`` to skip its per-step checks.
    Only this very object is affected: any other module's ``forward_cell``, and the same
    module called directly outside the loop, stay fully checked.

    Under ``torch.compile`` this does nothing, and every step is checked while it is traced:
    the checks read only shapes, dtypes and devices, which become the compiled graph's
    guards and cost nothing when it runs, whereas a ``ContextVar`` would break the graph
    inside the time loop and leave the whole loop to eager mode.
    """
    if torch.compiler.is_compiling():
        yield
        return
    token = _STEPPING.set(cell)
    try:
        yield
    finally:
        _STEPPING.reset(token)


def is_stepping(cell: object) -> bool:
    """Whether the time loop is stepping ``cell`` now (see :func:`stepping`)."""
    return not torch.compiler.is_compiling() and _STEPPING.get() is cell
