"""``nn.LSTM(...)`` in PyTorch's tests becomes ``make_lstm(...)`` here.

``make_lstm`` takes ``torch.nn.LSTM``'s signature (positional options, ``batch_first=False``
by default, ``proj_size``), builds ``lstm.LSTM`` with the same options (its own argument checks
run first, so error tests see our errors), and gives it the weights of a freshly initialised
``nn.LSTM`` through ``LSTM.from_torch``: the two compute the same function, so a port can
compare against nn.LSTM exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import lstm


def torch_arguments(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    proj_size: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """``torch.nn.LSTM``'s constructor signature (torch 2.13), as a dict of its arguments."""
    return dict(locals())


def make_pair(*args: Any, **kwargs: Any) -> tuple[lstm.LSTM, nn.LSTM]:
    """``(ours, theirs)`` for the arguments of ``nn.LSTM(*args, **kwargs)``, same weights.

    Raises what ``lstm.LSTM`` raises for these arguments, before ``nn.LSTM`` is built.
    """
    arguments = torch_arguments(*args, **kwargs)
    options = {key: value for key, value in arguments.items() if key != "proj_size"}
    if arguments["proj_size"]:
        options["proj_size"] = arguments["proj_size"]  # accepted once proj_size lands
    input_size, hidden_size = options.pop("input_size"), options.pop("hidden_size")
    lstm.LSTM(input_size, hidden_size, **options)  # our checks, and our warnings, first
    theirs = nn.LSTM(**arguments)
    return lstm.LSTM.from_torch(theirs), theirs


def make_lstm(*args: Any, **kwargs: Any) -> lstm.LSTM:
    """``lstm.LSTM`` for the arguments of ``nn.LSTM(*args, **kwargs)`` (see :func:`make_pair`)."""
    return make_pair(*args, **kwargs)[0]
