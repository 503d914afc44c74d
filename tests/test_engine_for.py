"""engine_for: every rule of the engine choice, its reason, and that forward runs what it says.

Each case builds a module and the context of one call, asks ``engine_for`` which engine runs
and why, then runs ``forward`` with the same arguments while watching what actually ran: the
kernel (a call of ``torch.lstm``), the hoisted loop or the reference loop (the time loop, with
or without the input projection hoisted).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

import lstm
import lstm.engines
from lstm import CIFGLSTM, LSTM, ArrayLSTM, PeepholeLSTM, StochasticArrayLSTM


class CoupledGate(LSTM):
    """The README's user cell: overrides forward_cell only."""

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        f, _, o, g = (self.i2h(x) + self.h2h(hidden)).chunk(4, dim=-1)
        state = f.sigmoid() * state + (1 - f.sigmoid()) * g.tanh()
        return o.sigmoid() * state.tanh(), state


class WideParameters(LSTM):
    """Overrides build_cell only (same shapes, a different initialisation)."""

    def build_cell(self, input_size: int, hidden_size: int, **factory: Any) -> dict[str, Any]:
        parts = super().build_cell(input_size, hidden_size, **factory)
        with torch.no_grad():
            parts["h2h"].weight.mul_(0.5)
        return parts


class Inherits(LSTM):
    """Changes nothing of the step: the kernel stays."""


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


def _with(setting: str, module: lstm.Recurrent) -> lstm.Recurrent:
    module.engine = setting
    return module


def _hooked(module: lstm.Recurrent, name: str) -> lstm.Recurrent:
    getattr(module, name).register_forward_hook(lambda *_: None)
    return module


def _parametrized(module: lstm.Recurrent) -> lstm.Recurrent:
    parametrize.register_parametrization(module.i2h, "weight", Symmetric())
    return module


def _eval(module: lstm.Recurrent) -> lstm.Recurrent:
    return module.eval()


CASES = {
    "setting reference": Case(
        lambda: _with("reference", LSTM(3, 4)), "reference", "engine='reference' is set"
    ),
    "setting hoisted": Case(
        lambda: _with("hoisted", CoupledGate(3, 4, num_layers=2)),
        "hoisted",
        "engine='hoisted' is set",
    ),
    "setting hoisted, hooked i2h": Case(
        lambda: _hooked(_with("hoisted", CoupledGate(3, 4)), "i2h"),
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
        lambda: CoupledGate(3, 4),
        "reference",
        "CoupledGate overrides forward_cell of LSTM: it runs step by step",
    ),
    "user build_cell": Case(
        lambda: WideParameters(3, 4), "reference", "WideParameters overrides build_cell of LSTM"
    ),
    "family without fast path": Case(
        lambda: CIFGLSTM(3, 4), "reference", "CIFGLSTM's forward_cell has no fast path"
    ),
    "peephole": Case(
        lambda: PeepholeLSTM(3, 4), "reference", "PeepholeLSTM overrides forward_cell of LSTM"
    ),
    "array": Case(lambda: ArrayLSTM(3, 4, k=2, num_layers=2), "hoisted", "ArrayLSTM's own step"),
    "array, parametrized i2h": Case(
        lambda: _parametrized(ArrayLSTM(3, 4, k=2)),
        "reference",
        "i2h is a ParametrizedLinear, not a plain nn.Linear",
    ),
    "stochastic array": Case(
        lambda: StochasticArrayLSTM(3, 4, k=2),
        "reference",
        "StochasticArrayLSTM overrides forward_cell of ArrayLSTM",
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
        lambda: _hooked(LSTM(3, 4, num_layers=2, bidirectional=True), "h2h_l1_reverse"),
        "reference",
        "h2h_l1_reverse has forward hooks",
    ),
    "long ragged training batch": Case(
        lambda: LSTM(3, 4), "hoisted", "a ragged batch of 257 steps (> 256)", 257, ragged=True
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
    assert model.engine_for(packed).name == "hoisted"  # ragged and long, gradients on
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
    assert ArrayLSTM.step_source.fast_path.engine == "hoisted"
    for cls in (CoupledGate, PeepholeLSTM, StochasticArrayLSTM, CIFGLSTM, WideParameters):
        assert cls.step_source.fast_path is None, cls
    assert CoupledGate.step_source.overrides(LSTM) == ["forward_cell"]
    assert ArrayLSTM.step_source.overrides(LSTM) == ["build_cell", "forward_cell", "init_hidden"]
    assert Inherits.step_source.overrides(LSTM) == []


def test_a_declared_kernel_that_returns_nothing_is_refused() -> None:
    class Broken(lstm.Recurrent):
        fast_path = lstm.engines.FastPath("kernel", "a kernel that forgets to answer")
        gate_blocks = 4
        forward_cell = LSTM.forward_cell

    model = Broken(3, 4)
    assert model.engine_for(torch.randn(2, 5, 3)).name == "kernel"
    with pytest.raises(TypeError, match=r"^Broken\.fused_forward: expected"):
        model(torch.randn(2, 5, 3))
