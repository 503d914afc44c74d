"""Whole-model ``torch.save``/``torch.load``: the classes ``torch.load`` must be allowed to build.

``torch.load`` unpickles with ``weights_only=True`` by default (PyTorch >= 2.6): it builds only
tensors, containers and the classes on its allow-list. A state dict (``model.state_dict()``)
needs nothing more and stays the recommended way to save; a pickled *module*
(``torch.save(model, path)``, as pytorch/examples' word_language_model does) needs the class of
every module inside it allowed. :func:`safe_globals` lists this package's: pass them, with your
own model's classes, to ``torch.serialization.safe_globals``.

Nothing is registered on import: which classes a process trusts when it unpickles is the
caller's decision, and the caller has to allow its own classes anyway.
"""

from __future__ import annotations

from torch import nn

from lstm.cells.torch_lstm import LSTM as TorchFaceLSTM
from lstm.cells.torch_lstm import LSTMCell as TorchFaceLSTMCell
from lstm.registry import CELLS

_TORCH_PARTS: tuple[type[nn.Module], ...] = (nn.Linear, nn.LayerNorm)
"""The ``torch.nn`` modules the registered cells are built from (``i2h``, ``h2h``, norms)."""


def safe_globals() -> list[type[nn.Module]]:
    """The classes ``torch.load(weights_only=True)`` needs to rebuild this package's modules.

    Every registered cell class (:data:`lstm.CELLS`), ``lstm.nn.LSTM`` and
    ``lstm.nn.LSTMCell``, and the ``torch.nn`` modules they hold. A subclass of your own, and
    the model around the cell, are not in it: add them.

    Returns
    -------
    list of type
        To pass to ``torch.serialization.safe_globals(...)`` (a context manager) or
        ``torch.serialization.add_safe_globals(...)`` (for the whole process).

    Examples
    --------
    >>> import io, torch, lstm
    >>> buffer = io.BytesIO()
    >>> torch.save(lstm.LSTM(3, 4), buffer)
    >>> _ = buffer.seek(0)
    >>> with torch.serialization.safe_globals(lstm.safe_globals()):
    ...     model = torch.load(buffer)
    >>> type(model).__name__
    'LSTM'
    """
    classes: set[type[nn.Module]] = {*CELLS.values(), TorchFaceLSTM, TorchFaceLSTMCell}
    cells = sorted(classes, key=lambda cls: (cls.__module__, cls.__qualname__))
    return [*cells, *_TORCH_PARTS]
