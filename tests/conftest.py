"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from hypothesis import settings
from torch import Tensor, nn

# Hypothesis profiles. "ci", the default, keeps every property test to a few dozen cases and
# draws them from a fixed seed, so that a run is deterministic and quick. "slow" is for the
# twins marked @pytest.mark.slow (deselected by default; `python -m pytest -m slow`), which
# take it with @settings(SLOW). No example database: nothing is written into the tree.
# HYPOTHESIS_PROFILE=slow makes every property test take the slow settings.
settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True, database=None)
settings.register_profile("slow", max_examples=2000, deadline=None, derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
SLOW = settings.get_profile("slow")

CASES_TRIED: Counter[str] = Counter()
"""Examples each ``@counted`` test has run in this session, by test name."""


def counted(test: Callable[..., None]) -> Callable[..., None]:
    """Count the examples a property test runs to the end (put it under ``@given``).

    The counts are printed at the end of the session (``pytest_terminal_summary``): the
    cases actually tried and passed, not the ``max_examples`` asked for; an example that
    Hypothesis discards half-way (a filter inside ``data.draw`` that finds nothing) is not
    counted.
    """

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        test(*args, **kwargs)
        CASES_TRIED[test.__name__] += 1

    return wrapper


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not CASES_TRIED:
        return
    terminalreporter.section("cases tried by the property tests")
    for name, count in sorted(CASES_TRIED.items()):
        terminalreporter.write_line(f"{name:<60} {count:>7}")
    terminalreporter.write_line(f"{'total':<60} {sum(CASES_TRIED.values()):>7}")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


COMMAND_LINE_TESTS = ("test_cli", "test_fuzz_cli", "test_faults", "test_lm_")
"""Files of the command line's tests (``lstm.cli``, ``lstm.lm``), by name prefix."""


@pytest.fixture(autouse=True)
def _one_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """The core's tests run torch on one thread.

    Their tensors are tiny (a few dozen numbers), so intra-op threads never help them, and on
    a machine whose cores are shared every parallel region (MKL's float64 matrix products,
    ``layer_norm``) waits for a thread that another process holds: the gradcheck of the
    layer-normalised cell took 86 s on two threads under load, 7 s on one. The command line's
    tests keep torch's default: they compare in-process runs bitwise with runs in
    subprocesses, which use the default.
    """
    if request.node.path.name.startswith(COMMAND_LINE_TESTS):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def linear_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How often each ``nn.Linear`` (by ``id``) runs its forward during the test."""
    calls: Counter[int] = Counter()
    original = nn.Linear.forward

    def counting(self: nn.Linear, x: Tensor) -> Tensor:
        calls[id(self)] += 1
        return original(self, x)

    monkeypatch.setattr(nn.Linear, "forward", counting)
    return calls


@pytest.fixture
def torch_lstm_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per call of ``torch.lstm`` (the fast path's kernel) during the test."""
    calls: list[int] = []
    original = torch.lstm

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "lstm", counting)
    return calls
