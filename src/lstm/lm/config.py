"""The configuration of a training run: one dataclass, written as ``config.json`` in the run.

:class:`TrainConfig` is the only place an option is defined. Each field carries its command-line
flag in its metadata (an :class:`Option`: the help text, which commands take it, its bounds), so
:mod:`lstm.cli` builds the flags of ``train`` and ``compare`` from the fields, and
``__post_init__`` checks every value once, whether it came from the command line, Python or a
saved ``config.json``. A resumed run must agree with the saved configuration on everything that
shapes the weights (:data:`RESUMABLE` lists what may change on resume).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lstm import CELLS
from lstm.lm.model import IMPLS, check_model_options

DEVICES = ("auto", "cpu", "cuda")

RESUMABLE = frozenset(
    {"steps", "checkpoint_every", "eval_every", "eval_bytes", "device", "threads"}
)
"""Fields a resumed run may change: how long it goes on, how often it reports, where and on how
many CPU threads it runs (the weights are bitwise the same only for the same device and thread
count, as for a run never interrupted)."""

MODEL_COMMANDS = ("train", "compare")
"""The commands that build a :class:`TrainConfig` from their flags."""

COMPARE_CELLS = ("lstm", "array", "stochastic-array")
"""The cells ``compare`` trains unless ``--cells`` names others."""

RUN_COMMANDS = (*MODEL_COMMANDS, "evaluate", "generate")
"""The commands that run a model (and take ``--device`` and ``--threads``)."""


@dataclass(frozen=True)
class Option:
    """How a :class:`TrainConfig` field appears on the command line, and its bounds.

    Attributes
    ----------
    help : str or callable
        The flag's help text, where ``%(default)s`` is its default; a callable is called when
        the parser is built (for text that depends on the registered cells).
    metavar : str or None
        The value's name in the help (``None`` with ``choices``: the choices are shown).
    choices : tuple of str or None
        The only values the command line accepts.
    commands : tuple of str
        The commands that take the flag (empty: a field with no flag).
    defaults : mapping of str to value
        A command's own default where it is not the field's (``compare`` trains fewer steps).
    minimum : int or None
        For an integer field: the smallest valid value.
    optional : bool
        ``None`` is valid too (the default: the choice is left to torch).
    positive : bool
        For a number field: must be finite and greater than zero.
    """

    help: str | Callable[[], str]
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    commands: tuple[str, ...] = MODEL_COMMANDS
    defaults: Mapping[str, Any] = field(default_factory=dict)
    minimum: int | None = None
    optional: bool = False
    positive: bool = False


@dataclass(frozen=True)
class Flag:
    """A field's flag as one command takes it: what ``argparse`` needs, resolved.

    Attributes
    ----------
    name : str
        The field, and the parsed argument's ``dest``.
    value_type : type
        ``int``, ``float`` or ``str`` (the field's type, without ``None``).
    default : object
        The command's default.
    help : str
    metavar : str or None
    choices : tuple of str or None
    """

    name: str
    value_type: type
    default: Any
    help: str
    metavar: str | None
    choices: tuple[str, ...] | None

    @property
    def option_string(self) -> str:
        """``--seq-len`` for ``seq_len``."""
        return flag(self.name)


def _option(help: str | Callable[[], str], **details: Any) -> dict[str, Option]:
    """A field's metadata: its :class:`Option`."""
    return {"option": Option(help, **details)}


def _cell_help() -> str:
    """The help of ``--cell``: the cells registered when the parser is built."""
    return (
        f"one of {', '.join(sorted(CELLS))}, a cell an installed package registers, or your "
        "own class as package.module:ClassName (default %(default)s)"
    )


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
        Gradient-norm clipping threshold (no flag).
    seed : int
        Seeds the weights and every random draw.
    checkpoint_every, eval_every : int
        Steps between checkpoints, and between validation reports.
    eval_bytes : int
        Validation bytes read at each report (the final report reads all of them).
    impl : {"lstm", "torch"}
        This library's cell, or ``torch.nn.LSTM`` (cell ``"lstm"`` only).
    device : {"auto", "cpu", "cuda"}
        Where to train; ``"auto"`` is CUDA when available.
    threads : int or None
        torch's intra-op CPU threads (``torch.set_num_threads``), set by :mod:`lstm.cli`
        before any work; ``None`` leaves torch's default. A resumed run may change it.
    """

    data: str = field(
        default="stdlib",
        metadata=_option(
            "bytes to model: a file, or stdlib for the embedded standard-library corpus "
            "(default %(default)s)",
            metavar="FILE",
        ),
    )
    cell: str = field(
        # compare takes the cells to compare from its own --cells
        default="lstm",
        metadata=_option(_cell_help, metavar="NAME", commands=("train",)),
    )
    hidden: int = field(
        default=256,
        metadata=_option(
            "width of the embedding and the recurrent layers (default %(default)s)",
            metavar="N",
            minimum=1,
        ),
    )
    layers: int = field(
        default=1,
        metadata=_option("stacked recurrent layers (default %(default)s)", metavar="N", minimum=1),
    )
    k: int | None = field(
        default=None, metadata=_option("lanes of the Array-LSTM cells (default 4)", metavar="N")
    )
    dropout: float = field(
        default=0.0,
        metadata=_option("dropout between recurrent layers (default %(default)s)", metavar="F"),
    )
    seq_len: int = field(
        default=100,
        metadata=_option(
            "bytes per window of truncated backpropagation through time (default %(default)s)",
            metavar="N",
            minimum=2,
        ),
    )
    batch_size: int = field(
        default=32,
        metadata=_option(
            "parallel streams per process (default %(default)s)", metavar="N", minimum=1
        ),
    )
    steps: int = field(
        default=400,
        metadata=_option(
            "optimiser steps in all (default %(default)s)",
            metavar="N",
            minimum=1,
            defaults={"compare": 300},
        ),
    )
    lr: float = field(
        default=3e-3,
        metadata=_option(
            "Adam's learning rate, constant (default %(default)s)", metavar="F", positive=True
        ),
    )
    clip: float = field(
        default=1.0,
        metadata=_option("gradient-norm clipping threshold", commands=(), positive=True),
    )
    seed: int = field(
        default=0,
        metadata=_option(
            "seeds the weights and every random draw (default %(default)s)", metavar="N", minimum=0
        ),
    )
    checkpoint_every: int = field(
        default=100,
        metadata=_option(
            "steps between checkpoints (default %(default)s)",
            metavar="N",
            commands=("train",),
            minimum=1,
        ),
    )
    eval_every: int = field(
        default=100,
        metadata=_option(
            "steps between validation reports (default %(default)s)",
            metavar="N",
            commands=("train",),
            minimum=1,
        ),
    )
    eval_bytes: int = field(
        default=65_536,
        metadata=_option(
            "validation bytes per report; the final report reads all (default %(default)s)",
            metavar="N",
            commands=MODEL_COMMANDS,
            minimum=2,
        ),
    )
    impl: str = field(
        default="lstm",
        metadata=_option(
            "torch: the same model on torch.nn.LSTM (cell lstm only; default %(default)s)",
            choices=IMPLS,
            commands=("train",),
        ),
    )
    device: str = field(
        default="auto",
        metadata=_option(
            "auto: CUDA when available (default %(default)s)",
            choices=DEVICES,
            commands=RUN_COMMANDS,
        ),
    )
    threads: int | None = field(
        default=None,
        metadata=_option(
            "torch's CPU threads; 1 on shared or busy cores, where waiting for a busy core "
            "costs more than a second thread gains (default: torch's own, usually one per "
            "physical core)",
            metavar="N",
            commands=RUN_COMMANDS,
            minimum=1,
            optional=True,
        ),
    )

    def __post_init__(self) -> None:
        # Integers, then numbers, then the rest: where two values are bad, the first is named.
        for name, option in _options():
            value = getattr(self, name)
            if option.minimum is not None and not (option.optional and value is None):
                _check_integer(name, value, option.minimum)
        for name, option in _options():
            if option.positive:
                _check_positive(name, getattr(self, name))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"expected --dropout in [0, 1), got {self.dropout}")
        if self.device not in DEVICES:
            raise ValueError(f"expected --device in {list(DEVICES)}, got {self.device!r}")
        check_model_options(self.cell, self.k, self.impl, k_name=flag("k"))

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

    @classmethod
    def from_flags(cls, values: Mapping[str, Any], command: str, **fields: Any) -> TrainConfig:
        """The configuration of a command: its flags' values (from ``values``), then ``fields``.

        Parameters
        ----------
        values : mapping of str to value
            At least the fields :func:`flags` gives for ``command`` (``vars()`` of the parsed
            arguments, say); other keys are ignored.
        command : str
            ``"train"`` or ``"compare"``.
        **fields
            Fields the command sets itself; the rest keep their defaults.

        Raises
        ------
        ValueError
            If a value is invalid.
        """
        return cls(**{option.name: values[option.name] for option in flags(command)}, **fields)

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


def flags(command: str) -> list[Flag]:
    """The flags ``command`` takes from :class:`TrainConfig`, in the order of the fields.

    Parameters
    ----------
    command : str
        ``"train"``, ``"compare"``, ``"evaluate"`` or ``"generate"``.

    Returns
    -------
    list of Flag
        Empty for a command that takes none.
    """
    types = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    return [
        Flag(
            name,
            _value_type(types[name]),
            option.defaults.get(command, getattr(defaults, name)),
            option.help() if callable(option.help) else option.help,
            option.metavar,
            option.choices,
        )
        for name, option in _options()
        if command in option.commands
    ]


def _options() -> list[tuple[str, Option]]:
    """The name and :class:`Option` of every field of :class:`TrainConfig`, in order."""
    return [(entry.name, entry.metadata["option"]) for entry in dataclasses.fields(TrainConfig)]


def _value_type(annotation: Any) -> type:
    """``int`` for ``int`` and for ``int | None``."""
    kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
    value: type = kinds[0] if kinds else annotation
    return value


def _check_integer(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected {flag(name)} to be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"expected {flag(name)} >= {minimum}, got {value}")


def _check_positive(name: str, value: Any) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"expected {flag(name)} to be a finite number > 0, got {value}")
