"""The engines (``"auto"``, the fast path; ``"hoisted"``; ``"reference"``) agree, and the fast
path never runs where it must not.

Agreement is exact to 1e-10 in float64: outputs, final states and the gradients of a random
projection of them with respect to the input and every parameter. Which engine ran is
observed from outside: calls of ``torch.lstm`` (the kernel of the fast path) and of each
``nn.Linear`` (``linear_calls``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from builders import DOUBLE, close, gradients
from lstm import LSTM
from lstm.cells.lstm import PACKED_TRAINING_MAX_LEN
from pairwise import case_id, pairwise, product, unmet_pairs
from toy_cells import CoupledGateLSTM

LENGTHS = torch.tensor([6, 2, 5, 1])


def _run(
    model: LSTM, x: Tensor, hidden: Any, kind: str, lengths: Tensor = LENGTHS
) -> tuple[Tensor, Tensor, Tensor]:
    if kind == "lengths":
        out, (h, c) = model(x, hidden, lengths=lengths)
    elif kind == "packed":
        out, (h, c) = model(
            pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), hidden
        )
        out = out.data
    else:
        out, (h, c) = model(x, hidden)
    return out, h, c


def assert_engines_agree(
    cls: type[LSTM],
    engine: str,
    kind: str,
    hidden: Any = None,
    x: Tensor | None = None,
    lengths: Tensor = LENGTHS,
    **options: Any,
) -> None:
    """``engine`` and the reference path: same outputs, states and gradients, to 1e-10."""
    model = cls(3, 5, dtype=DOUBLE, **options)
    reference = cls(3, 5, dtype=DOUBLE, **options)
    reference.load_state_dict(model.state_dict())
    model.engine, reference.engine = engine, "reference"
    x = torch.randn(4, 6, 3, dtype=DOUBLE) if x is None else x
    x_model, x_reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = _run(model, x_model, hidden, kind, lengths)
    want = _run(reference, x_reference, hidden, kind, lengths)
    close(got, want, atol=1e-10)
    close(
        gradients(got, [x_model, *model.parameters()]),
        gradients(want, [x_reference, *reference.parameters()]),
        atol=1e-10,
    )


# The fast path runs its own loop over layers, directions and ragged lengths: those are
# crossed in full (``ragged``: lengths tensor or PackedSequence, else a full batch). A
# PackedSequence becomes a padded batch with lengths before any engine runs, and bias=False
# only drops the bias terms, which no loop depends on: every value of those meets every
# value of every other axis (pairwise).
FULL_MATRIX = [
    case
    for case in product(
        num_layers=[1, 2, 3],
        bidirectional=[False, True],
        ragged=[False, True],
        kind=["full", "lengths", "packed"],
        bias=[True, False],
    )
    if case["ragged"] == (case["kind"] != "full")
]
MATRIX = pairwise(FULL_MATRIX, crossed=["num_layers", "bidirectional", "ragged"])


def test_the_engine_matrix_meets_every_pair() -> None:
    assert len(FULL_MATRIX) == 36  # the matrix this file once ran in full
    assert unmet_pairs(MATRIX, FULL_MATRIX) == set()
    assert len(MATRIX) == 12  # 3 layer counts x 2 directions x ragged or not


@pytest.mark.parametrize("case", MATRIX, ids=case_id)
def test_fast_path_matches_reference_path(case: dict[str, Any]) -> None:
    num_layers, bidirectional, _, kind, bias = case.values()
    cells = num_layers * (2 if bidirectional else 1)
    hidden = (torch.randn(cells, 4, 5, dtype=DOUBLE), torch.randn(cells, 4, 5, dtype=DOUBLE))
    options = {"num_layers": num_layers, "bidirectional": bidirectional, "bias": bias}
    assert_engines_agree(LSTM, "auto", kind, hidden, **options)


def test_fast_path_in_float32_agrees_to_float32_precision() -> None:
    fast = LSTM(16, 32, num_layers=2, bidirectional=True)
    reference = LSTM(16, 32, num_layers=2, bidirectional=True)
    reference.load_state_dict(fast.state_dict())
    reference.engine = "reference"
    x = torch.randn(8, 20, 16)
    torch.testing.assert_close(
        fast(x, lengths=torch.arange(20, 12, -1)),
        reference(x, lengths=torch.arange(20, 12, -1)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_fast_path_is_taken_by_default(torch_lstm_calls: list[int]) -> None:
    model = LSTM(3, 4, num_layers=2, bidirectional=True)
    model(torch.randn(2, 5, 3))
    model(torch.randn(2, 5, 3), lengths=torch.tensor([5, 3]))
    assert len(torch_lstm_calls) == 2
    model.engine = "reference"
    model(torch.randn(2, 5, 3))
    assert len(torch_lstm_calls) == 2


def test_long_ragged_batches_that_need_gradients_step_instead(
    torch_lstm_calls: list[int], linear_calls: Counter[int]
) -> None:
    # The kernel's packed backward costs seq_len x total steps (PACKED_TRAINING_MAX_LEN); the
    # hoisted per-step path is linear. Short, full-length or inference batches keep the kernel.
    model = LSTM(3, 4)
    limit = PACKED_TRAINING_MAX_LEN
    long = limit + 1
    model(torch.randn(2, long, 3), lengths=torch.tensor([long, 3]))
    assert len(torch_lstm_calls) == 0
    assert linear_calls[id(model.i2h)] == 1  # hoisted: one i2h product for all steps
    assert linear_calls[id(model.h2h)] == long  # one h2h product per step
    model(torch.randn(2, limit, 3), lengths=torch.tensor([limit, 3]))  # short enough
    model(torch.randn(2, long, 3), lengths=torch.tensor([long, long]))  # not ragged
    assert len(torch_lstm_calls) == 2
    model.requires_grad_(False)
    model(torch.randn(2, long, 3), lengths=torch.tensor([long, 3]))  # nothing needs a gradient
    assert len(torch_lstm_calls) == 3
    model(torch.randn(2, long, 3, requires_grad=True), lengths=torch.tensor([long, 3]))
    assert len(torch_lstm_calls) == 3  # but the input does


def test_the_stepped_long_ragged_batch_matches_the_reference_path(
    torch_lstm_calls: list[int],
) -> None:
    # A batch just past the limit, ragged, with gradients: the stepped path, in both
    # directions of a 2-layer model (the reverse direction starts each sequence at its end).
    long = PACKED_TRAINING_MAX_LEN + 1
    x = torch.randn(4, long, 3, dtype=DOUBLE)
    lengths = torch.tensor([3, long, 1, 100])
    for bidirectional in (False, True):
        assert_engines_agree(
            LSTM, "auto", "lengths", None, x, lengths, num_layers=2, bidirectional=bidirectional
        )
    assert torch_lstm_calls == []  # neither run took the kernel


@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True), (3, True)])
def test_packed_kernel_matches_reference_path_in_inference(
    torch_lstm_calls: list[int], num_layers: int, bidirectional: bool
) -> None:
    model = LSTM(3, 5, num_layers=num_layers, bidirectional=bidirectional, dtype=DOUBLE)
    reference = LSTM(3, 5, num_layers=num_layers, bidirectional=bidirectional, dtype=DOUBLE)
    reference.load_state_dict(model.state_dict())
    reference.engine = "reference"
    x = torch.randn(4, 6, 3, dtype=DOUBLE)
    cells = num_layers * (2 if bidirectional else 1)
    hidden = (torch.randn(cells, 4, 5, dtype=DOUBLE), torch.randn(cells, 4, 5, dtype=DOUBLE))
    with torch.no_grad():
        got = _run(model, x, hidden, "lengths")
        want = _run(reference, x, hidden, "lengths")
    assert len(torch_lstm_calls) == 1
    close(got, want, atol=1e-10)


class _Overridden(LSTM):
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        return super().forward_cell(x, hidden, state)


@pytest.mark.parametrize(
    "prepare",
    [
        pytest.param(lambda: _Overridden(3, 4), id="forward_cell overridden"),
        pytest.param(lambda: _hooked(LSTM(3, 4)), id="forward hook on i2h"),
        pytest.param(lambda: _replaced(LSTM(3, 4, num_layers=2)), id="h2h_l1 replaced"),
        pytest.param(lambda: _weight_normed(LSTM(3, 4)), id="parametrized i2h"),
    ],
)
def test_fast_path_never_bypasses_user_code(torch_lstm_calls: list[int], prepare: Any) -> None:
    model = prepare()
    model(torch.randn(2, 5, 3))
    assert len(torch_lstm_calls) == 0


def test_fast_path_steps_aside_under_autocast(torch_lstm_calls: list[int]) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        LSTM(3, 4)(torch.randn(2, 5, 3))
    assert len(torch_lstm_calls) == 0


def test_unknown_engine_is_refused() -> None:
    model = LSTM(3, 4)
    model.engine = "turbo"
    with pytest.raises(
        ValueError,
        match=r"^LSTM: expected engine in \('auto', 'reference', 'hoisted'\), got 'turbo'$",
    ):
        model(torch.randn(2, 5, 3))


def _hooked(model: LSTM) -> LSTM:
    model.i2h.register_forward_hook(lambda module, args, output: output * 2)
    return model


def _replaced(model: LSTM) -> LSTM:
    model.h2h_l1 = nn.Sequential(nn.Linear(4, 16))
    return model


def _weight_normed(model: LSTM) -> LSTM:
    nn.utils.parametrizations.weight_norm(model.i2h)
    return model


# ------------------------------------------------------------------ the hoisted engine


class _ScaledInput(LSTM):
    """Applies i2h to something other than the step input: hoisting must not apply to it."""

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        return super().forward_cell(0.5 * x, hidden, state)


@pytest.mark.parametrize("cls", [LSTM, CoupledGateLSTM, _ScaledInput])
@pytest.mark.parametrize("kind", ["full", "lengths"])
def test_hoisted_engine_matches_reference(cls: type[LSTM], kind: str) -> None:
    assert_engines_agree(cls, "hoisted", kind, num_layers=2, bidirectional=True)


def test_hoisted_engine_projects_once_per_cell(linear_calls: Counter[int]) -> None:
    model = CoupledGateLSTM(3, 5, num_layers=2)
    calls = linear_calls
    model.engine = "hoisted"
    model(torch.randn(2, 7, 3))
    assert [calls[id(model.i2h)], calls[id(model.i2h_l1)], calls[id(model.h2h)]] == [1, 1, 7]
    calls.clear()
    model.engine = "reference"
    model(torch.randn(2, 7, 3))
    assert [calls[id(model.i2h)], calls[id(model.i2h_l1)], calls[id(model.h2h)]] == [7, 7, 7]
