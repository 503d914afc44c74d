"""``nn.LSTM(...)`` in PyTorch's tests becomes ``make_lstm(..., face=face)`` here.

Two faces run the ports. ``lstm.nn.LSTM`` is called exactly as the upstream test calls
``nn.LSTM`` (same arguments, nothing renamed or adapted); :func:`make_pair` then loads a fresh
``nn.LSTM``'s state dict into it, as a user moving a checkpoint would. ``lstm.LSTM`` (the
reference page's face) is built with nn.LSTM's options and given a fresh ``nn.LSTM``'s weights
through ``LSTM.from_torch``. Either way the two modules compute the same function, so a port
can compare with nn.LSTM exactly, and our own argument checks run first, so error tests see
our errors.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

import lstm

FACES = ("lstm.nn.LSTM", "lstm.LSTM")
"""The classes every face-independent port runs against."""

Ours = lstm.nn.LSTM | lstm.LSTM


def torch_arguments(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The arguments of ``torch.nn.LSTM(*args, **kwargs)`` by name, defaults filled in.

    Read through ``lstm.nn.LSTM``'s signature, which is nn.LSTM's (checked in
    tests/test_torch_lstm.py), less this package's keyword-only options.
    """
    bound = inspect.signature(lstm.nn.LSTM).bind(*args, **kwargs)
    bound.apply_defaults()
    ours = ("recurrent_dropout", "zoneout")
    return {name: value for name, value in bound.arguments.items() if name not in ours}


def make_pair(*args: Any, face: str = FACES[0], **kwargs: Any) -> tuple[Ours, nn.LSTM]:
    """``(ours, theirs)`` for the arguments of ``nn.LSTM(*args, **kwargs)``, same weights.

    Raises what ours raises for these arguments, before ``nn.LSTM`` is built.
    """
    if face == "lstm.nn.LSTM":
        ours = lstm.nn.LSTM(*args, **kwargs)  # the upstream call, unchanged
        theirs = nn.LSTM(*args, **kwargs)
        ours.load_state_dict(theirs.state_dict())
        return ours, theirs
    if face != "lstm.LSTM":
        raise ValueError(f"expected face in {FACES}, got {face!r}")
    arguments = torch_arguments(*args, **kwargs)
    options = {key: value for key, value in arguments.items() if key != "proj_size"}
    if arguments["proj_size"]:
        options["proj_size"] = arguments["proj_size"]
    input_size, hidden_size = options.pop("input_size"), options.pop("hidden_size")
    lstm.LSTM(input_size, hidden_size, **options)  # our checks, and our warnings, first
    theirs = nn.LSTM(**arguments)
    return lstm.LSTM.from_torch(theirs), theirs


def make_lstm(*args: Any, face: str = FACES[0], **kwargs: Any) -> Ours:
    """Our module for the arguments of ``nn.LSTM(*args, **kwargs)`` (see :func:`make_pair`)."""
    return make_pair(*args, face=face, **kwargs)[0]
