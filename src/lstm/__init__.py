"""lstm: the LSTM you can change.

A pure-PyTorch, batch-first ``LSTM`` whose single step, :meth:`LSTM.forward_cell`, a subclass
can rewrite; the driver (:class:`Recurrent`) gives every cell layers, directions, dropout,
lengths and ``PackedSequence`` with ``torch.nn.LSTM``'s interface. Coming from
``torch.nn.LSTM``: :mod:`lstm.nn` has its own face (``lstm.nn.LSTM``, ``lstm.nn.LSTMCell``:
same names, defaults and state dicts), on the same driver.

Layout: ``driver.py`` (:class:`Recurrent`, the one driver for all cells) composing
``layout.py``, ``state.py``, ``engines.py``, ``scan.py``, ``checks.py`` and ``parameters.py``
(one concern each); ``cells/`` (one file per cell family: pure step functions and thin
modules; a new cell goes there); ``registry.py`` (name -> class); around them ``cli.py`` and
``bench.py`` (``python -m lstm``) and ``lm/`` (the byte-level language model the command line
trains, which the core never imports).
"""

from lstm import nn
from lstm.cells.array import (
    ArrayLSTM,
    AttentionArrayLSTM,
    StochasticArrayLSTM,
    StochasticMemoryArrayLSTM,
    array_lstm_lanes,
    array_lstm_pointwise,
    attention_array_lanes,
    pool_lanes,
    stochastic_memory_lanes,
    stochastic_output_pooling,
    sum_lanes,
)
from lstm.cells.layernorm import LayerNormLSTM
from lstm.cells.lstm import LSTM, lstm_cell, lstm_pointwise
from lstm.cells.mlstm import MLSTM, mlstm_chunkwise, mlstm_step, normalise_heads
from lstm.cells.slstm import SLSTM, slstm_pointwise
from lstm.cells.variants import CIFGLSTM, PeepholeLSTM, cifg_pointwise, peephole_pointwise
from lstm.checks import DTypeError, ShapeError
from lstm.driver import Recurrent, cell_suffix
from lstm.engines import Engine
from lstm.registry import CELLS, create, get_cell
from lstm.serialization import safe_globals

__version__ = "0.1.0"

__all__ = [
    "CELLS",
    "CIFGLSTM",
    "LSTM",
    "MLSTM",
    "SLSTM",
    "ArrayLSTM",
    "AttentionArrayLSTM",
    "DTypeError",
    "Engine",
    "LayerNormLSTM",
    "PeepholeLSTM",
    "Recurrent",
    "ShapeError",
    "StochasticArrayLSTM",
    "StochasticMemoryArrayLSTM",
    "__version__",
    "array_lstm_lanes",
    "array_lstm_pointwise",
    "attention_array_lanes",
    "cell_suffix",
    "cifg_pointwise",
    "create",
    "get_cell",
    "lstm_cell",
    "lstm_pointwise",
    "mlstm_chunkwise",
    "mlstm_step",
    "nn",
    "normalise_heads",
    "peephole_pointwise",
    "pool_lanes",
    "safe_globals",
    "slstm_pointwise",
    "stochastic_memory_lanes",
    "stochastic_output_pooling",
    "sum_lanes",
]
