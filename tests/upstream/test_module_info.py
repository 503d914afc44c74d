"""Ports of the ``nn.LSTM`` entry of PyTorch's ``torch/testing/_internal/common_modules.py``:
its ``module_inputs_torch_nn_LSTM`` samples (unbatched input against a batch of one, the
``no_batch_dim_reference_lstm`` check) and its error inputs
(``module_error_inputs_torch_nn_RNN_GRU``), run on both faces (``lstm.nn.LSTM`` called as
upstream calls nn.LSTM, and ``lstm.LSTM``; see ``upstream.factory``). nn.LSTMCell's entry is
ported in ``test_nn_lstm_cell.py``.

Upstream's error regexes are nn.LSTM's wording; ours name the class, what was expected and
what was given, so these ports check the exception type and that the message names the
argument.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from upstream.factory import make_pair

_SAMPLES = [
    pytest.param(bias, batch_first, bidirectional, proj, hidden)
    for bias, batch_first, bidirectional, proj, hidden in itertools.product(
        [False, True], [False, True], [False, True], [0, 2], [False, True]
    )
]


@pytest.mark.parametrize(
    ("bias", "batch_first", "bidirectional", "proj_size", "with_hidden"), _SAMPLES
)
def test_module_inputs_no_batch_dim(
    bias: bool, batch_first: bool, bidirectional: bool, proj_size: int, with_hidden: bool, face: str
) -> None:
    """Ports ``module_inputs_torch_nn_LSTM`` with ``no_batch_dim_reference_lstm``: a 2-layer
    LSTM (input 2, hidden 3) on an unbatched sequence, with or without unbatched initial
    states, equals the same call on a batch of one, squeezed; and nn.LSTM's result."""
    ours, theirs = make_pair(
        input_size=2,
        hidden_size=3,
        num_layers=2,
        proj_size=proj_size,
        batch_first=batch_first,
        bias=bias,
        bidirectional=bidirectional,
        dtype=torch.float64,
        face=face,
    )
    cells = 4 if bidirectional else 2
    x = torch.randn(3 if with_hidden else 2, 2, dtype=torch.float64)
    hidden = None
    if with_hidden:
        size_h = proj_size or 3
        hidden = (
            torch.randn(cells, size_h, dtype=torch.float64),
            torch.randn(cells, 3, dtype=torch.float64),
        )
    output, (h, c) = ours(x, hidden)

    batch_dim = 0 if batch_first else 1
    batched_hidden = None if hidden is None else (hidden[0][:, None], hidden[1][:, None])
    reference, (h_ref, c_ref) = ours(x.unsqueeze(batch_dim), batched_hidden)
    torch.testing.assert_close(output, reference.squeeze(batch_dim), rtol=0, atol=1e-12)
    torch.testing.assert_close(h, h_ref.squeeze(1), rtol=0, atol=1e-12)
    torch.testing.assert_close(c, c_ref.squeeze(1), rtol=0, atol=1e-12)

    expected, (h_theirs, c_theirs) = theirs(x, hidden)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, h_theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(c, c_theirs, rtol=0, atol=1e-12)


_CONSTRUCTION_ERRORS: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ((10, 0, 1), {}, ValueError, "hidden_size"),
    ((10, 10, 0), {}, ValueError, "num_layers"),
    ((3, 5), {"bias": 0}, TypeError, "bias"),
    ((3, 5), {"bias": 1}, TypeError, "bias"),
    ((3, 5), {"bias": "True"}, TypeError, "bias"),
    ((3, 5), {"batch_first": 0}, TypeError, "batch_first"),
    ((3, 5), {"batch_first": 1}, TypeError, "batch_first"),
    ((3, 5), {"batch_first": "False"}, TypeError, "batch_first"),
    ((3.0, 5), {}, TypeError, "input_size"),
    (("10", 5), {}, TypeError, "input_size"),
    ((0, 5), {}, ValueError, "input_size"),
    ((-1, 5), {}, ValueError, "input_size"),
    ((3, 5.0), {}, TypeError, "hidden_size"),
]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "argument"),
    _CONSTRUCTION_ERRORS,
    ids=[f"{args}-{kwargs}" for args, kwargs, _, _ in _CONSTRUCTION_ERRORS],
)
def test_module_error_inputs_construction(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], argument: str, face: str
) -> None:
    """Ports the construction errors of ``module_error_inputs_torch_nn_RNN_GRU`` (the LSTM's
    error inputs): the same exception type as nn.LSTM, the message naming the argument."""
    with pytest.raises(error, match=rf"^LSTM: expected {argument}\b"):
        make_pair(*args, face=face, **kwargs)


def test_module_error_inputs_dtype_mismatch(face: str) -> None:
    """Ports the forward error of ``module_error_inputs_torch_nn_RNN_GRU``: float64 input to
    a float32 module raises ``ValueError`` naming both dtypes."""
    model, _ = make_pair(3, 5, dtype=torch.float32, face=face)
    with pytest.raises(ValueError, match=r"float64.*float32|float32.*float64"):
        model(torch.randn(2, 4, 3, dtype=torch.float64))


def test_module_error_inputs_dtype_mismatch_is_also_a_type_error(face: str) -> None:
    """The same case is also the ``TypeError`` this package raised before (``lstm.DTypeError``
    is both), naming both dtypes."""
    model, _ = make_pair(3, 5, dtype=torch.float32, face=face)
    with pytest.raises(TypeError, match=r"dtype torch\.float32.*got torch\.float64"):
        model(torch.randn(2, 4, 3, dtype=torch.float64))
