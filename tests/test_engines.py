"""The engines (``"kernel"``, ``"hoisted"``, ``"reference"``) agree; the fast path never runs
where it must not; ``engine_for`` names the rule that chose each, and ``forward`` runs it.

Agreement is exact to 1e-10 in float64: outputs, final states and the gradients of a random
projection of them with respect to the input and every parameter. Which engine ran is
observed from outside: calls of ``torch.lstm`` (the kernel of the fast path) and of each
``nn.Linear`` (``linear_calls``).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import pack_padded_sequence

import lstm
import lstm.engines
from builders import DOUBLE, close, gradients
from lstm import (
    CIFGLSTM,
    LSTM,
    SLSTM,
    ArrayLSTM,
    AttentionArrayLSTM,
    LayerNormLSTM,
    PeepholeLSTM,
    StochasticArrayLSTM,
    StochasticMemoryArrayLSTM,
)
from lstm.cells.lstm import PACKED_TRAINING_MAX_LEN
from pairwise import case_id, pairwise, product, unmet_pairs
from toy_cells import CoupledGateLSTM, TupleStateCell

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
# crossed in full (``ragged``: lengths tensor or PackedSequence, else a full batch), and so is
# the projection (``proj_size``: torch.lstm's w_hr against h2p in forward_cell). A
# PackedSequence becomes a padded batch with lengths before any engine runs, and bias=False
# only drops the bias terms, which no loop depends on: every value of those meets every
# value of every other axis (pairwise).
FULL_MATRIX = [
    case
    for case in product(
        num_layers=[1, 2, 3],
        bidirectional=[False, True],
        ragged=[False, True],
        proj_size=[0, 2],
        kind=["full", "lengths", "packed"],
        bias=[True, False],
    )
    if case["ragged"] == (case["kind"] != "full")
]
MATRIX = pairwise(FULL_MATRIX, crossed=["num_layers", "bidirectional", "ragged", "proj_size"])


def test_the_engine_matrix_meets_every_pair() -> None:
    assert len(FULL_MATRIX) == 72  # 36 without projections, which this file once ran in full
    assert unmet_pairs(MATRIX, FULL_MATRIX) == set()
    assert len(MATRIX) == 24  # 3 layer counts x 2 directions x ragged or not x proj_size


@pytest.mark.parametrize("case", MATRIX, ids=case_id)
def test_fast_path_matches_reference_path(case: dict[str, Any]) -> None:
    num_layers, bidirectional, _, proj_size, kind, bias = case.values()
    cells = num_layers * (2 if bidirectional else 1)
    hidden = (
        torch.randn(cells, 4, proj_size or 5, dtype=DOUBLE),
        torch.randn(cells, 4, 5, dtype=DOUBLE),
    )
    options = {"num_layers": num_layers, "bidirectional": bidirectional, "bias": bias}
    assert_engines_agree(LSTM, "auto", kind, hidden, proj_size=proj_size, **options)


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


def test_fast_path_is_taken_with_projections(torch_lstm_calls: list[int]) -> None:
    model = LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    assert model.engine_for(torch.randn(2, 5, 3)).name == "kernel"
    model(torch.randn(2, 5, 3))
    model(torch.randn(2, 5, 3), lengths=torch.tensor([5, 3]))
    assert len(torch_lstm_calls) == 2


def test_long_ragged_batches_that_need_gradients_step_instead(
    torch_lstm_calls: list[int], linear_calls: Counter[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel's packed backward costs seq_len x total steps (PACKED_TRAINING_MAX_LEN); the
    # compiled loop (or, without it, the hoisted per-step path) is linear. Short,
    # full-length or inference batches keep the kernel.
    model = LSTM(3, 4)
    limit = PACKED_TRAINING_MAX_LEN
    long = limit + 1
    assert model.engine_for(torch.randn(2, long, 3), torch.tensor([long, 3])).name == "compiled"
    model(torch.randn(2, long, 3), lengths=torch.tensor([long, 3]))
    assert len(torch_lstm_calls) == 0
    with monkeypatch.context() as patched:
        patched.setenv("LSTM_COMPILED", "0")
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
        match=r"^LSTM: expected engine in \('auto', 'reference', 'hoisted', 'fused', 'compiled'\), "
        r"got 'turbo'$",
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


@pytest.mark.parametrize("cls", [LSTM, _ScaledInput])
@pytest.mark.parametrize("kind", ["full", "lengths"])
def test_hoisted_engine_matches_reference_with_projections(cls: type[LSTM], kind: str) -> None:
    # _ScaledInput overrides forward_cell and calls LSTM's, which applies h2p.
    assert_engines_agree(cls, "hoisted", kind, num_layers=2, bidirectional=True, proj_size=3)


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


# ------------------------------------------------------------------ engine_for: every rule
# Each case builds a module and the context of one call, asks engine_for which engine runs and
# why, then runs forward with the same arguments while watching what actually ran: the kernel
# (a call of torch.lstm), the hoisted loop or the reference loop (the time loop, with or without
# the input projection hoisted).


class WideParameters(LSTM):
    """Overrides build_cell only (same shapes, a different initialisation)."""

    def build_cell(self, input_size: int, hidden_size: int, **factory: Any) -> dict[str, Any]:
        parts = super().build_cell(input_size, hidden_size, **factory)
        with torch.no_grad():
            parts["h2h"].weight.mul_(0.5)
        return parts


class Inherits(LSTM):
    """Changes nothing of the step: the kernel stays."""


class MaxLanes(ArrayLSTM):
    """Overrides only how the lanes combine: ArrayLSTM's step, which its fused rule lacks."""

    def update_hidden(self, outputs: Tensor, states: Tensor) -> Tensor:
        return (outputs * torch.tanh(states)).amax(0)


class HalvedMemory(StochasticMemoryArrayLSTM):
    """Overrides update_hidden only: the step stays its family's, the fused rule does not."""

    def update_hidden(self, outputs: Tensor, states: Tensor) -> Tensor:
        return super().update_hidden(outputs, states) / 2


class Symmetric(nn.Module):
    def forward(self, weight: Tensor) -> Tensor:
        return (weight + weight.flip(0)) / 2


@dataclass
class Case:
    """One rule: the module, the call, and the engine and reason expected."""

    build: Callable[[], lstm.Recurrent]
    engine: str
    reason: str
    seq_len: int = 5
    ragged: bool = False
    grad: bool = True
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    call: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)


def _with(setting: str, module: lstm.Recurrent) -> lstm.Recurrent:
    module.engine = setting
    return module


def _with_hook(module: lstm.Recurrent, name: str) -> lstm.Recurrent:
    getattr(module, name).register_forward_hook(lambda *_: None)
    return module


def _parametrized(module: lstm.Recurrent) -> lstm.Recurrent:
    parametrize.register_parametrization(module.i2h, "weight", Symmetric())
    return module


def _eval(module: lstm.Recurrent) -> lstm.Recurrent:
    return module.eval()


def _swapped(module: lstm.Recurrent, name: str, bias: bool) -> lstm.Recurrent:
    """``module`` with its map ``name`` replaced by a plain nn.Linear of the same shape."""
    old = getattr(module, name)
    setattr(module, name, nn.Linear(old.in_features, old.out_features, bias=bias))
    return module


def _with_part(module: lstm.Recurrent, name: str) -> lstm.Recurrent:
    """``module`` with its layer norm ``name`` replaced by an ``nn.RMSNorm`` of its features."""
    setattr(module, name, nn.RMSNorm(getattr(module, name).normalized_shape))
    return module


CASES = {
    "setting reference": Case(
        lambda: _with("reference", LSTM(3, 4)), "reference", "engine='reference' is set"
    ),
    "setting hoisted": Case(
        lambda: _with("hoisted", CoupledGateLSTM(3, 4, num_layers=2)),
        "hoisted",
        "engine='hoisted' is set",
    ),
    "setting hoisted, hooked i2h": Case(
        lambda: _with_hook(_with("hoisted", CoupledGateLSTM(3, 4)), "i2h"),
        "reference",
        "engine='hoisted' is set, but i2h has forward hooks",
    ),
    "all states": Case(
        lambda: ArrayLSTM(3, 4, k=2),
        "reference",
        "return_all_states=True",
        call={"return_all_states": True},
    ),
    "user forward_cell": Case(
        lambda: CoupledGateLSTM(3, 4),
        "compiled",
        "CoupledGateLSTM's forward_cell, traced and compiled",
    ),
    "user forward_cell, setting reference": Case(
        lambda: _with("reference", CoupledGateLSTM(3, 4)),
        "reference",
        "engine='reference' is set on the module",
    ),
    "user forward_cell, autocast": Case(
        lambda: CoupledGateLSTM(3, 4),
        "reference",
        "the compiled engine does not apply: autocast is on for cpu; CoupledGateLSTM overrides "
        "forward_cell of LSTM: it runs step by step",
        context=lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    ),
    "user build_cell": Case(
        lambda: WideParameters(3, 4), "compiled", "LSTM's forward_cell, traced and compiled"
    ),
    "family without fast path": Case(
        lambda: TupleStateCell(3, 4), "compiled", "TupleStateCell's forward_cell, traced"
    ),
    "family without fast path, setting fused": Case(
        lambda: _with("fused", TupleStateCell(3, 4)),
        "reference",
        "engine='fused' is set, but TupleStateCell's forward_cell has no fast path",
    ),
    "fused family": Case(
        lambda: CIFGLSTM(3, 4, num_layers=2), "compiled", "CIFGLSTM's own step, traced and compiled"
    ),
    "fused family, setting fused": Case(
        lambda: _with("fused", CIFGLSTM(3, 4, num_layers=2)),
        "fused",
        "engine='fused' is set on the module",
    ),
    "fused family, setting compiled": Case(
        lambda: _with("compiled", CIFGLSTM(3, 4, num_layers=2)),
        "compiled",
        "engine='compiled' is set on the module",
    ),
    "fused family with a tuple state": Case(
        lambda: SLSTM(3, 4, bidirectional=True), "compiled", "SLSTM's own step", ragged=True
    ),
    "fused family, compiled switched off": Case(
        lambda: CIFGLSTM(3, 4),
        "fused",
        "the compiled engine does not apply: it is switched off (LSTM_COMPILED=0); CIFGLSTM's "
        "own step: one autograd node per direction",
        environment={"LSTM_COMPILED": "0"},
    ),
    "fused family, float16": Case(
        lambda: CIFGLSTM(3, 4, dtype=torch.float16),
        "hoisted",
        "the compiled engine does not apply: it computes in float32 or float64, the input is "
        "torch.float16",
    ),
    "fused family, zoneout": Case(
        lambda: CIFGLSTM(3, 4, zoneout=0.1),
        "hoisted",
        "the fused engine does not apply: zoneout=0.1",
    ),
    "fused family, hooked h2h": Case(
        lambda: _with_hook(CIFGLSTM(3, 4, bidirectional=True), "h2h_reverse"),
        "hoisted",
        "the fused engine does not apply: h2h_reverse has forward hooks",
    ),
    "fused family, parametrized i2h": Case(
        lambda: _parametrized(CIFGLSTM(3, 4)),
        "reference",
        "the fused engine does not apply: i2h is a ParametrizedLinear",
    ),
    "fused family, autocast": Case(
        lambda: CIFGLSTM(3, 4),
        "hoisted",
        "the fused engine does not apply: autocast is on for cpu",
        context=lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    ),
    "peephole": Case(lambda: PeepholeLSTM(3, 4), "compiled", "PeepholeLSTM's own step"),
    "fused family with norms": Case(
        lambda: LayerNormLSTM(3, 4, num_layers=2, bidirectional=True),
        "compiled",
        "LayerNormLSTM's own step",
    ),
    "fused family, swapped norm (compiled: its reverse cell traced apart)": Case(
        lambda: _with_part(LayerNormLSTM(3, 4, bidirectional=True), "ln_cell_reverse"),
        "compiled",
        "LayerNormLSTM's step, traced and compiled",  # not "own": the fused rule steps aside
    ),
    "fused family, swapped norm, setting fused (its fused_problem)": Case(
        lambda: _with(
            "fused", _with_part(LayerNormLSTM(3, 4, bidirectional=True), "ln_cell_reverse")
        ),
        "hoisted",
        "the fused engine does not apply: ln_cell_reverse is a RMSNorm, not a plain nn.LayerNorm",
    ),
    "array": Case(lambda: ArrayLSTM(3, 4, k=2, num_layers=2), "compiled", "ArrayLSTM's own step"),
    "array, update_hidden overridden": Case(
        lambda: MaxLanes(3, 4, k=2, num_layers=2), "compiled", "MaxLanes's step, traced"
    ),
    "array, update_hidden overridden, setting fused": Case(
        lambda: _with("fused", MaxLanes(3, 4, k=2, num_layers=2)),
        "hoisted",
        "the fused engine does not apply: MaxLanes overrides update_hidden of ArrayLSTM",
    ),
    "array, parametrized i2h": Case(
        lambda: _parametrized(ArrayLSTM(3, 4, k=2)),
        "reference",
        "i2h is a ParametrizedLinear, not a plain nn.Linear",
    ),
    "stochastic array (its own update_hidden, ArrayLSTM's step)": Case(
        lambda: StochasticArrayLSTM(3, 4, k=2), "compiled", "ArrayLSTM's own step"
    ),
    "attention array": Case(
        lambda: AttentionArrayLSTM(3, 4, k=2, max_pooling=True, num_layers=2),
        "compiled",
        "AttentionArrayLSTM's own step",
    ),
    "stochastic memory array, drawing in training": Case(
        lambda: StochasticMemoryArrayLSTM(3, 4, k=2, sample_lanes=True, bidirectional=True),
        "fused",
        "the compiled engine does not apply: forward_cell draws random numbers",
    ),
    "stochastic memory array, its own update_hidden": Case(
        lambda: HalvedMemory(3, 4, k=2), "compiled", "HalvedMemory's step, traced"
    ),
    "parallel family": Case(
        lambda: lstm.MLSTM(3, 4, num_heads=2, num_layers=2, bidirectional=True),
        "parallel",
        "MLSTM's own step: the chunkwise-parallel form",
        ragged=True,
    ),
    "parallel family, one step": Case(
        lambda: lstm.MLSTM(3, 4, num_heads=2), "reference", "a single step", seq_len=1
    ),
    "parallel family, autocast": Case(
        lambda: lstm.MLSTM(3, 4, num_heads=2),
        "parallel",
        "MLSTM's own step",
        context=lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    ),
    "parallel family, hooked i2h": Case(
        lambda: _with_hook(lstm.MLSTM(3, 4, num_heads=2), "i2h"),
        "reference",
        "the parallel form does not apply: i2h has forward hooks",
    ),
    "parallel family, parametrized i2h": Case(
        lambda: _parametrized(lstm.MLSTM(3, 4, num_heads=2)),
        "reference",
        "the parallel form does not apply: i2h is a ParametrizedLinear",
    ),
    "lstm": Case(
        lambda: LSTM(3, 4, num_layers=2, bidirectional=True),
        "kernel",
        "LSTM's own step: torch.lstm",
    ),
    "subclass keeping the step": Case(lambda: Inherits(3, 4), "kernel", "LSTM's own step"),
    "autocast": Case(
        lambda: LSTM(3, 4),
        "reference",
        "autocast is on for cpu",
        context=lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    ),
    "float16 on the cpu": Case(
        lambda: LSTM(3, 4, dtype=torch.float16), "reference", "float16 on the CPU"
    ),
    "zoneout": Case(lambda: LSTM(3, 4, zoneout=0.1), "reference", "zoneout=0.1"),
    "recurrent dropout, training": Case(
        lambda: LSTM(3, 4, recurrent_dropout=0.2), "reference", "recurrent_dropout=0.2"
    ),
    "recurrent dropout, eval": Case(
        lambda: _eval(LSTM(3, 4, recurrent_dropout=0.2)), "kernel", "LSTM's own step"
    ),
    "hooked deeper h2h": Case(
        lambda: _with_hook(LSTM(3, 4, num_layers=2, bidirectional=True), "h2h_l1_reverse"),
        "reference",
        "h2h_l1_reverse has forward hooks",
    ),
    "long ragged training batch": Case(
        lambda: LSTM(3, 4), "compiled", "a ragged batch of 257 steps (> 256)", 257, ragged=True
    ),
    "long ragged training batch, compiled engine off": Case(
        lambda: LSTM(3, 4),
        "hoisted",
        "a ragged batch of 257 steps (> 256)",
        257,
        ragged=True,
        environment={"LSTM_COMPILED": "0"},
    ),
    "long ragged batch without gradients": Case(
        lambda: LSTM(3, 4).requires_grad_(False),
        "kernel",
        "LSTM's own step",
        257,
        ragged=True,
        grad=False,
    ),
    "ragged batch at the limit": Case(
        lambda: LSTM(3, 4), "kernel", "LSTM's own step", 256, ragged=True
    ),
    "long batch, not ragged": Case(lambda: LSTM(3, 4), "kernel", "LSTM's own step", 300),
    "projection swapped for one with a bias": Case(
        lambda: _swapped(LSTM(3, 4, proj_size=2), "h2p", bias=True),
        "reference",
        "h2p has a bias, the kernel reads none (bias=True)",
    ),
    "biased map in a model without biases": Case(
        lambda: _swapped(LSTM(3, 4, bias=False), "i2h", bias=True),
        "compiled",
        "i2h has a bias, the kernel reads none (bias=False)",
    ),
    "biased map in a model without biases, compiled engine off": Case(
        lambda: _swapped(LSTM(3, 4, bias=False), "i2h", bias=True),
        "reference",
        "i2h has a bias, the kernel reads none (bias=False)",
        environment={"LSTM_COMPILED": "0"},
    ),
}


@contextlib.contextmanager
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record which engine ``forward`` really runs: torch.lstm, or the time loop (hoisted?)."""
    ran: list[str] = []
    kernel, loop = torch.lstm, lstm.engines.run_stack

    def counting_kernel(*arguments: Any) -> Any:
        ran.append("kernel")
        return kernel(*arguments)

    def counting_loop(*arguments: Any, prepare: Any = None, **options: Any) -> Any:
        if options.get("run") is not None:
            names = {
                lstm.engines.run_fused_direction: "fused",
                lstm.engines.run_compiled_direction: "compiled",
            }
            ran.append(names.get(options["run"], "parallel"))
        else:
            ran.append("reference" if prepare is None else "hoisted")
        return loop(*arguments, prepare=prepare, **options)

    monkeypatch.setattr(torch, "lstm", counting_kernel)
    monkeypatch.setattr(lstm.engines, "run_stack", counting_loop)
    yield ran


@pytest.mark.parametrize("name", list(CASES))
def test_engine_for_names_the_rule_and_forward_runs_it(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    torch.manual_seed(0)
    for variable, value in case.environment.items():
        monkeypatch.setenv(variable, value)
    model = case.build()
    dtype = next(model.parameters()).dtype
    x = torch.randn(3, case.seq_len, 3, dtype=dtype)
    lengths = torch.tensor([case.seq_len, 2, 1]) if case.ragged else None
    with case.context():
        engine = model.engine_for(x, lengths, **case.call)
        assert engine.name == case.engine, engine
        assert case.reason in engine.reason, engine
        with watch(monkeypatch) as ran, torch.set_grad_enabled(case.grad):
            model(x, lengths=lengths, **case.call)
    assert ran == [case.engine]


def test_engine_for_takes_forward_arguments() -> None:
    model = LSTM(3, 4, num_layers=2)
    packed = nn.utils.rnn.pack_padded_sequence(
        torch.randn(3, 300, 3), torch.tensor([300, 200, 9]), batch_first=True
    )
    assert model.engine_for(packed).name == "compiled"  # ragged and long, gradients on
    hidden = (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
    assert model.engine_for(torch.randn(3, 5, 3), hidden=hidden).name == "kernel"
    assert model.engine_for(torch.randn(5, 3)).name == "kernel"  # unbatched
    assert isinstance(model.engine_for(torch.randn(5, 3)), lstm.Engine)


def test_engine_for_checks_its_arguments_like_forward() -> None:
    model = LSTM(3, 4)
    with pytest.raises(ValueError, match=r"^LSTM: expected input of shape \(batch, seq_len, 3\)"):
        model.engine_for(torch.randn(2, 5, 7))
    with pytest.raises(TypeError, match=r"^LSTM: expected lengths to have an integer dtype"):
        model.engine_for(torch.randn(2, 5, 3), torch.tensor([1.0, 2.0]))
    model.engine = "fast"
    with pytest.raises(ValueError, match=r"^LSTM: expected engine in \('auto', 'reference'"):
        model.engine_for(torch.randn(2, 5, 3))


def test_step_source_is_worked_out_at_class_creation() -> None:
    assert LSTM.step_source.fast_path is not None
    assert LSTM.step_source.fast_path.engine == "kernel"
    assert ArrayLSTM.step_source.fast_path is not None
    assert ArrayLSTM.step_source.fast_path.engine == "fused"
    assert CIFGLSTM.step_source.fast_path is not None
    assert CIFGLSTM.step_source.fast_path.engine == "fused"
    # PeepholeLSTM rewrites LSTM's step and parameters, and declares its own fast path.
    assert PeepholeLSTM.step_source.fast_path is PeepholeLSTM.fast_path
    assert PeepholeLSTM.step_source.overrides(LSTM) == ["build_cell", "forward_cell"]
    assert LayerNormLSTM.step_source.fast_path is not None
    assert LayerNormLSTM.step_source.fast_path.engine == "fused"
    assert SLSTM.step_source.fast_path is not None
    assert SLSTM.step_source.fast_path.engine == "fused"
    for cls in (CoupledGateLSTM, WideParameters):
        assert cls.step_source.fast_path is None, cls
    # Overriding update_hidden (how the lanes combine) keeps ArrayLSTM's step and fast path.
    assert StochasticArrayLSTM.step_source.fast_path is ArrayLSTM.fast_path
    assert CoupledGateLSTM.step_source.overrides(LSTM) == ["forward_cell"]
    assert ArrayLSTM.step_source.overrides(LSTM) == ["build_cell", "forward_cell", "init_hidden"]
    assert Inherits.step_source.overrides(LSTM) == []


def test_a_declared_kernel_without_fused_forward_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match=r"^Broken: expected a fused_forward method beside Fast"):

        class Broken(lstm.Recurrent):
            fast_path = lstm.engines.FastPath("kernel", "a kernel that is not there")
            gate_blocks = 4
            forward_cell = LSTM.forward_cell


def test_a_declared_kernel_without_kernel_problem_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match=r"^Broken: expected a kernel_problem method beside Fast"):

        class Broken(lstm.Recurrent):
            fast_path = lstm.engines.FastPath("kernel", "a kernel that cannot say when it fits")
            gate_blocks = 4
            forward_cell = LSTM.forward_cell

            def fused_forward(self, inputs: Tensor, initial: Any, lengths: Any) -> Any:
                return None


def test_a_declared_kernel_that_returns_nothing_is_refused() -> None:
    class Broken(lstm.Recurrent):
        fast_path = lstm.engines.FastPath("kernel", "a kernel that forgets to answer")
        gate_blocks = 4
        forward_cell = LSTM.forward_cell

        def fused_forward(self, inputs: Tensor, initial: Any, lengths: Any) -> Any:
            return None

        def kernel_problem(self) -> str | None:
            return None

    model = Broken(3, 4)
    assert model.engine_for(torch.randn(2, 5, 3)).name == "kernel"
    with pytest.raises(TypeError, match=r"^Broken\.fused_forward: expected"):
        model(torch.randn(2, 5, 3))
