"""Recurrent cells, one module per family.

Each family module holds the family's step math as pure functions and its modules (thin
subclasses of :class:`lstm.driver.Recurrent` that own parameters and call those functions).
A new family goes in a new file here, is re-exported from :mod:`lstm`, and is added to
:data:`lstm.registry.CELLS`.
"""

from lstm.cells.array import (
    ArrayLSTM,
    StochasticArrayLSTM,
    array_lstm_pointwise,
    stochastic_output_pooling,
)
from lstm.cells.layernorm import LayerNormLSTM
from lstm.cells.lstm import LSTM, lstm_cell, lstm_pointwise
from lstm.cells.slstm import SLSTM, slstm_pointwise
from lstm.cells.variants import CIFGLSTM, PeepholeLSTM, cifg_pointwise, peephole_pointwise

__all__ = [
    "CIFGLSTM",
    "LSTM",
    "SLSTM",
    "ArrayLSTM",
    "LayerNormLSTM",
    "PeepholeLSTM",
    "StochasticArrayLSTM",
    "array_lstm_pointwise",
    "cifg_pointwise",
    "lstm_cell",
    "lstm_pointwise",
    "peephole_pointwise",
    "slstm_pointwise",
    "stochastic_output_pooling",
]
