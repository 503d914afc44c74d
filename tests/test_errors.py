"""Bad input gets a ValueError or TypeError naming what was expected and what was given."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from lstm import CELLS, LSTM, Recurrent, get_cell

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
        ({"dropout": -0.1, "num_layers": 2}, ValueError, r"expected dropout in \[0, 1\), got -0.1"),
        ({"dropout": 1.0, "num_layers": 2}, ValueError, r"expected dropout in \[0, 1\), got 1.0"),
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
            "forget_bias=1.0 needs bias=True, got bias=False",
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
        ([5, 3], TypeError, "expected lengths to be a 1-D integer torch.Tensor, got list"),
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
            return x.new_zeros(1, x.shape[0], self.hidden_size), x.new_zeros(
                x.shape[0], self.hidden_size
            )

    with pytest.raises(
        ValueError, match=r"Broken.init_hidden: expected hidden of shape \(2, 4\), got \(1, 2, 4\)"
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
        match=r"expected a non-empty dict of name -> nn\.Module or nn\.Parameter, got list",
    ):
        NotADict(3, 4)


def test_base_class_asks_for_the_cell_methods() -> None:
    with pytest.raises(NotImplementedError, match="Recurrent must define build_cell"):
        Recurrent(3, 4)
