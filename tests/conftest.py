"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
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


# Every process a test starts (a training subprocess, torchrun's workers) computes on one
# thread too: torch reads OMP_NUM_THREADS when it starts. See _one_thread.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Every test runs torch on one thread, as do the processes tests start.

    Their tensors are tiny (a few dozen numbers), so intra-op threads never help them, and on
    a machine whose cores are shared every parallel region (MKL's float64 matrix products,
    ``layer_norm``) waits for a thread that another process holds: the gradcheck of the
    layer-normalised cell took 86 s on two threads under load, 7 s on one, and the suite runs
    one test process per core. The command line's tests compare in-process runs bitwise with
    runs in subprocesses: both use one thread (``OMP_NUM_THREADS=1`` above). A test that runs
    the command line in process with ``--threads`` leaves the count as it found it.
    """
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


# ------------------------------------------------------------------------------ the command line
# test_cli.py, test_lm_*.py and test_fuzz_cli.py train tiny byte models on one small text file.

TINY = ["--hidden", "8", "--seq-len", "8", "--batch-size", "2", "--quiet", "--device", "cpu"]
TINY += ["--threads", "1"]  # fixed: runs compared bit for bit must not depend on the load
"""Flags of a byte model small enough to train in a moment."""


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 kB of text with some structure to learn (words from a small vocabulary)."""
    generator = torch.Generator().manual_seed(0)
    words = ["the", "cell", "state", "gate", "forget", "input", "output", "lstm", "array", "."]
    picks = torch.randint(0, len(words), (2400,), generator=generator).tolist()
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(" ".join(words[index] for index in picks))
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``python -m lstm ARGV`` in this process: the exit status, stdout and stderr."""
    from lstm import cli

    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train_args(corpus_file: Path, out: Path, *extra: str) -> list[str]:
    """``train`` of a :data:`TINY` model on ``corpus_file`` into ``out``, then ``extra``."""
    return ["train", "--data", str(corpus_file), "--out", str(out), *TINY, *extra]


@pytest.fixture(scope="session")
def trained_run(corpus_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of a :data:`TINY` model trained for 2 steps. Read it; never change it."""
    from lstm import cli

    out = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main(train_args(corpus_file, out, "--steps", "2")) == 0
    return out


@pytest.fixture
def trained(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of :func:`trained_run` of this test's own, to damage or extend."""
    copy = tmp_path / "trained"
    shutil.copytree(trained_run, copy)
    return copy


def weights(folder: Path) -> dict[str, Tensor]:
    """The tensors of a run folder's ``model.safetensors``."""
    from lstm.lm.files import load_tensors
    from lstm.lm.run_folder import MODEL_FILE, MODEL_KIND

    return load_tensors(folder / MODEL_FILE, kind=MODEL_KIND)[0]


def assert_same_weights(first: Path, second: Path) -> None:
    """The two run folders hold bit for bit the same weights."""
    ours, theirs = weights(first), weights(second)
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def metrics(folder: Path) -> list[dict[str, float]]:
    """The records of a run folder's ``metrics.jsonl``."""
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder by name, with its bytes: equal snapshots, nothing written."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}
