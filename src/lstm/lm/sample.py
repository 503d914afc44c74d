"""Using a model: bits per character over a split, and sampled text.

A trained model comes from its run folder through :func:`lstm.lm.run_folder.load_run`.
"""

from __future__ import annotations

import math
import unicodedata

import torch
import torch.nn.functional as F
from torch import Tensor

from lstm.lm.corpus import stream_views
from lstm.lm.model import VOCABULARY, ByteModel


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


def printable(text: str) -> str:
    r"""``text`` with its control characters escaped, for a terminal: ESC as ``\x1b``.

    A model trained on binary data (enwik8 has some) samples bytes such as ESC that a
    terminal would obey rather than show. Every character of Unicode category ``Cc`` but the
    newline and the tab is written as ``\xNN`` (from U+0080, ``\uNNNN``); the rest, a
    backslash included, is unchanged.

    Parameters
    ----------
    text : str

    Returns
    -------
    str
    """
    return "".join(_printable_character(character) for character in text)


def _printable_character(character: str) -> str:
    if character in "\n\t" or unicodedata.category(character) != "Cc":
        return character
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"
