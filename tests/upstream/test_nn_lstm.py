"""Ports of the CPU tests of ``nn.LSTM`` in PyTorch's ``test/test_nn.py`` (``TestNN`` and
``TestNNDeviceType``, CPU only), each against ``lstm.LSTM`` built by ``make_lstm``.

Each test's docstring names the upstream test it ports. Upstream tests that loop over
``nn.RNN``/``nn.GRU``/``nn.LSTM`` are ported for the LSTM only. Tests that need CUDA, cuDNN or
several GPUs, or that read nn.LSTM's own parameter bookkeeping, are skipped here with their
reason and listed in docs/migration.md.
"""

from __future__ import annotations

import io
import itertools

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm
from upstream.factory import (
    make_lstm,
    make_pair,
)

INPUT, HIDDEN, LAYERS, BATCH, SEQ_LEN, BAD = 3, 5, 2, 4, 6, 7  # BAD: prime, divides nothing


def _resize(shape: tuple[int, ...], dim: int, size: int) -> tuple[int, ...]:
    return (*shape[:dim], size, *shape[dim + 1 :])


_INPUT_SHAPE = (SEQ_LEN, BATCH, INPUT)
_HIDDEN_SHAPE = (LAYERS, BATCH, HIDDEN)
_ARGS_CASES = {
    "input batch": (_resize(_INPUT_SHAPE, 1, BAD), _HIDDEN_SHAPE, _HIDDEN_SHAPE),
    "input size": (_resize(_INPUT_SHAPE, 2, BAD), _HIDDEN_SHAPE, _HIDDEN_SHAPE),
    "h batch": (_INPUT_SHAPE, _resize(_HIDDEN_SHAPE, 1, BAD), _HIDDEN_SHAPE),
    "c batch": (_INPUT_SHAPE, _HIDDEN_SHAPE, _resize(_HIDDEN_SHAPE, 1, BAD)),
    "h size": (_INPUT_SHAPE, _resize(_HIDDEN_SHAPE, 2, BAD), _HIDDEN_SHAPE),
    "c size": (_INPUT_SHAPE, _HIDDEN_SHAPE, _resize(_HIDDEN_SHAPE, 2, BAD)),
    "h layers": (_INPUT_SHAPE, _resize(_HIDDEN_SHAPE, 0, BAD), _HIDDEN_SHAPE),
    "c layers": (_INPUT_SHAPE, _HIDDEN_SHAPE, _resize(_HIDDEN_SHAPE, 0, BAD)),
}


@pytest.mark.parametrize("case", list(_ARGS_CASES))
def test_rnn_args_check(case: str) -> None:
    """Ports ``TestNN.test_rnn_args_check`` (LSTM mode): a wrong batch, feature or layer size
    in the input or either initial state raises ``RuntimeError``."""
    input_shape, hidden_shape, state_shape = _ARGS_CASES[case]
    model = make_lstm(INPUT, HIDDEN, LAYERS)
    hidden = (torch.randn(hidden_shape), torch.randn(state_shape))
    with pytest.raises(RuntimeError):
        model(torch.randn(input_shape), hidden)


@pytest.mark.parametrize("case", list(_ARGS_CASES))
def test_rnn_args_check_messages(case: str) -> None:
    """The cases of ``TestNN.test_rnn_args_check`` are also ``ValueError``s whose message names
    the class, the expected and the given shape (``lstm.ShapeError`` is both)."""
    input_shape, hidden_shape, state_shape = _ARGS_CASES[case]
    model = make_lstm(INPUT, HIDDEN, LAYERS)
    hidden = (torch.randn(hidden_shape), torch.randn(state_shape))
    with pytest.raises(ValueError, match=r"^LSTM: expected .*, got "):
        model(torch.randn(input_shape), hidden)


def test_projections_lstm_args_check() -> None:
    """Ports ``TestNN.test_projections_lstm_args_check``: with ``proj_size``, wrong shapes of
    the input, of h (proj_size features) or of c (hidden_size features) raise RuntimeError."""
    proj = 2
    model = make_lstm(INPUT, HIDDEN, LAYERS, proj_size=proj)
    h_shape, c_shape = (LAYERS, BATCH, proj), (LAYERS, BATCH, HIDDEN)
    cases = [
        (_resize(_INPUT_SHAPE, 1, BAD), h_shape, c_shape),
        (_INPUT_SHAPE, _resize(h_shape, 1, BAD), _resize(c_shape, 1, BAD)),
        (_resize(_INPUT_SHAPE, 2, BAD), h_shape, c_shape),
        (_INPUT_SHAPE, _resize(h_shape, 2, BAD), _resize(c_shape, 2, BAD)),
        (_INPUT_SHAPE, _resize(h_shape, 0, BAD), _resize(c_shape, 0, BAD)),
        (_INPUT_SHAPE, _resize(h_shape, 0, HIDDEN), c_shape),
        (_INPUT_SHAPE, _resize(h_shape, 0, BAD), c_shape),
        (_INPUT_SHAPE, h_shape, _resize(c_shape, 0, BAD)),
    ]
    for input_shape, hidden_shape, state_shape in cases:
        hidden = (torch.randn(hidden_shape), torch.randn(state_shape))
        with pytest.raises(RuntimeError):
            model(torch.randn(input_shape), hidden)


def test_rnn_initial_hidden_state() -> None:
    """Ports ``TestNN.test_rnn_initial_hidden_state`` (LSTM mode): zero initial states given
    explicitly give what no initial state gives (and what nn.LSTM gives)."""
    ours, theirs = make_pair(30, 20, 2)
    x = torch.randn(10, 32, 30)
    zeros = torch.zeros(2, 32, 20)
    output1, (hidden1, state1) = ours(x, (zeros, zeros))
    output2, (hidden2, state2) = ours(x)
    assert torch.equal(output1, output2)
    assert torch.equal(hidden1, hidden2)
    assert torch.equal(state1, state2)
    torch.testing.assert_close(output1, theirs(x)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_projections_lstm_initial_hidden_state(bidirectional: bool) -> None:
    """Ports ``TestNN.test_projections_lstm_initial_hidden_state``."""
    model = make_lstm(30, 20, 2, bidirectional=bidirectional, proj_size=10)
    directions = 2 if bidirectional else 1
    x = torch.randn(10, 32, 30)
    hidden = (torch.zeros(2 * directions, 32, 10), torch.zeros(2 * directions, 32, 20))
    output1, final1 = model(x, hidden)
    output2, final2 = model(x)
    assert torch.equal(output1, output2)
    assert all(torch.equal(a, b) for a, b in zip(final1, final2, strict=True))


def test_cudnn_forward_exception() -> None:
    """Ports ``TestNN.test_cudnn_forward_exception`` (LSTM case; it runs on the CPU too): a
    wrong initial state or input size raises RuntimeError naming the problem."""
    model = make_lstm(10, 20, batch_first=True)
    wrong_hidden = (torch.zeros(1, 2, 19), torch.zeros(1, 2, 19))
    with pytest.raises(RuntimeError, match=r"hidden.*got"):
        model(torch.randn(2, 3, 10), wrong_hidden)
    with pytest.raises(RuntimeError, match=r"input.*10.*got"):
        model(torch.randn(2, 3, 3))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_error_RNN_seq_len_zero(bidirectional: bool) -> None:
    """Ports ``TestNN.test_error_RNN_seq_len_zero`` (LSTM, CPU): a sequence length of 0 raises
    RuntimeError."""
    model = make_lstm(5, 6, bidirectional=bidirectional)
    with pytest.raises(RuntimeError, match="seq"):
        model(torch.ones(0, 10, 5))


def test_RNN_input_size_zero() -> None:
    """Ports ``TestNN.test_RNN_input_size_zero`` (LSTM, CPU): a batch of 0 sequences gives an
    empty output, and backward through it works."""
    model = make_lstm(input_size=3, hidden_size=4)
    output, _ = model(torch.zeros(5, 0, 3))
    assert output.shape == (5, 0, 4)
    output.sum().backward()


def _save_load(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(lstm.safe_globals()):
        loaded = torch.load(buffer)
    assert isinstance(loaded, nn.Module)
    return loaded


def _dropout_state_case(p: float, train: bool, flatten: bool) -> None:
    model = make_lstm(100, 100, 2, bias=False, dropout=p)
    model.train(train)
    x, hidden = torch.rand(1, 1, 100), (torch.rand(2, 1, 100), torch.rand(2, 1, 100))
    output1, final1 = model(x, hidden)
    output2, final2 = model(x, hidden)
    reloaded = _save_load(model)
    if flatten:
        reloaded.flatten_parameters()
    output3, final3 = reloaded(x, hidden)
    same = p == 0 or not train
    for a, b in [(output1, output2), (output1, output3), (final1[0], final2[0])]:
        assert torch.equal(a, b) is same
    assert torch.equal(final1[0], final3[0]) is same


@pytest.mark.parametrize(("p", "train"), list(itertools.product([0.0, 0.1234], [True, False])))
def test_RNN_dropout_state(p: float, train: bool) -> None:
    """Ports ``TestNN.test_RNN_dropout_state`` (cuDNN-gated upstream; the check is not
    cuDNN's) on the LSTM: dropout draws fresh masks per call in training only, and survives
    a whole-model save and load (here through ``lstm.safe_globals()``, not
    ``weights_only=False``). Without the ``flatten_parameters()`` call; see the next test."""
    _dropout_state_case(p, train, flatten=False)


def test_RNN_dropout_state_flatten_parameters() -> None:
    """Ports ``TestNN.test_RNN_dropout_state`` as written: it calls ``flatten_parameters()``
    on the loaded model."""
    _dropout_state_case(0.1234, True, flatten=True)


@pytest.mark.parametrize("train", [True, False])
def test_RNN_change_dropout(train: bool) -> None:
    """Ports ``TestNN.test_RNN_change_dropout`` (cuDNN-gated upstream) on the LSTM: changing
    ``dropout`` on a built module takes effect at the next call; 0, 1 and eval mode are
    deterministic, other values are not."""
    torch.manual_seed(0)
    model = make_lstm(100, 100, 2, dropout=0.0)
    model.train(train)
    x = torch.rand(1, 2, 100)
    for p in (0.0, 0.5, 0.0, 0.7, 0.2, 1.0, 0.0):
        model.dropout = p
        output1, _ = model(x)
        output2, _ = model(x)
        deterministic = p in (0.0, 1.0) or not train
        assert torch.equal(output1, output2) is deterministic, p


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("p", [0.0, 1.0])
def test_RNN_dropout(p: float, train: bool) -> None:
    """Ports ``TestNN.test_RNN_dropout`` (an ``nn.RNN`` test upstream, cuDNN-gated) to the
    LSTM: built with dropout 0 or 1 between its two layers, in training and eval mode, it
    gives exactly what nn.LSTM gives (both cases are deterministic)."""
    ours, theirs = make_pair(10, 8, 2, bias=False, dropout=p)
    ours.train(train)
    theirs.train(train)
    x = torch.ones(3, 1, 10)
    output, (hidden, state) = ours(x)
    expected, (expected_hidden, expected_state) = theirs(x)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(hidden, expected_hidden, rtol=0, atol=1e-6)
    torch.testing.assert_close(state, expected_state, rtol=0, atol=1e-6)


def test_positional_options_as_in_nn_lstm() -> None:
    """``nn.LSTM(input_size, hidden_size, num_layers, bias, batch_first, dropout,
    bidirectional)``, as test_nn.py calls it throughout (``nn.LSTM(30, 20, 2)``), on
    ``lstm.LSTM`` directly rather than through the factory."""
    model = lstm.LSTM(30, 20, 2, True, False, 0.0, True)
    assert (model.num_layers, model.batch_first, model.bidirectional) == (2, False, True)


def test_rnn_weight_norm() -> None:
    """Ports ``TestNNDeviceType.test_rnn_weight_norm`` to our parameter layout: upstream puts
    weight norm on ``weight_hh_l0`` and counts ``_flat_weights``; here it goes on ``h2h``'s
    ``weight`` (nn.LSTM's names are read-only copies on ``lstm.LSTM``) with the
    parametrization API that replaces the deprecated ``nn.utils.weight_norm``; it leaves the
    output unchanged, and removing it restores the parameters."""
    model = make_lstm(32, 32)
    x = torch.randn(4, 2, 32)
    expected, _ = model(x)
    names = sorted(name for name, _ in model.named_parameters())
    nn.utils.parametrizations.weight_norm(model.h2h, name="weight")
    assert "h2h.parametrizations.weight.original0" in dict(model.named_parameters())
    torch.testing.assert_close(model(x)[0], expected, rtol=0, atol=1e-6)
    nn.utils.parametrize.remove_parametrizations(model.h2h, "weight")
    assert sorted(name for name, _ in model.named_parameters()) == names
    torch.testing.assert_close(model(x)[0], expected, rtol=0, atol=1e-6)


def test_rnn_retain_variables() -> None:
    """Ports ``TestNNDeviceType.test_rnn_retain_variables`` (LSTM, float64): backward through
    the same graph three times (``retain_graph=True``) gives the same gradients each time."""
    model = make_lstm(10, 20, num_layers=2).double()
    x = torch.randn(5, 6, 10, dtype=torch.float64, requires_grad=True)
    output, _ = model(x)
    gradients: list[list[Tensor]] = []
    for _ in range(3):
        model.zero_grad()
        x.grad = None
        output.sum().backward(retain_graph=True)
        assert x.grad is not None
        gradients.append([x.grad.clone()] + [p.grad.clone() for p in model.parameters()])  # type: ignore[union-attr]
    for later in gradients[1:]:
        assert all(torch.equal(a, b) for a, b in zip(gradients[0], later, strict=True))


def test_variable_sequence() -> None:
    """Ports ``TestNNDeviceType.test_variable_sequence`` (float64): a bidirectional 2-layer
    LSTM over a padded, packed batch gives, per sequence, the outputs, final states and input
    gradients of running that sequence alone; and nn.LSTM's packed results."""
    lengths = [4, 1, 3, 2]
    ours, theirs = make_pair(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    padded = torch.randn(max(lengths), len(lengths), 3, dtype=torch.float64, requires_grad=True)
    packed = pack_padded_sequence(padded, lengths, enforce_sorted=False)
    output_packed, (hidden, state) = ours(packed)
    output, _ = pad_packed_sequence(output_packed)
    grad_output = torch.randn_like(output)
    (output * grad_output).sum().backward()
    expected_packed, (expected_hidden, expected_state) = theirs(packed)
    torch.testing.assert_close(output, pad_packed_sequence(expected_packed)[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(hidden, expected_hidden, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, expected_state, rtol=0, atol=1e-12)
    assert padded.grad is not None
    for index, length in enumerate(lengths):
        alone = padded[:length, index : index + 1].detach().requires_grad_()
        output_alone, (hidden_alone, state_alone) = ours(alone)
        (output_alone * grad_output[:length, index : index + 1]).sum().backward()
        torch.testing.assert_close(output[:length, index], output_alone[:, 0], rtol=0, atol=1e-12)
        assert torch.all(output[length:, index] == 0)
        torch.testing.assert_close(hidden[:, index], hidden_alone[:, 0], rtol=0, atol=1e-12)
        torch.testing.assert_close(state[:, index], state_alone[:, 0], rtol=0, atol=1e-12)
        assert alone.grad is not None
        torch.testing.assert_close(
            padded.grad[:length, index], alone.grad[:, 0], rtol=0, atol=1e-12
        )


@pytest.mark.parametrize("bias", [True, False])
def test_LSTM_grad_and_gradgrad(bias: bool) -> None:
    """Ports ``TestNNDeviceType.test_LSTM_grad_and_gradgrad`` (CPU, float64): gradcheck and
    gradgradcheck of the output and final states with respect to the input."""
    size = 4
    model = make_lstm(size, size, bias=bias, dtype=torch.float64)
    x = torch.rand(1, 3, size, dtype=torch.float64, requires_grad=True)

    def flat_outputs(inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        output, (hidden, state) = model(inputs)
        return output, hidden, state

    assert torch.autograd.gradcheck(flat_outputs, (x,), check_batched_grad=False)
    assert torch.autograd.gradgradcheck(flat_outputs, (x,), check_batched_grad=False)


def test_LSTM_differentiable_backward_using_oneDNN() -> None:
    """Ports ``TestNNDeviceType.test_LSTM_differentiable_backward_using_oneDNN``: a gradient
    taken with ``create_graph=True`` is itself differentiable (double backward through the
    kernel nn.LSTM uses on the CPU), and equals nn.LSTM's, first and second order."""
    ours, theirs = make_pair(10, 20, num_layers=2)
    x = torch.randn(5, 3, 10)
    results = []
    for model in (ours, theirs):
        inputs = x.clone().requires_grad_()
        output, _ = model(inputs)
        (grad_x,) = torch.autograd.grad(output.sum(), inputs, create_graph=True)
        (grad_grad,) = torch.autograd.grad(grad_x.pow(2).sum(), inputs)
        results.append((grad_x.detach(), grad_grad))
    for ours_value, theirs_value in zip(*results, strict=True):
        torch.testing.assert_close(ours_value, theirs_value, rtol=1e-5, atol=1e-6)


_SKIPPED = {
    "test_RNN_cpu_vs_cudnn_no_dropout": "compares CPU with cuDNN: needs CUDA",
    "test_RNN_cpu_vs_cudnn_with_dropout": "compares CPU with cuDNN: needs CUDA",
    "test_RNN_cudnn_weight_norm": "cuDNN weight norm on weight_hh_l0: needs CUDA",
    "test_cudnn_weight_format": "cuDNN's flat weight buffer: needs CUDA; no flat buffer here",
    "test_cudnn_weight_tying": "ties bias_ih_l0_reverse to bias_ih_l0 by assignment: needs "
    "CUDA, and nn.LSTM's names are read-only copies here",
    "test_partial_flat_weights": "deletes weight_hh_l0 and moves to CUDA: needs CUDA, and the "
    "parameter is h2h.weight here",
    "test_rnn_check_device": "input and weights on different GPUs: needs two GPUs",
    "test_projections_lstm_check_device": "needs two GPUs",
    "test_rnn_fused": "cuDNN-fused vs unfused: needs CUDA",
}


@pytest.mark.parametrize("upstream", list(_SKIPPED))
def test_not_ported(upstream: str) -> None:
    """Upstream LSTM tests not ported, each with its reason (docs/migration.md lists them)."""
    pytest.skip(f"{upstream}: {_SKIPPED[upstream]}")
