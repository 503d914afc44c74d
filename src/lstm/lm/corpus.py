"""The bytes a model learns from: the default corpus, a user's file, splits and windows.

Text is modelled as raw bytes (256 symbols), so any file works and nothing is tokenised.

* :func:`default_corpus` -- the embedded default: the running Python's standard library
  source (``.py`` files, tests and ``site-packages`` left out), in a fixed shuffled order (see
  :func:`corpus_files`), cut at :data:`DEFAULT_CORPUS_BYTES`. Nothing is downloaded, so
  ``python -m lstm train`` works on any machine; the slice is the same on every run of one
  Python version.
* :func:`split` -- 90 % training, 5 % validation, 5 % test, contiguous and in that order;
  validation and test have the same number of bytes.
* :class:`Streams` -- the training windows of truncated backpropagation through time: the
  training bytes are cut into ``batch`` parallel streams read left to right, ``seq_len`` bytes
  per step, so a step's final state is the right initial state for the next window.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

DEFAULT_CORPUS_BYTES = 4_000_000
"""Size of the embedded default corpus in bytes (a few MB of the shuffled stdlib)."""

SKIPPED_FOLDERS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})
"""Folders of the standard library left out of the default corpus (third-party code, tests)."""

SPLIT = (0.90, 0.05, 0.05)
"""Fractions of the bytes used for training, validation and test, in file order (rounded down;
validation and test are both ``int(n * 0.05)`` bytes, and the 0 to 2 bytes left over at the end
are not used)."""


@dataclass(frozen=True)
class Corpus:
    """Bytes to model, with where they came from.

    Attributes
    ----------
    data : Tensor
        Shape (n,), dtype uint8: the bytes.
    source : str
        ``"stdlib"`` for the default corpus, otherwise the file's path as given.
    description : str
        For messages, e.g. ``"4,000,000 bytes of the Python 3.11 standard library"``.
    sha256 : str
        Digest of the bytes: a resumed run or an evaluation checks it is given the same data.
    """

    data: Tensor
    source: str
    description: str
    sha256: str


def default_corpus(limit: int = DEFAULT_CORPUS_BYTES) -> Corpus:
    """The embedded default corpus: the head of the standard library source in shuffled order.

    Parameters
    ----------
    limit : int
        Number of bytes to keep.

    Raises
    ------
    ValueError
        If this Python's standard library holds fewer than ``limit`` bytes of source.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = corpus_files(root)
    chunks, size = [], 0
    for path in paths:
        try:
            chunk = path.read_bytes()
        except OSError:  # an unreadable file is skipped the same way on every run
            continue
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    if size < limit:
        raise ValueError(
            f"the standard library at {root} holds {size:,} bytes of Python source, expected "
            f"at least {limit:,}; pass --data FILE instead"
        )
    data = b"".join(chunks)[:limit]
    version = sysconfig.get_python_version()
    return _corpus(data, "stdlib", f"{limit:,} bytes of the Python {version} standard library")


def corpus_files(root: Path) -> list[Path]:
    """The ``.py`` files under ``root``, outside :data:`SKIPPED_FOLDERS`, in a shuffled order.

    The order is that of :func:`path_key`: the same on every run and machine for the same
    files, and unrelated to the alphabet, so that the training, validation and test splits
    (contiguous runs of files) each draw on the whole library alike. In path order the 4 MB
    head of the library ended in ``encodings/cp8*.py``, and validation and test were code page
    tables only (1.6 validation BPC against 2.2 training).
    """
    paths = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_FOLDERS]  # prune
        paths += [Path(folder, name) for name in files if name.endswith(".py")]
    return sorted(paths, key=lambda path: path_key(path.relative_to(root)))


def path_key(relative: Path) -> tuple[str, str]:
    """Where a file goes in :func:`corpus_files`: the SHA-256 of its relative path, then the path.

    SHA-256 rather than :func:`hash`, which Python salts per process; the path breaks a tie.
    """
    name = relative.as_posix()
    return hashlib.sha256(name.encode("utf-8")).hexdigest(), name


def read_corpus(path: str | Path) -> Corpus:
    """Read a file's bytes as they are (enwik8, text, anything).

    Raises
    ------
    ValueError
        If the file is missing, not a regular file, unreadable or empty.
    """
    file = Path(path)
    if not file.exists():
        raise ValueError(f"data file {file} does not exist")
    if not file.is_file():
        raise ValueError(f"data file {file} is not a regular file")
    try:
        data = file.read_bytes()
    except OSError as error:
        raise ValueError(f"data file {file} cannot be read ({error.strerror})") from None
    if not data:
        raise ValueError(f"data file {file} is empty")
    return _corpus(data, str(path), f"{len(data):,} bytes of {file}")


def load_corpus(source: str | None) -> Corpus:
    """:func:`default_corpus` for ``None`` or ``"stdlib"``, else :func:`read_corpus`."""
    return default_corpus() if source in (None, "stdlib") else read_corpus(str(source))


def _corpus(data: bytes, source: str, description: str) -> Corpus:
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return Corpus(tensor, source, description, hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Splits:
    """Training, validation and test bytes, each of shape (n,), dtype uint8."""

    train: Tensor
    validation: Tensor
    test: Tensor


def split(data: Tensor) -> Splits:
    """Cut bytes 90/5/5 into training, validation and test, in order.

    Validation and test are the same size, so that figures measured on them (and on as many
    training bytes, at the end of a run) are alike; the last ``n - int(0.9 n) - 2 int(0.05 n)``
    bytes (0 to 2) are not used.

    Parameters
    ----------
    data : Tensor
        Shape (n,).
    """
    total = data.numel()
    train_end = int(total * SPLIT[0])
    held_out = int(total * SPLIT[1])  # validation and test alike
    validation_end = train_end + held_out
    return Splits(
        data[:train_end],
        data[train_end:validation_end],
        data[validation_end : validation_end + held_out],
    )


def minimum_bytes(seq_len: int, streams: int) -> int:
    """The smallest corpus whose splits allow training and evaluation.

    Training needs ``streams * seq_len + 1`` bytes (one window per stream plus the last
    target); validation and test need ``seq_len + 1`` bytes each.
    """
    needed = 0
    while True:
        total = max(needed, 1)
        parts = split(torch.empty(total, dtype=torch.uint8))
        if (
            parts.train.numel() >= streams * seq_len + 1
            and parts.validation.numel() >= seq_len + 1
            and parts.test.numel() >= seq_len + 1
        ):
            return total
        needed = max(
            total + 1,
            int((streams * seq_len + 1) / SPLIT[0]),
            int((seq_len + 1) / SPLIT[1]),
        )


def check_size(corpus: Corpus, seq_len: int, streams: int) -> None:
    """Raise ``ValueError`` if ``corpus`` is too short for ``seq_len`` and ``streams``."""
    needed = minimum_bytes(seq_len, streams)
    if corpus.data.numel() < needed:
        raise ValueError(
            f"data too short: {corpus.description}; seq-len {seq_len} with {streams} parallel "
            f"stream(s) needs at least {needed:,} bytes (90% train, 5% validation, 5% test)"
        )


def stream_views(data: Tensor, streams: int) -> tuple[Tensor, Tensor]:
    """Bytes cut into ``streams`` contiguous rows of equal length, and their next bytes.

    Parameters
    ----------
    data : Tensor
        Shape (n,), ``n >= streams + 1``.
    streams : int
        Rows.

    Returns
    -------
    inputs, targets : Tensor
        Views of shape (streams, L) with ``L = (n - 1) // streams``: row ``s`` holds
        ``data[s*L : (s+1)*L]`` and the same shifted by one; the last ``n - 1 - streams * L``
        bytes are not used.
    """
    length = (data.numel() - 1) // streams
    used = streams * length
    return data[:used].view(streams, length), data[1 : used + 1].view(streams, length)


class Streams:
    """The windows of truncated backpropagation through time over one split.

    The bytes are cut into ``streams`` contiguous streams of equal length ``L`` (the last
    ``n - 1 - streams * L`` bytes are not used); window ``j`` of stream ``s`` holds inputs
    ``data[s*L + j*seq_len : s*L + (j+1)*seq_len]`` and, as targets, the same shifted by one.
    A process of a distributed run reads its own rows ``rows``.

    Parameters
    ----------
    data : Tensor
        Shape (n,), dtype uint8.
    streams : int
        Number of parallel streams (the global batch).
    seq_len : int
        Bytes per window.
    """

    def __init__(self, data: Tensor, streams: int, seq_len: int) -> None:
        length = (data.numel() - 1) // streams
        if length < seq_len:
            raise ValueError(
                f"expected at least {streams * seq_len + 1:,} bytes for {streams} stream(s) of "
                f"seq-len {seq_len}, got {data.numel():,}"
            )
        self.inputs, self.targets = stream_views(data, streams)  # (S, L) each
        self.seq_len = seq_len
        self.windows = length // seq_len
        """Windows per pass over the data; step ``t`` (from 1) reads window ``(t-1) % windows``."""

    def window(self, step: int, rows: slice) -> tuple[Tensor, Tensor]:
        """Inputs and targets of training step ``step`` (counted from 1) for ``rows``.

        Returns
        -------
        inputs, targets : Tensor
            Each (len(rows), seq_len), dtype int64.
        """
        start = ((step - 1) % self.windows) * self.seq_len
        columns = slice(start, start + self.seq_len)
        return self.inputs[rows, columns].long(), self.targets[rows, columns].long()

    def starts_pass(self, step: int) -> bool:
        """Whether step ``step`` reads the first window, where the carried state is reset."""
        return (step - 1) % self.windows == 0
