"""Ports of the tests of ``nn.LSTMCell`` in PyTorch's ``test/test_nn.py`` and of its entry in
``torch/testing/_internal/common_modules.py``, against ``lstm.nn.LSTMCell`` called exactly as
upstream calls ``nn.LSTMCell``.

Upstream's regexes are nn.LSTMCell's wording (ATen's); ours name the class, the expected and
the given shape, so the error ports check the exception type (``lstm.ShapeError`` is both the
``RuntimeError`` upstream expects for sizes and the ``ValueError`` it expects for ranks) and
that the message names the argument.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lstm

GOOD_INPUT, GOOD_HX = (3, 10), (3, 20)
NO_BROADCASTING = {
    "hidden batch 1": (GOOD_INPUT, (1, 20)),
    "hidden features 1": (GOOD_INPUT, (3, 1)),
}


@pytest.mark.parametrize("case", list(NO_BROADCASTING))
@pytest.mark.parametrize("position", [0, 1])
def test_RNN_cell_no_broadcasting(case: str, position: int) -> None:
    """Ports ``TestNN.test_RNN_cell_no_broadcasting`` (LSTMCell): a state of batch 1 or of
    one feature is not broadcast, in either place of ``(h, c)``; it raises RuntimeError."""
    input_shape, bad_shape = NO_BROADCASTING[case]
    hx = [torch.randn(GOOD_HX), torch.randn(GOOD_HX)]
    hx[position] = torch.randn(bad_shape)
    with pytest.raises(RuntimeError, match=rf"hx\[{position}\]"):
        lstm.nn.LSTMCell(10, 20)(torch.randn(input_shape), (hx[0], hx[1]))


def test_RNN_cell_no_broadcasting_of_the_input() -> None:
    """The input case of ``TestNN.test_RNN_cell_no_broadcasting``: one feature is not
    broadcast to ten."""
    hx = (torch.randn(GOOD_HX), torch.randn(GOOD_HX))
    with pytest.raises(RuntimeError, match="input"):
        lstm.nn.LSTMCell(10, 20)(torch.randn(3, 1), hx)


@pytest.mark.parametrize("bias", [True, False])
def test_LSTM_cell(bias: bool) -> None:
    """Ports ``TestNN.test_LSTM_cell``: six steps fed back, then backward; and the same
    values as nn.LSTMCell with the same state dict."""
    x = torch.randn(3, 10)
    cell = lstm.nn.LSTMCell(10, 20, bias=bias)
    theirs = nn.LSTMCell(10, 20, bias=bias)
    theirs.load_state_dict(cell.state_dict())
    results = []
    for module in (cell, theirs):
        hx, cx = torch.ones(3, 20), torch.zeros(3, 20)
        for _ in range(6):
            hx, cx = module(x, (hx, cx))
        (hx + cx).sum().backward()
        results.append((hx, cx, *(p.grad for p in module.parameters())))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


def test_LSTM_cell_forward_input_size() -> None:
    """Ports ``TestNN.test_LSTM_cell_forward_input_size``."""
    with pytest.raises(RuntimeError, match=r"input of shape \(batch, 10\), got \(3, 11\)"):
        lstm.nn.LSTMCell(10, 20)(torch.randn(3, 11), (torch.randn(3, 20), torch.randn(3, 20)))


@pytest.mark.parametrize("position", [0, 1])
def test_LSTM_cell_forward_hidden_size(position: int) -> None:
    """Ports ``TestNN.test_LSTM_cell_forward_hidden_size``: 21 features in either place."""
    hx = [torch.randn(3, 20), torch.randn(3, 20)]
    hx[position] = torch.randn(3, 21)
    with pytest.raises(RuntimeError, match=rf"hx\[{position}\] of shape \(3, 20\)"):
        lstm.nn.LSTMCell(10, 20)(torch.randn(3, 10), (hx[0], hx[1]))


@pytest.mark.parametrize("engine", ["auto", "reference"])
def test_lstmcell_backward_only_one_output_grad(engine: str) -> None:
    """Ports ``TestNNDeviceType.test_lstmcell_backward_only_one_output_grad`` (CUDA-only
    upstream; its check is not CUDA's): backward from h alone, then from c alone, reaches
    the input both times (pytorch#11872)."""
    cell = lstm.nn.LSTMCell(2, 3).double()
    cell.engine = engine
    s = torch.randn(1, 2, dtype=torch.float64, requires_grad=True)
    for index in (0, 1):
        cell(s)[index].sum().backward()
        assert s.grad is not None
        assert s.grad.abs().sum() != 0


@pytest.mark.parametrize("bias", [None, True])
def test_module_inputs_no_batch_dim(bias: bool | None) -> None:
    """Ports ``module_inputs_torch_nn_LSTMCell`` with ``no_batch_dim_reference_lstmcell``:
    ``LSTMCell(5, 10)`` on an unbatched input and state equals the batch of one, squeezed,
    and nn.LSTMCell's result."""
    options = {} if bias is None else {"bias": bias}
    cell = lstm.nn.LSTMCell(5, 10, **options).double()
    x = torch.randn(5, dtype=torch.float64)
    hx = (torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64))
    h, c = cell(x, hx)
    h_batch, c_batch = cell(x[None], (hx[0][None], hx[1][None]))
    torch.testing.assert_close((h, c), (h_batch[0], c_batch[0]), rtol=0, atol=0)
    theirs = nn.LSTMCell(5, 10, **options).double()
    theirs.load_state_dict(cell.state_dict())
    torch.testing.assert_close((h, c), theirs(x, hx), rtol=0, atol=0)


ERROR_INPUTS = [
    ((3, 11), (3, 20), RuntimeError, r"input of shape \(batch, 10\), got \(3, 11\)"),
    ((3, 10), (3, 21), RuntimeError, r"hx\[0\] of shape \(3, 20\) .*got \(3, 21\)"),
    ((3, 10), (5, 20), RuntimeError, r"hx\[0\] of shape \(3, 20\) .*got \(5, 20\)"),
    ((3, 10), (3, 1, 1, 20), ValueError, r"hx\[0\] of shape \(3, 20\) .*got \(3, 1, 1, 20\)"),
]


@pytest.mark.parametrize(("input_shape", "hx_shape", "error", "message"), ERROR_INPUTS)
def test_module_error_inputs(
    input_shape: tuple[int, ...], hx_shape: tuple[int, ...], error: type[Exception], message: str
) -> None:
    """Ports ``module_error_inputs_torch_nn_LSTMCell``: the exception type upstream expects,
    the message naming the argument, the expected and the given shape."""
    hx = (torch.randn(hx_shape), torch.randn(hx_shape))
    with pytest.raises(error, match="^LSTMCell: expected " + message):
        lstm.nn.LSTMCell(10, 20)(torch.randn(input_shape), hx)


def test_zero_hidden_size_steps_as_nn_lstm_cell() -> None:
    """nn.LSTMCell builds with ``hidden_size=0`` and gives ``(batch, 0)`` states (the
    LSTMCell case that ``TestNN.test_RNN_cell_forward_zero_hidden_size`` leaves out)."""
    h, c = lstm.nn.LSTMCell(10, 0)(torch.randn(3, 10))
    assert h.shape == c.shape == (3, 0)
    assert nn.LSTMCell(10, 0)(torch.randn(3, 10))[0].shape == (3, 0)
