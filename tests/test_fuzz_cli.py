"""Fuzzing the command line's options: every bad value is one line, status 2, nothing written.

Each case builds a ``train``, ``evaluate``, ``generate`` or ``compare`` command with one bad
option among otherwise valid ones and checks that it ends with exactly one line on stderr,
``python -m lstm COMMAND: error: ...`` naming the option or the bad value, exit status 2,
nothing on stdout, and no run folder created. Hypothesis draws the bad values; the ``slow``
twin tries many more of them.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SLOW, counted
from lstm import CELLS, cli

TINY = ["--hidden", "4", "--seq-len", "4", "--batch-size", "1", "--steps", "1", "--quiet"]
POSITIVE_INTEGERS = [
    "--hidden",
    "--layers",
    "--batch-size",
    "--steps",
    "--checkpoint-every",
    "--threads",
]


def _not_an_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return True
    return False


def _number_text(value: float) -> str:
    return repr(value) if math.isfinite(value) else str(value)


bad_integer_option = st.one_of(
    st.tuples(st.sampled_from(POSITIVE_INTEGERS), st.integers(max_value=0).map(str)),
    st.tuples(st.just("--seq-len"), st.integers(max_value=1).map(str)),
    st.tuples(st.just("--eval-bytes"), st.integers(max_value=1).map(str)),
    st.tuples(st.just("--seed"), st.integers(max_value=-1).map(str)),
    st.tuples(
        st.sampled_from([*POSITIVE_INTEGERS, "--seq-len", "--seed", "--k"]),
        st.text(min_size=1, max_size=6).filter(_not_an_int).filter(lambda t: not t.startswith("-")),
    ),
)
bad_float_option = st.one_of(
    st.tuples(
        st.just("--lr"),
        st.one_of(st.floats(max_value=0.0), st.sampled_from([math.inf, math.nan])).map(
            _number_text
        ),
    ),
    st.tuples(
        st.just("--dropout"),
        st.one_of(
            st.floats(max_value=0.0, exclude_max=True),
            st.floats(min_value=1.0),
            st.just(math.nan),
        ).map(_number_text),
    ),
)
bad_choice_option = st.one_of(
    st.tuples(
        st.just("--cell"),
        st.text(min_size=1, max_size=12).filter(
            lambda name: name not in CELLS and not name.startswith("-")
        ),
    ),
    st.tuples(st.just("--impl"), st.sampled_from(["jax", "tf", "LSTM", ""])),
    st.tuples(st.just("--device"), st.sampled_from(["gpu", "tpu", "cuda:0", "CPU"])),
)


def assert_refused(argv: list[str], out: Path) -> str:
    """Run the command; check the refusal and return its one line."""
    printed, error = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(error):
        code = cli.main(argv)
    command = argv[0]
    assert code == 2, (argv, error.getvalue())
    assert printed.getvalue() == ""
    lines = error.getvalue().splitlines()
    assert len(lines) == 1, (argv, error.getvalue())
    assert lines[0].startswith(f"python -m lstm {command}: error: "), lines
    assert "Traceback" not in error.getvalue()
    assert not out.exists(), argv
    return lines[0]


def _check_train_option(corpus_file: Path, option: tuple[str, str]) -> None:
    flag, value = option
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        argv = ["train", "--data", str(corpus_file), "--out", str(out), *TINY, f"{flag}={value}"]
        message = assert_refused(argv, out)
    named = flag.lstrip("-") in message or value in message or repr(value) in message
    assert named, (option, message)


def _check_generate_option(trained: Path, argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        assert_refused(["generate", "--checkpoint", str(trained), *argv], Path(folder) / "x")


option_cases = st.one_of(bad_integer_option, bad_float_option, bad_choice_option)
generate_cases = st.one_of(
    st.floats(max_value=0.0).map(lambda t: ["--temperature", _number_text(t)]),
    st.sampled_from([["--temperature", "nan"], ["--temperature", "inf"]]),
    st.integers(max_value=-1).map(lambda n: [f"--length={n}"]),
    st.text(min_size=1, max_size=5).filter(_not_an_int).map(lambda t: [f"--length={t}"]),
)


@given(option=option_cases)
@counted
def test_bad_train_options(corpus_file: Path, option: tuple[str, str]) -> None:
    _check_train_option(corpus_file, option)


@pytest.mark.slow
@settings(SLOW)
@given(option=option_cases)
@counted
def test_bad_train_options_slow(corpus_file: Path, option: tuple[str, str]) -> None:
    _check_train_option(corpus_file, option)


@given(argv=generate_cases)
@counted
def test_bad_generate_options(trained_run: Path, argv: list[str]) -> None:
    _check_generate_option(trained_run, argv)


@pytest.mark.slow
@settings(SLOW)
@given(argv=generate_cases)
@counted
def test_bad_generate_options_slow(trained_run: Path, argv: list[str]) -> None:
    _check_generate_option(trained_run, argv)
