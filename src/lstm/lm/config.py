"""The configuration of a training run: one dataclass, written as ``config.json`` in the run.

Each field is a ``python -m lstm train`` flag (``seq_len`` is ``--seq-len``). A resumed run
must agree with the saved configuration on everything that shapes the weights
(:data:`RESUMABLE` lists what may change on resume).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from lstm.lm.model import check_model_options

DEVICES = ("auto", "cpu", "cuda")

RESUMABLE = frozenset({"steps", "checkpoint_every", "eval_every", "eval_bytes", "device"})
"""Fields a resumed run may change: how long it goes on, how often it reports, where it runs."""


@dataclass(frozen=True)
class TrainConfig:
    """What ``python -m lstm train`` was asked to do.

    Attributes
    ----------
    data : str
        ``"stdlib"`` (the embedded default corpus) or a file path.
    cell : str
        Registered cell name.
    hidden, layers : int
        Width (of the embedding and the recurrent layer) and depth.
    k : int or None
        Lanes of an Array-LSTM cell (``None``: the registry's default, 4).
    dropout : float
        Between recurrent layers.
    seq_len : int
        Bytes per window of truncated backpropagation through time.
    batch_size : int
        Parallel streams per process.
    steps : int
        Optimiser steps in all.
    lr : float
        Adam's learning rate (constant).
    clip : float
        Gradient-norm clipping threshold.
    seed : int
        Seeds the weights and every random draw.
    checkpoint_every, eval_every : int
        Steps between checkpoints, and between validation reports.
    eval_bytes : int
        Validation bytes read at each report (the final report reads all of them).
    impl : {"lstm", "torch"}
        This library's cell, or ``torch.nn.LSTM`` (cell ``"lstm"`` only).
    device : {"auto", "cpu", "cuda"}
    """

    data: str = "stdlib"
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    k: int | None = None
    dropout: float = 0.0
    seq_len: int = 100
    batch_size: int = 32
    steps: int = 400
    lr: float = 3e-3
    clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    eval_every: int = 100
    eval_bytes: int = 65_536
    impl: str = "lstm"
    device: str = "auto"

    def __post_init__(self) -> None:
        for name, minimum in [
            ("hidden", 1),
            ("layers", 1),
            ("seq_len", 2),
            ("batch_size", 1),
            ("steps", 1),
            ("checkpoint_every", 1),
            ("eval_every", 1),
            ("eval_bytes", 2),
            ("seed", 0),
        ]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"expected {flag(name)} to be an integer, got {value!r}")
            if value < minimum:
                raise ValueError(f"expected {flag(name)} >= {minimum}, got {value}")
        for name in ("lr", "clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"expected {flag(name)} to be a finite number > 0, got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"expected --dropout in [0, 1), got {self.dropout}")
        if self.device not in DEVICES:
            raise ValueError(f"expected --device in {list(DEVICES)}, got {self.device!r}")
        if self.k is not None and self.k < 1:
            raise ValueError(f"expected --k >= 1, got {self.k}")
        check_model_options(self.cell, self.k, self.impl)

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON object."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_json`'s output; unknown or missing fields raise ``ValueError``.

        Raises
        ------
        ValueError
            If ``value`` has fields this version does not know, or a field is invalid.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"unknown configuration fields {unknown}; expected only {sorted(known)}"
            )
        try:
            return cls(**value)
        except TypeError as error:
            raise ValueError(f"invalid configuration: {error}") from None

    def differences(self, other: TrainConfig) -> list[str]:
        """The fields that shape the weights and differ, as ``"--flag: saved -> given"``."""
        return [
            f"{flag(field.name)}: {getattr(other, field.name)!r} -> {getattr(self, field.name)!r}"
            for field in dataclasses.fields(self)
            if field.name not in RESUMABLE
            and getattr(self, field.name) != getattr(other, field.name)
        ]


def flag(name: str) -> str:
    """The command-line flag of a field: ``seq_len`` -> ``--seq-len``."""
    return "--" + name.replace("_", "-")
