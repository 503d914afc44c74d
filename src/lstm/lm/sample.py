"""Using a trained model: load a run folder, measure bits per character, sample text.

A run folder is read through :func:`load_run`, which trusts nothing it reads: ``config.json``
must describe a valid configuration, ``model.safetensors`` must pass its checksum, carry the
same configuration, and hold exactly the model's parameters with their shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lstm.lm.config import TrainConfig
from lstm.lm.corpus import stream_views
from lstm.lm.files import CheckpointError, load_tensors, read_json
from lstm.lm.model import VOCABULARY, ByteModel

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MODEL_KIND = "lstm-byte-model/1"


@dataclass(frozen=True)
class LoadedRun:
    """A trained model with its configuration.

    Attributes
    ----------
    config : TrainConfig
    model : ByteModel
        In eval mode, on the requested device.
    step : int
        The training step the weights are from.
    corpus : dict
        ``source``, ``sha256``, ``bytes``, ``description`` of the training data.
    """

    config: TrainConfig
    model: ByteModel
    step: int
    corpus: dict[str, Any]


def build_model(config: TrainConfig) -> ByteModel:
    """The model a configuration describes, freshly initialised from the global RNG."""
    return ByteModel(
        config.cell, config.hidden, config.layers, config.k, config.dropout, config.impl
    )


def read_config(folder: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The configuration and the saved run description from ``folder/config.json``.

    Raises
    ------
    CheckpointError
        If the file is missing, not JSON, or not a valid configuration.
    """
    saved = read_json(folder / CONFIG_FILE, "run configuration")
    try:
        return TrainConfig.from_json(saved["train"]), saved
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: not a valid run configuration ({error})"
        ) from None


def load_weights(model: ByteModel, tensors: dict[str, Tensor], source: Path) -> None:
    """Copy ``tensors`` into ``model``, refusing missing, unexpected or misshapen entries."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: incompatible with the configuration; missing {missing}, "
            f"unexpected {unexpected}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{source}: expected {name} of shape {tuple(expected[name].shape)}, "
                f"got {tuple(tensor.shape)}"
            )
    model.load_state_dict(tensors)


def load_run(folder: str | Path, device: torch.device | None = None) -> LoadedRun:
    """Load the model of a run folder written by ``python -m lstm train``.

    Parameters
    ----------
    folder : str or Path
        The run folder (``--out`` of the training run).
    device : torch.device, optional
        Where to put the model (default: the CPU).

    Raises
    ------
    CheckpointError
        If the folder, its configuration or its weights are missing, damaged or do not match.
    """
    path = Path(folder)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    config, saved = read_config(path)
    tensors, info = load_tensors(path / MODEL_FILE, kind=MODEL_KIND)
    if not isinstance(info, dict) or info.get("train") != config.to_json():
        raise CheckpointError(
            f"{path / MODEL_FILE} was not written with {path / CONFIG_FILE}'s configuration"
        )
    model = build_model(config)
    load_weights(model, tensors, path / MODEL_FILE)
    model.to(device or torch.device("cpu")).eval()
    return LoadedRun(config, model, int(info.get("step", 0)), dict(saved.get("corpus", {})))


@torch.no_grad()
def bits_per_character(model: ByteModel, data: Tensor, seq_len: int, streams: int) -> float:
    """Mean cross-entropy of the next byte, in bits, over a whole split.

    The bytes are cut into ``streams`` contiguous streams read window by window with the
    state carried across windows (as in training); every byte but the first of each stream is
    predicted, and the last ``(n - 1) % streams`` bytes are not used.

    Parameters
    ----------
    model : ByteModel
        Evaluated in eval mode (its mode is restored afterwards).
    data : Tensor
        Shape (n,), dtype uint8, ``n >= 2``.
    seq_len : int
        Window length.
    streams : int
        Parallel streams (capped so each has at least one byte to predict).

    Returns
    -------
    float
        Bits per character (byte); 8.0 is uniform guessing.
    """
    if data.numel() < 2:
        raise ValueError(f"expected at least 2 bytes to evaluate, got {data.numel()}")
    streams = max(1, min(streams, data.numel() - 1))
    device = next(model.parameters()).device
    inputs, targets = (part.to(device).long() for part in stream_views(data, streams))  # (S, L)
    length = inputs.shape[1]
    was_training = model.training
    model.eval()
    total, state = 0.0, None
    for start in range(0, length, seq_len):
        logits, state = model(inputs[:, start : start + seq_len], state)  # (S, T, 256)
        window = targets[:, start : start + seq_len]
        loss = F.cross_entropy(logits.reshape(-1, VOCABULARY), window.reshape(-1), reduction="sum")
        total += float(loss)
    model.train(was_training)
    return total / (streams * length) / math.log(2)


@torch.no_grad()
def generate(
    model: ByteModel,
    prompt: bytes,
    length: int,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> bytes:
    """Sample ``length`` bytes after ``prompt``.

    Parameters
    ----------
    model : ByteModel
        Run in eval mode.
    prompt : bytes
        Context fed first (an empty prompt starts from a newline).
    length : int
        Bytes to sample, >= 0.
    temperature : float
        > 0; the logits are divided by it (below 1: more likely bytes, above 1: more varied).
    generator : torch.Generator, optional
        Source of the draws (on the CPU), for reproducible samples.

    Returns
    -------
    bytes
        The sampled bytes only (without the prompt).
    """
    if length < 0:
        raise ValueError(f"expected length >= 0, got {length}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"expected temperature > 0, got {temperature}")
    device = next(model.parameters()).device
    model.eval()
    context = torch.tensor([list(prompt or b"\n")], dtype=torch.int64, device=device)  # (1, P)
    logits, state = model(context)
    sampled: list[int] = []
    for _ in range(length):
        probabilities = torch.softmax(logits[0, -1].double().cpu() / temperature, dim=-1)
        byte = int(torch.multinomial(probabilities, 1, generator=generator))
        sampled.append(byte)
        logits, state = model(torch.tensor([[byte]], device=device), state)
    return bytes(sampled)
