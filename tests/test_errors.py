"""Bad input gets a ValueError or TypeError naming what was expected and what was given."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.overrides import TorchFunctionMode

from lstm import CELLS, LSTM, SLSTM, ArrayLSTM, Recurrent, get_cell

# ------------------------------------------------------------------ constructor


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"input_size": 0}, ValueError, "expected input_size >= 1, got 0"),
        ({"input_size": -3}, ValueError, "expected input_size >= 1, got -3"),
        ({"input_size": 3.0}, TypeError, "expected input_size to be an int, got float 3.0"),
        ({"input_size": "3"}, TypeError, "expected input_size to be an int, got str '3'"),
        ({"input_size": True}, TypeError, "expected input_size to be an int, got bool True"),
        ({"hidden_size": 0}, ValueError, "expected hidden_size >= 1, got 0"),
        ({"hidden_size": None}, TypeError, "expected hidden_size to be an int, got NoneType None"),
        ({"num_layers": 0}, ValueError, "expected num_layers >= 1, got 0"),
        ({"num_layers": 1.5}, TypeError, "expected num_layers to be an int, got float 1.5"),
        ({"dropout": -0.1, "num_layers": 2}, ValueError, r"expected dropout in \[0, 1\], got -0.1"),
        ({"dropout": 1.5, "num_layers": 2}, ValueError, r"expected dropout in \[0, 1\], got 1.5"),
        (
            {"recurrent_dropout": 1.0},
            ValueError,
            r"expected recurrent_dropout in \[0, 1\), got 1.0",
        ),
        (
            {"dropout": "0.1", "num_layers": 2},
            TypeError,
            "expected dropout to be a float, got str '0.1'",
        ),
        ({"bias": "yes"}, TypeError, "expected bias to be a bool, got str 'yes'"),
        ({"batch_first": 1}, TypeError, "expected batch_first to be a bool, got int 1"),
        (
            {"bidirectional": None},
            TypeError,
            "expected bidirectional to be a bool, got NoneType None",
        ),
        (
            {"forget_bias": 1.0, "bias": False},
            ValueError,
            "expected bias=True with forget_bias=1.0, got bias=False",
        ),
        (
            {"forget_bias": "1"},
            TypeError,
            "expected forget_bias to be a float or None, got str '1'",
        ),
        ({"forget_bias": float("inf")}, ValueError, "expected a finite forget_bias, got inf"),
        (
            {"dtype": torch.int64},
            TypeError,
            "expected dtype to be a floating-point torch.dtype, got torch.int64",
        ),
    ],
)
def test_constructor_rejects(kwargs: dict[str, Any], error: type[Exception], pattern: str) -> None:
    arguments: dict[str, Any] = {"input_size": 3, "hidden_size": 4}
    arguments.update(kwargs)
    with pytest.raises(error, match=f"^LSTM: {pattern}$"):
        LSTM(arguments.pop("input_size"), arguments.pop("hidden_size"), **arguments)


def test_dropout_with_one_layer_warns() -> None:
    with pytest.warns(UserWarning, match="no effect with num_layers=1"):
        LSTM(3, 4, dropout=0.5)


def test_unknown_cell_name() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(f"unknown cell 'gru'; expected one of {sorted(CELLS)}"),
    ):
        get_cell("gru")


# ------------------------------------------------------------------ input


@pytest.fixture
def model() -> LSTM:
    return LSTM(3, 4)


@pytest.mark.parametrize(
    ("x", "error", "pattern"),
    [
        ([[0.0, 1.0, 2.0]], TypeError, "expected input to be a torch.Tensor, got list"),
        (
            torch.ones(2, 5, 3, dtype=torch.int64),
            TypeError,
            "expected input to be a floating-point tensor, got dtype torch.int64",
        ),
        (
            torch.randn(3),
            ValueError,
            r"expected input of rank 3 \(batch, seq_len, input_size\) or rank 2 "
            r"\(seq_len, input_size\), got rank 1 with shape \(3,\)",
        ),
        (
            torch.randn(1, 2, 5, 3),
            ValueError,
            r"expected input of rank 3 .* got rank 4 with shape \(1, 2, 5, 3\)",
        ),
        (
            torch.randn(2, 5, 4),
            ValueError,
            r"expected input of shape \(batch, seq_len, 3\), got \(2, 5, 4\)",
        ),
        (torch.randn(5, 4), ValueError, r"expected input of shape \(seq_len, 3\), got \(5, 4\)"),
        (
            torch.randn(2, 0, 3),
            ValueError,
            r"expected seq_len >= 1, got an input of shape \(2, 0, 3\)",
        ),
        (
            torch.randn(2, 5, 3, dtype=torch.float64),
            TypeError,
            "expected input of dtype torch.float32 \\(the parameters' dtype\\), got torch.float64",
        ),
    ],
)
def test_forward_rejects_input(model: LSTM, x: Any, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=f"^LSTM: {pattern}$"):
        model(x)


def test_sequence_first_layout_is_named() -> None:
    with pytest.raises(
        ValueError, match=r"expected input of shape \(seq_len, batch, 3\), got \(5, 2, 4\)"
    ):
        LSTM(3, 4, batch_first=False)(torch.randn(5, 2, 4))
    with pytest.raises(
        ValueError, match=r"expected seq_len >= 1, got an input of shape \(0, 2, 3\)"
    ):
        LSTM(3, 4, batch_first=False)(torch.randn(0, 2, 3))


@pytest.mark.parametrize(
    ("hidden", "error", "pattern"),
    [
        (
            torch.zeros(1, 2, 4),
            TypeError,
            "expected hidden to be a \\(hidden, state\\) tuple, got Tensor",
        ),
        (
            (torch.zeros(1, 2, 4),) * 3,
            TypeError,
            r"expected hidden to be a \(hidden, state\) tuple, got tuple of length 3",
        ),
        (
            (torch.zeros(2, 2, 4), torch.zeros(1, 2, 4)),
            ValueError,
            r"expected hidden of shape \(1, 2, 4\) or \(2, 4\) .*got \(2, 2, 4\)",
        ),
        (
            (torch.zeros(1, 3, 4), torch.zeros(1, 2, 4)),
            ValueError,
            r"expected hidden of shape \(1, 2, 4\).*got \(1, 3, 4\)",
        ),
        (
            (torch.zeros(2, 5), torch.zeros(2, 4)),
            ValueError,
            r"expected hidden of shape .*got \(2, 5\)",
        ),
        (
            (torch.zeros(1, 2, 4), torch.zeros(1, 2, 3)),
            ValueError,
            r"expected state of shape \(1, 2, 4\) or \(2, 4\) .*got \(1, 2, 3\)",
        ),
        (
            (torch.zeros(1, 2, 4, dtype=torch.float64), torch.zeros(1, 2, 4)),
            TypeError,
            "expected hidden of dtype torch.float32 \\(the input's\\), got torch.float64",
        ),
        (
            (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4, dtype=torch.int32)),
            TypeError,
            "expected state to be a floating-point tensor, got dtype torch.int32",
        ),
        (
            (None, torch.zeros(1, 2, 4)),
            TypeError,
            "expected hidden to be a torch.Tensor, got NoneType",
        ),
    ],
)
def test_forward_rejects_hidden(
    model: LSTM, hidden: Any, error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=f"^LSTM: {pattern}"):
        model(torch.randn(2, 5, 3), hidden)


def test_page_form_of_hidden_needs_a_single_cell() -> None:
    stacked = LSTM(3, 4, num_layers=2)
    with pytest.raises(
        ValueError,
        match=r"expected hidden of shape \(2, 2, 4\) "
        r"\(num_layers\*num_directions, batch, hidden_size\), got \(2, 4\)",
    ):
        stacked(torch.randn(2, 5, 3), (torch.zeros(2, 4), torch.zeros(2, 4)))


def test_unbatched_input_needs_unbatched_hidden(model: LSTM) -> None:
    with pytest.raises(
        ValueError,
        match=r"expected hidden of shape \(1, 4\) .*for unbatched input, got \(1, 1, 4\)",
    ):
        model(torch.randn(5, 3), (torch.zeros(1, 1, 4), torch.zeros(1, 1, 4)))


@pytest.mark.parametrize(
    ("lengths", "error", "pattern"),
    [
        (
            (5, 3.0),
            TypeError,
            "expected lengths to be a list or tuple of ints, got float 3.0 at index 1",
        ),
        (
            torch.tensor([5.0, 3.0]),
            TypeError,
            "expected lengths to have an integer dtype, got torch.float32",
        ),
        (
            torch.tensor([True, True]),
            TypeError,
            "expected lengths to have an integer dtype, got torch.bool",
        ),
        (
            torch.tensor([[5, 3]]),
            ValueError,
            r"expected lengths of shape \(2,\) \(one entry per sequence\), got \(1, 2\)",
        ),
        (
            torch.tensor([5, 3, 2]),
            ValueError,
            r"expected lengths of shape \(2,\) \(one entry per sequence\), got \(3,\)",
        ),
        (
            torch.tensor([5, 0]),
            ValueError,
            r"expected every length in 1..5 \(the padded seq_len\), got values in 0..5",
        ),
        (
            torch.tensor([-1, 3]),
            ValueError,
            r"expected every length in 1..5 \(the padded seq_len\), got values in -1..3",
        ),
        (
            torch.tensor([6, 3]),
            ValueError,
            r"expected every length in 1..5 \(the padded seq_len\), got values in 3..6",
        ),
    ],
)
def test_forward_rejects_lengths(
    model: LSTM, lengths: Any, error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=f"^LSTM: {pattern}$"):
        model(torch.randn(2, 5, 3), lengths=lengths)


def test_packed_sequence_refuses_extra_lengths(model: LSTM) -> None:
    packed = pack_padded_sequence(torch.randn(2, 5, 3), torch.tensor([5, 3]), batch_first=True)
    with pytest.raises(
        ValueError,
        match="a PackedSequence carries its own lengths; expected lengths=None, got a Tensor",
    ):
        model(packed, lengths=torch.tensor([5, 3]))


def test_packed_sequence_of_wrong_width(model: LSTM) -> None:
    packed = pack_padded_sequence(torch.randn(2, 5, 4), torch.tensor([5, 3]), batch_first=True)
    with pytest.raises(
        ValueError,
        match=r"^LSTM: expected PackedSequence data of shape \(total_steps, 3\), got \(8, 4\)$",
    ):
        model(packed)


def test_layer_cell_index_is_checked() -> None:
    model = LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"expected layer in 0..1, got 2"):
        model.layer_cell(2)
    with pytest.raises(ValueError, match=r"expected direction in 0..0, got 1"):
        model.cell_parts(0, 1)


# ------------------------------------------------------------------ broken cells


def test_forward_cell_returning_wrong_shape_is_named() -> None:
    class Broken(LSTM):
        def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
            hidden, state = super().forward_cell(x, hidden, state)
            return hidden[:, :2], state

    with pytest.raises(
        ValueError, match=r"Broken.forward_cell: expected hidden of shape \(2, 4\), got \(2, 2\)"
    ):
        Broken(3, 4)(torch.randn(2, 5, 3))


def test_init_hidden_returning_wrong_shape_is_named() -> None:
    class Broken(LSTM):
        def init_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
            # (1, batch, hidden_size), the original's layout, is taken (tests/test_dropin.py).
            return x.new_zeros(x.shape[0], self.hidden_size + 1), x.new_zeros(
                x.shape[0], self.hidden_size
            )

    with pytest.raises(
        ValueError, match=r"Broken.init_hidden: expected hidden of shape \(2, 4\), got \(2, 5\)"
    ):
        Broken(3, 4)(torch.randn(2, 5, 3))


def test_build_cell_must_return_consistent_parts() -> None:
    class Shifting(LSTM):
        def build_cell(self, input_size: int, hidden_size: int, **factory: Any) -> dict[str, Any]:
            parts = super().build_cell(input_size, hidden_size, **factory)
            return parts if input_size == 3 else {"other": parts["i2h"]}

    with pytest.raises(
        ValueError,
        match=r"expected the same names for every cell, got \('other',\) after \('i2h', 'h2h'\)",
    ):
        Shifting(3, 4, num_layers=2)

    class NotADict(LSTM):
        def build_cell(self, input_size: int, hidden_size: int, **factory: Any) -> Any:
            return [nn.Linear(input_size, hidden_size)]

    with pytest.raises(
        TypeError,
        match=r"expected a non-empty dict of name -> nn\.Module, nn\.Parameter or None, got list",
    ):
        NotADict(3, 4)


def test_base_class_asks_for_the_cell_methods() -> None:
    with pytest.raises(NotImplementedError, match="Recurrent must define build_cell"):
        Recurrent(3, 4)


# ------------------------------------------------------------------ found by test_fuzz_errors.py


@pytest.mark.parametrize(
    ("shape", "batch_first", "lengths"),
    [
        ((2, 0, 3), True, None),
        ((0, 2, 3), False, None),
        ((0, 0, 3), True, torch.zeros(0, dtype=torch.int64)),
    ],
)
def test_empty_sequence_is_refused(
    shape: tuple[int, ...], batch_first: bool, lengths: Tensor | None
) -> None:
    # It used to fail inside torch (reshape of 0 elements); an empty batch is fine now, as
    # in nn.LSTM (tests/test_dropin.py), an empty sequence is refused, as in nn.LSTM.
    pattern = re.escape(f"LSTM: expected seq_len >= 1, got an input of shape {shape}")
    with pytest.raises(ValueError, match=f"^{pattern}$"):
        LSTM(3, 4, batch_first=batch_first)(torch.zeros(shape), lengths=lengths)


def test_input_must_be_dense(model: LSTM) -> None:
    with pytest.raises(
        TypeError,
        match=r"^LSTM: expected input to be a dense \(strided\) tensor, "
        r"got layout torch\.sparse_coo$",
    ):
        model(torch.randn(2, 5, 3).to_sparse())
    nested = torch.nested.nested_tensor([torch.randn(2, 3), torch.randn(4, 3)], layout=torch.jagged)
    with pytest.raises(
        TypeError, match=r"^LSTM: expected input to be a dense \(strided\) tensor, got a nested"
    ):
        model(nested)


def test_lengths_on_the_meta_device_are_refused(model: LSTM) -> None:
    with pytest.raises(
        ValueError, match=r"^LSTM: expected lengths with values, got a tensor on the meta device$"
    ):
        model(torch.randn(2, 5, 3), lengths=torch.tensor([5, 3], device="meta"))


@pytest.mark.parametrize(
    ("device", "error", "pattern"),
    [
        ("gpu", ValueError, r"expected device to be a device torch knows, got 'gpu' \(.*gpu"),
        (-1, ValueError, r"expected device to be a device torch knows, got -1 \(.*negative"),
        (
            2**64,
            ValueError,
            r"expected device to be a device torch knows, got 18446744073709551616",
        ),
        (3.5, TypeError, r"expected device to be a torch.device, str or int, got float 3.5"),
        (True, TypeError, r"expected device to be a torch.device, str or int, got bool True"),
    ],
)
def test_constructor_rejects_unknown_devices(
    device: Any, error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=f"^LSTM: {pattern}"):
        LSTM(3, 4, device=device)


def test_engine_that_is_not_a_string(model: LSTM) -> None:
    model.engine = np.zeros(2)  # type: ignore[assignment]
    # `in ENGINES` used to compare the array element-wise and raise numpy's own ValueError.
    with pytest.raises(
        ValueError, match=r"^LSTM: expected engine in .*, got array\(\[0\., 0\.\]\)$"
    ):
        model(torch.randn(2, 5, 3))


def test_state_tuple_of_the_wrong_length_is_named() -> None:
    zeros = torch.zeros(1, 2, 4)
    with pytest.raises(
        TypeError,
        match=r"^SLSTM: expected state to be a tuple of 3 tensors, got tuple of length 2$",
    ):
        SLSTM(3, 4)(torch.randn(2, 5, 3), (zeros, (zeros, zeros)))


# forward_cell checked nothing: wrong sizes failed inside torch's matrix product, and some
# shapes and dtypes were silently broadcast or promoted.
X, HIDDEN_4, STATE_4 = torch.randn(2, 3), torch.zeros(2, 4), torch.zeros(2, 4)


@pytest.mark.parametrize(
    ("arguments", "error", "pattern"),
    [
        pytest.param(
            (torch.randn(2, 5), HIDDEN_4, STATE_4),
            ValueError,
            r"expected x of shape \(batch, 3\), got \(2, 5\)",
            id="x width",
        ),
        pytest.param(
            (torch.randn(2, 1, 3), HIDDEN_4, STATE_4),
            ValueError,
            r"expected x of shape \(batch, 3\), got \(2, 1, 3\)",
            id="x rank, was broadcast",
        ),
        pytest.param(
            (X, torch.zeros(3, 4), STATE_4),
            ValueError,
            r"expected hidden of shape \(2, 4\), got \(3, 4\)",
            id="hidden batch",
        ),
        pytest.param(
            (X, HIDDEN_4, torch.zeros(4)),
            ValueError,
            r"expected state of shape \(2, 4\), got \(4,\)",
            id="state rank, was broadcast",
        ),
        pytest.param(
            (X.double(), HIDDEN_4, STATE_4),
            TypeError,
            r"expected x of dtype torch.float32 \(the parameters' dtype\), got torch.float64",
            id="x dtype",
        ),
        pytest.param(
            (X, HIDDEN_4, STATE_4.double()),
            TypeError,
            r"expected state of dtype torch.float32 \(the parameters' dtype\), got torch.float64",
            id="state dtype, was promoted",
        ),
        pytest.param(
            (torch.ones(2, 3, dtype=torch.int64), HIDDEN_4, STATE_4),
            TypeError,
            r"expected x to be a floating-point tensor, got dtype torch.int64",
            id="integer x",
        ),
        pytest.param(
            (torch.randn(2, 3, device="meta"), HIDDEN_4, STATE_4),
            ValueError,
            r"expected x on cpu \(where the parameters are\), got meta",
            id="x device",
        ),
        pytest.param(
            (X, HIDDEN_4, None),
            TypeError,
            r"expected state to be a torch.Tensor, got NoneType",
            id="no state",
        ),
    ],
)
def test_forward_cell_checks_its_arguments(
    model: LSTM, arguments: tuple[Any, ...], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=f"^LSTM.forward_cell: {pattern}$"):
        model.forward_cell(*arguments)


def test_forward_cell_knows_each_cells_shapes() -> None:
    x, zeros = torch.randn(2, 3), torch.zeros(2, 4)
    with pytest.raises(
        ValueError,
        match=r"^ArrayLSTM.forward_cell: expected state of shape \(5, 2, 4\), got \(2, 4\)$",
    ):
        ArrayLSTM(3, 4, k=5).forward_cell(x, zeros, zeros)
    with pytest.raises(
        TypeError,
        match=r"^SLSTM.forward_cell: expected state to be a tuple of 3 tensors, "
        r"got tuple of length 2$",
    ):
        SLSTM(3, 4).forward_cell(x, zeros, (zeros, zeros))
    deeper = LSTM(3, 4, num_layers=2, bidirectional=True).layer_cell(1, 1)
    with pytest.raises(
        ValueError, match=r"^LSTM.forward_cell: expected x of shape \(batch, 8\), got \(2, 3\)$"
    ):
        deeper.forward_cell(x, zeros, zeros)


class _TorchCalls(TorchFunctionMode):
    """Counts the torch functions called inside it, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.calls[getattr(func, "__name__", repr(func))] += 1
        return func(*args, **(kwargs or {}))


def test_time_loop_skips_forward_cell_checks() -> None:
    """forward checks its arguments once; checking every step again cost ~15 µs a step.

    Observed from outside: each tensor check asks torch.is_floating_point. A direct call of
    forward_cell asks it of x, hidden and state; a forward asks it of the input once, however
    many steps the time loop runs.
    """
    model = LSTM(3, 4, num_layers=2, bidirectional=True)
    model.engine = "reference"
    checks = []
    for seq_len in (4, 8):
        with _TorchCalls() as counted:
            model(torch.randn(2, seq_len, 3))
        checks.append(counted.calls["is_floating_point"])
    assert checks == [1, 1]  # the input, once, for 16 or 32 steps of forward_cell
    with _TorchCalls() as counted:
        model.forward_cell(torch.randn(2, 3), torch.zeros(2, 4), torch.zeros(2, 4))
    assert counted.calls["is_floating_point"] == 3  # x, hidden, state
