"""The command line's flags: help text, the README's table, ``--threads``, what ``compare``
refuses, and what ``python -m lstm --help`` imports."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_cli, train_args
from lstm import cli
from lstm.lm import threads as threads_module

# ------------------------------------------------------------------------------ startup

HEAVY_MODULES = (
    "torch.utils.benchmark",
    "matplotlib",
    "safetensors",
    "lstm.lm.train",
    "lstm.lm.run_folder",
    "lstm.lm.files",
    "lstm.lm.corpus",
    "lstm.lm.sample",
    "lstm.lm.compare",
)
"""Modules only some commands need. torch.utils.benchmark also warns, on a CUDA build of torch
without the CUDA toolkit, that CUDA_HOME is unset. (tqdm is not here: ``import torch``
imports it itself where it is installed.)"""


def test_building_the_parser_imports_no_heavy_module() -> None:
    # A fresh interpreter: this one has imported everything already.
    script = (
        "import sys\nfrom lstm import cli\ncli.build_parser()\nprint(' '.join(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(done.stdout.split())
    assert "lstm.cli" in loaded
    heavy = {name for name in loaded if name.startswith(HEAVY_MODULES)}
    assert not heavy, f"python -m lstm --help imports {sorted(heavy)}"


# ------------------------------------------------------------------------------ --threads


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The calls to torch's thread setters, recorded instead of made (they are process-wide)."""
    calls: list[tuple[str, int]] = []
    for name in ("set_num_threads", "set_num_interop_threads"):
        monkeypatch.setattr(torch, name, lambda count, name=name: calls.append((name, count)))
    return calls


RUN_COMMANDS = {
    "train": ["train"],
    "evaluate": ["evaluate", "--checkpoint", "run"],
    "generate": ["generate", "--checkpoint", "run"],
    "compare": ["compare"],
}


@pytest.mark.parametrize("command", sorted(RUN_COMMANDS))
def test_threads_are_set_before_the_command_runs(
    command: str,
    thread_calls: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[list[tuple[str, int]]] = []
    monkeypatch.setattr(cli, f"_{command}", lambda args: seen.append(list(thread_calls)))
    assert run_cli([*RUN_COMMANDS[command], "--threads", "3"], capsys)[0] == 0
    assert seen == [[("set_num_threads", 3), ("set_num_interop_threads", 3)]]
    thread_calls.clear()
    monkeypatch.setattr(threads_module, "busy_cores", lambda: 0.0)
    assert run_cli(RUN_COMMANDS[command], capsys)[0] == 0
    assert thread_calls == []  # not given, cores free: torch's own default stays
    monkeypatch.setattr(threads_module, "busy_cores", lambda: 5.0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert run_cli(RUN_COMMANDS[command], capsys)[0] == 0
    assert thread_calls == [("set_num_threads", 1), ("set_num_interop_threads", 1)]
    chosen = threads_module.CHOSEN  # what the training header prints
    assert chosen is not None
    assert chosen.startswith("1 of ")
    assert chosen.endswith(" cores (other work keeps 5 busy); --threads N to choose")


@pytest.mark.parametrize(
    ("default", "cores", "busy", "expected"),
    [(2, 2, 0.0, 2), (2, 2, 0.4, 2), (2, 2, 1.0, 1), (2, 2, 5.0, 1), (8, 8, 3.0, 5), (4, 16, 2, 4)],
)
def test_the_thread_count_without_threads_leaves_the_busy_cores(
    default: int, cores: int, busy: float, expected: int
) -> None:
    assert threads_module.choose_threads(default, cores, busy) == expected


def test_busy_cores_reads_the_runnable_tasks_but_this_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = tmp_path / "loadavg"
    load.write_text("5.10 4.20 3.00 6/412 12345\n")
    monkeypatch.setattr(threads_module, "LOADAVG", load)
    assert threads_module.busy_cores(samples=2, interval=0.0) == 5
    monkeypatch.setattr(threads_module, "LOADAVG", tmp_path / "absent")
    assert threads_module.busy_cores() is None
    assert threads_module.auto_threads(3) == (3, "3 (torch's default); --threads N to choose")


@pytest.mark.parametrize("command", sorted(RUN_COMMANDS))
@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "expected --threads >= 1, got 0"), ("two", "invalid int value: 'two'")],
)
def test_bad_thread_counts_are_one_line_and_status_2(
    command: str,
    value: str,
    message: str,
    thread_calls: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli, f"_{command}", lambda args: pytest.fail("the command ran"))
    code, _, error = run_cli([*RUN_COMMANDS[command], "--threads", value], capsys)
    assert code == 2
    assert error.startswith(f"python -m lstm {command}: error: ")
    assert len(error.splitlines()) == 1, error
    assert message in error
    assert thread_calls == []


def test_threads_are_recorded_and_a_run_resumes_with_another_count(
    corpus_file: Path,
    tmp_path: Path,
    thread_calls: list[tuple[str, int]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    assert run_cli(train_args(corpus_file, out, "--steps", "2", "--threads", "1"), capsys)[0] == 0
    assert json.loads((out / "config.json").read_text())["train"]["threads"] == 1
    resumed = train_args(corpus_file, out, "--steps", "4", "--threads", "2", "--resume")
    code, printed, error = run_cli(resumed, capsys)
    assert code == 0, error
    assert "resuming at step 2 of 4" in printed
    # The weights carry the new count, config.json the first: both still load.
    code, printed, error = run_cli(["evaluate", "--checkpoint", str(out)], capsys)
    assert code == 0, error
    assert "at step 4" in printed
    assert ("set_num_threads", 2) in thread_calls


# ------------------------------------------------------------------------------ compare


@pytest.mark.parametrize(
    ("refused", "message"),
    [
        (["--cell", "slstm"], "--cell: compare trains the cells given by --cells (default: lstm "),
        (["--cell=slstm"], "e.g. --cells lstm slstm"),
        (["--impl", "torch"], "--impl: a flag of train; compare trains this library's cells"),
        (["--eval-every", "3"], "--eval-every: a flag of train; compare validates every"),
        (["--checkpoint-every", "3"], "--checkpoint-every: a flag of train; compare checkpoints"),
        (["--resume"], "--resume: compare always starts new runs"),
    ],
)
def test_compare_refuses_train_flags_it_cannot_honour(
    refused: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # --cell slstm used to pass as an abbreviation of --cells, or train lstm, array and
    # stochastic-array without a word.
    monkeypatch.setattr(cli, "_compare", lambda args: pytest.fail("compare ran"))
    out = tmp_path / "compare"
    code, printed, error = run_cli(["compare", "--out", str(out), *refused], capsys)
    assert code == 2
    assert printed == ""
    assert error.startswith("python -m lstm compare: error: ")
    assert len(error.splitlines()) == 1, error
    assert message in error
    assert not out.exists()


def test_compare_takes_its_cells_from_cells_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    planned: list[list[str]] = []
    monkeypatch.setattr(cli, "_compare", lambda args: planned.append(args.cells))
    assert run_cli(["compare"], capsys)[0] == 0
    assert run_cli(["compare", "--cells", "slstm", "lstm"], capsys)[0] == 0
    assert run_cli(["compare", "--cells", "lstm,slstm", "mlstm"], capsys)[0] == 0
    assert planned == [
        ["lstm", "array", "stochastic-array"],
        ["slstm", "lstm"],
        ["lstm", "slstm", "mlstm"],
    ]
    code, _, error = run_cli(["compare", "--cells", "lstm,gru"], capsys)
    assert code == 2
    assert "--cells: unknown cell 'gru'; expected one of ['array', " in error
    assert error.rstrip().endswith("or a class as 'package.module:Class'")
    assert "--cell " not in run_cli(["compare", "--help"], capsys)[1]


# ------------------------------------------------------------------------------ help and README


def parsers() -> dict[str, argparse.ArgumentParser]:
    """``python -m lstm`` (as ``""``) and each of its commands' parsers, by command."""
    parser = cli.build_parser()
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    return {"": parser, **commands.choices}


def shown_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The flags the help lists (not -h, not the refused ones, not the commands)."""
    return [
        action
        for action in parser._actions
        if action.option_strings
        and action.help is not argparse.SUPPRESS
        and not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def shown_default(action: argparse.Action) -> str | None:
    """How the help should name the action's default (``None``: it has none to show)."""
    if action.default in (None, "", argparse.SUPPRESS) or action.nargs == 0:
        return None  # no value, or a switch (store_true, version)
    if isinstance(action.default, (list, tuple)):
        return " ".join(str(value) for value in action.default)
    return str(action.default)


@pytest.mark.parametrize("command", sorted(parsers()))
def test_every_flag_has_help_that_names_its_default(command: str) -> None:
    parser = parsers()[command]
    for action in shown_actions(parser):
        assert action.help, f"{command} {action.option_strings[0]} has no help"
        text = action.help % {**vars(action), "prog": parser.prog}
        default = shown_default(action)
        if default is not None:
            assert re.search(rf"default:? {re.escape(default)}\b", text), (
                f"{command} {action.option_strings[0]}: {text!r} does not name {default!r}"
            )


def test_generate_help_says_the_default_seed_is_deterministic() -> None:
    (seed,) = [action for action in parsers()["generate"]._actions if action.dest == "seed"]
    assert isinstance(seed.help, str)
    assert "default makes generate deterministic" in seed.help


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_rows() -> dict[str, str]:
    """The command cell of each ``python -m lstm COMMAND`` row of the README's table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## The command line", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `python -m lstm (\w+)([^`]*)` \|", section, flags=re.M)
    return dict(rows)


@pytest.mark.parametrize("command", sorted(set(parsers()) - {""}))
def test_the_readme_table_lists_every_flag(command: str) -> None:
    row = readme_rows()[command]
    listed = set(re.findall(r"--[a-z][a-z-]*", row))
    parser = parsers()[command]
    flags = {action.option_strings[0] for action in shown_actions(parser)}
    assert listed == flags, (
        f"README's {command} row: missing {sorted(flags - listed)}, extra {sorted(listed - flags)}"
    )
    for group in parser._mutually_exclusive_groups:
        alternatives = r" \| ".join(action.option_strings[0] for action in group._group_actions)
        assert f"[{alternatives}]" in row, f"README's {command} row: [{alternatives}]"


@pytest.mark.slow
@pytest.mark.skipif(not threads_module.LOADAVG.exists(), reason="reads /proc/loadavg")
def test_on_busy_cores_the_default_is_as_fast_as_one_thread(
    corpus_file: Path, tmp_path: Path
) -> None:
    # Load ~5 on this machine's cores (busy loops beside the run), then the same short
    # training without --threads and with --threads 1: within 1.5x of each other.
    import os
    import time

    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core: nothing to choose")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(5)]
    try:
        time.sleep(1.0)
        argv = [sys.executable, "-m", "lstm", "train", "--data", str(corpus_file)]
        argv += ["--hidden", "128", "--steps", "30", "--eval-every", "30", "--quiet"]
        argv += ["--eval-bytes", "256", "--device", "cpu", "--force"]
        seconds, printed = {}, {}
        for name, extra in (("auto", []), ("one", ["--threads", "1"])):
            started = time.perf_counter()
            done = subprocess.run(
                [*argv, "--out", str(tmp_path / name), *extra],
                capture_output=True,
                text=True,
                timeout=900,
                check=True,
            )
            seconds[name], printed[name] = time.perf_counter() - started, done.stdout
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert f"threads: 1 of {cores} cores (other work keeps" in printed["auto"]
    assert "threads: 1 (--threads 1)" in printed["one"]
    assert seconds["auto"] <= 1.5 * seconds["one"], seconds
