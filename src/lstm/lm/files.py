"""Files a run writes and reads: safetensors files checked before use, and JSON.

Nothing here unpickles. Tensors live in safetensors files whose metadata carries a format tag
and the SHA-256 of the tensor data, so a truncated, corrupted or foreign file is refused with a
:class:`CheckpointError` naming the file and what was wrong, before any tensor is used.
Writes are atomic (:mod:`lstm._atomic`): a reader sees the old file or the new one, never a part,
and deterministic: the same tensors and info give the same bytes (the header's keys are sorted).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from lstm._atomic import write_bytes


class CheckpointError(ValueError):
    """A run folder or checkpoint file that cannot be used (missing, damaged or incompatible)."""


def read_json(path: Path, what: str) -> dict[str, Any]:
    """Read a JSON object, or raise :class:`CheckpointError` naming ``what`` and the problem."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{what} {path} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{what} {path}: expected a JSON object, got {type(value).__name__}")
    return value


def save_tensors(path: Path, tensors: Mapping[str, Tensor], *, kind: str, info: Any) -> None:
    """Atomically write tensors as safetensors, tagged with ``kind`` and a JSON ``info``.

    Parameters
    ----------
    path : Path
        Destination file.
    tensors : mapping of str to Tensor
        Saved as contiguous CPU tensors (shapes and dtypes kept).
    kind : str
        Format tag checked by :func:`load_tensors`, e.g. ``"lstm-model/1"``.
    info : JSON-serialisable
        Stored in the metadata; returned by :func:`load_tensors`.

    The same tensors, ``kind`` and ``info`` always give the same bytes: nothing else (no time,
    no version) is written, and the header's keys are sorted.
    """
    cpu = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    metadata = {"kind": kind, "info": json.dumps(info, sort_keys=True), "sha256": _digest(cpu)}
    write_bytes(path, _sorted_header(save_safetensors(cpu, metadata=metadata)))


def _sorted_header(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys in sorted order.

    safetensors writes ``__metadata__`` from a Rust ``HashMap``, whose order is seeded at random
    for each map, so the same file came out in different bytes from one save to the next. The
    tensors' offsets count from the end of the header and stay valid; the header is padded
    with spaces to a multiple of 8 bytes, as safetensors pads it, so the data stays aligned.
    """
    length = _header_length(data)
    header = json.dumps(json.loads(data[8 : 8 + length]), sort_keys=True, separators=(",", ":"))
    padded = header.encode() + b" " * (-len(header.encode()) % 8)
    return struct.pack("<Q", len(padded)) + padded + data[8 + length :]


def load_tensors(path: Path, *, kind: str) -> tuple[dict[str, Tensor], Any]:
    """Read a file written by :func:`save_tensors`, checking its tag and checksum first.

    Returns
    -------
    tensors : dict of str to Tensor
        On the CPU.
    info : JSON value
        The ``info`` given when saving.

    Raises
    ------
    CheckpointError
        If the file is missing, is not a safetensors file (a pickle, say -- it is never
        unpickled), is truncated, has another ``kind``, or its data fails the checksum.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} does not exist") from None
    metadata = _metadata(path, data, kind)
    try:
        tensors = load_safetensors(data)
        info = json.loads(metadata["info"])
    except (SafetensorError, KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: damaged or truncated ({error})") from None
    if _digest(tensors) != metadata.get("sha256"):
        raise CheckpointError(f"{path}: the tensors fail their SHA-256 check (corrupted)")
    return tensors, info


def read_info(path: Path, *, kind: str) -> Any:
    """The ``info`` a :func:`save_tensors` file was saved with, from its header alone.

    Neither the tensors are read nor their checksum checked (:func:`load_tensors` does both):
    for what describes a file, not for what is trained on.

    Raises
    ------
    CheckpointError
        If the file is missing, has no header of this library's, or another ``kind``.
    """
    try:
        with path.open("rb") as file:
            start = file.read(8)
            length = struct.unpack("<Q", start)[0] if len(start) == 8 else 0
            header = start + file.read(length)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} does not exist") from None
    metadata = _metadata(path, header, kind)
    try:
        return json.loads(metadata["info"])
    except (KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: damaged or truncated ({error})") from None


def _digest(tensors: Mapping[str, Tensor]) -> str:
    # Names, dtypes, shapes and raw bytes, in name order: any change to one of them shows.
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _header_length(data: bytes) -> int:
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes, shorter than a safetensors header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError(f"header of {length} bytes in a file of {len(data)} bytes (truncated?)")
    return int(length)


def _metadata(path: Path, data: bytes, kind: str) -> dict[str, str]:
    """The library's metadata in the header of ``data``, checked to be of ``kind``."""
    try:
        length = _header_length(data)
        header = json.loads(data[8 : 8 + length])
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not a safetensors file ({error})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: a safetensors file without this library's metadata")
    if metadata.get("kind") != kind:
        raise CheckpointError(
            f"{path}: expected a {kind!r} file, got kind {metadata.get('kind')!r}"
        )
    return metadata
