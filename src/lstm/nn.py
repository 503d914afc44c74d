"""``torch.nn``'s faces of this package's LSTM: ``lstm.nn.LSTM`` and ``lstm.nn.LSTMCell``.

Coming from ``torch.nn.LSTM``, change one import (``from lstm.nn import LSTM``) and nothing
else: the same signature and defaults, parameters, state dicts, initialisation and results,
on this package's driver, with a cell you can rewrite (:mod:`lstm.cells.torch_lstm`).
"""

from lstm.cells.torch_lstm import LSTM, LSTMCell

__all__ = ["LSTM", "LSTMCell"]
