"""The byte-level language model: ``embedding -> recurrent cell -> linear head``.

.. math::

    e_t = E[x_t], \\qquad (y_t, s_t) = \\mathrm{cell}(e_t, s_{t-1}), \\qquad
    p(x_{t+1} \\mid x_{\\le t}) = \\mathrm{softmax}(W y_t + b)

The cell is any registered cell (``impl="lstm"``), or ``torch.nn.LSTM`` built from the same
initial weights through the exact conversion (``impl="torch"``), so the two implementations
can be trained side by side from one seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import torch
from torch import Tensor, nn

from lstm.cells.lstm import LSTM
from lstm.driver import Recurrent
from lstm.registry import create, get_cell, takes_lanes

if TYPE_CHECKING:  # lstm.lm.config imports this module
    from lstm.lm.config import TrainConfig

VOCABULARY = 256
"""Symbols: the byte values."""

IMPLS = ("lstm", "torch")
"""Implementations of the recurrent layer: this library's cells, or ``torch.nn.LSTM``."""

State: TypeAlias = tuple[Tensor, ...]
"""What the recurrent layer carries between windows: tensors with the batch at dim -2."""


class ByteModel(nn.Module):
    """Predicts the next byte from the bytes so far.

    Parameters
    ----------
    cell : str
        A registered cell name (:data:`lstm.CELLS`).
    hidden : int
        Width of the embedding and of the recurrent layer.
    layers : int
        Stacked recurrent layers.
    k : int or None
        Lanes, for cells that have them (``None``: the registry's default).
    dropout : float
        Dropout between recurrent layers.
    impl : {"lstm", "torch"}
        ``"torch"`` builds the cell as :class:`lstm.LSTM`, then converts it to
        ``torch.nn.LSTM`` (only for ``cell="lstm"``).

    Attributes
    ----------
    embed : nn.Embedding
        (256, hidden).
    rnn : lstm.Recurrent or torch.nn.LSTM
        Batch-first.
    head : nn.Linear
        hidden -> 256.
    """

    def __init__(
        self,
        cell: str,
        hidden: int,
        layers: int = 1,
        k: int | None = None,
        dropout: float = 0.0,
        impl: str = "lstm",
    ) -> None:
        super().__init__()
        check_model_options(cell, k, impl)
        self.embed = nn.Embedding(VOCABULARY, hidden)
        rnn = create(cell, hidden, hidden, k=k, num_layers=layers, dropout=dropout)
        self.head = nn.Linear(hidden, VOCABULARY)
        if impl == "torch":  # converted last: nn.LSTM's own initialisation draws random numbers
            assert isinstance(rnn, LSTM)  # checked above
            self.rnn: nn.Module = rnn.to_torch()
        else:
            self.rnn = rnn

    def engine(self, batch: int, seq_len: int) -> tuple[str, str]:
        """The engine a training step on ``(batch, seq_len)`` tokens runs, and why.

        ``engine_for`` of the recurrent layer (see :meth:`lstm.driver.Recurrent.engine_for`),
        asked in training mode with gradients on; ``("torch.nn.LSTM", ...)`` for
        ``impl="torch"``.
        """
        if not isinstance(self.rnn, Recurrent):
            return "torch.nn.LSTM", "--impl torch runs torch.nn.LSTM itself"
        weight = self.embed.weight
        sample = weight.new_zeros(batch, seq_len, weight.shape[1])
        with torch.enable_grad():
            engine = self.rnn.engine_for(sample)
        return engine.name, engine.reason

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Logits for the next byte at every position, and the state after the last.

        Parameters
        ----------
        tokens : Tensor
            Shape (batch, seq_len), dtype int64, values in 0..255.
        state : tuple of Tensor, optional
            The state returned by the previous call (``None``: zeros).

        Returns
        -------
        logits : Tensor
            Shape (batch, seq_len, 256).
        state : tuple of Tensor
            ``(hidden, *cell_state)`` flattened, each with the batch at dim -2.
        """
        previous = None
        if state is not None:  # rebuild (hidden, state) or (hidden, (c, n, m)) for the layer
            hidden, *rest = state
            previous = (hidden, rest[0] if len(rest) == 1 else tuple(rest))
        outputs, (hidden, final) = self.rnn(self.embed(tokens), previous)  # (B, T, H)
        logits: Tensor = self.head(outputs)  # (B, T, 256)
        return logits, (hidden, *final) if isinstance(final, tuple) else (hidden, final)


def check_model_options(cell: str, k: int | None, impl: str, *, k_name: str = "k") -> None:
    """Raise ``ValueError`` for an unknown cell or impl, or a ``k`` that is invalid or unused.

    Parameters
    ----------
    cell, k, impl
        As :class:`ByteModel` takes them.
    k_name : str
        How the message names ``k`` (the command line says ``--k``).

    Raises
    ------
    ValueError
        Naming the first problem: ``k < 1``, an unknown cell, an unknown impl, ``impl="torch"``
        with another cell than ``"lstm"``, or ``k`` for a cell without lanes.
    """
    if k is not None and k < 1:
        raise ValueError(f"expected {k_name} >= 1, got {k}")
    cls = get_cell(cell)
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; expected one of {list(IMPLS)}")
    if impl == "torch" and cell != "lstm":
        raise ValueError(f"impl 'torch' is torch.nn.LSTM: expected cell 'lstm', got {cell!r}")
    if k is not None and not takes_lanes(cls):
        raise ValueError(f"cell {cell!r} has no lanes; expected no k, got k={k}")


def build_model(config: TrainConfig) -> ByteModel:
    """The model a configuration describes, freshly initialised from the global RNG."""
    return ByteModel(
        config.cell, config.hidden, config.layers, config.k, config.dropout, config.impl
    )


def parameter_count(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)
