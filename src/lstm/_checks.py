"""Argument checks shared by the driver and the cells.

Every check raises before any tensor is reshaped, and every message names the
owner (the class), what was expected and what was given, e.g.
``ValueError("LSTM: expected input of shape (batch, seq_len, 16), got (4, 7, 15)")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


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


def check_probability(owner: str, name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a real number in ``[0, 1)``.

    Raises
    ------
    TypeError
        If ``value`` is not an ``int`` or ``float`` (``bool`` is refused).
    ValueError
        If ``value`` lies outside ``[0, 1)``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{owner}: expected {name} to be a float, got {type(value).__name__} {value!r}"
        )
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{owner}: expected {name} in [0, 1), got {value}")
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
        Candidate lengths: must be a 1-D integer tensor of shape ``(batch,)`` whose
        entries lie in ``1..seq_len``.
    batch, seq_len : int
        Batch size and padded sequence length of the input.

    Returns
    -------
    Tensor of shape (batch,), dtype int64, on the CPU.
    """
    if not isinstance(lengths, Tensor):
        raise TypeError(
            f"{owner}: expected lengths to be a 1-D integer torch.Tensor, "
            f"got {type(lengths).__name__}"
        )
    if torch.is_floating_point(lengths) or torch.is_complex(lengths) or lengths.dtype == torch.bool:
        raise TypeError(f"{owner}: expected lengths to have an integer dtype, got {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(
            f"{owner}: expected lengths of shape {shape_str([batch])} (one entry per sequence), "
            f"got {shape_str(lengths.shape)}"
        )
    if lengths.is_meta:
        raise ValueError(f"{owner}: expected lengths with values, got a tensor on the meta device")
    checked: Tensor = lengths.to(device="cpu", dtype=torch.int64)
    if batch > 0:
        low, high = int(checked.min()), int(checked.max())
        if low < 1 or high > seq_len:
            raise ValueError(
                f"{owner}: expected every length in 1..{seq_len} (the padded seq_len), "
                f"got values in {low}..{high}"
            )
    return checked
