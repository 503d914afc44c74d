"""Atomic writes: every file this package saves appears whole or not at all.

The data goes to a temporary file in the destination's folder, is flushed to disk, then renamed
over the destination (``os.replace`` is atomic on POSIX and Windows), and the folder is synced
so the rename survives a power cut. A process killed at any moment leaves the old file or the
new one, and at worst a hidden ``.NAME.*.tmp`` file, never a partial destination.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK
"""The mode ``open()`` would give a new file under this process's umask."""


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file by calling ``write`` on a temporary file, then renaming it to ``path``.

    Parameters
    ----------
    path : Path
        The destination; its folder must exist.
    write : callable
        Receives a binary file object open for writing.

    Raises
    ------
    OSError
        If the folder is not writable or the disk is full; ``path`` is then untouched and no
        temporary file is left behind.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, _FILE_MODE)  # mkstemp makes it private; give it an ordinary file's mode
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # Make the rename itself durable (POSIX); folders cannot be opened this way on Windows.
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    atomic_write(path, lambda file: file.write(data))


def write_text(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` encoded as UTF-8."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, value: Any) -> None:
    """Atomically replace ``path`` with ``value`` as indented JSON."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_figure(path: Path, figure: Any) -> None:
    """Atomically save a matplotlib figure as PNG, then close it."""
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    write_bytes(path, buffer.getvalue())
