"""``python -m lstm train|evaluate|generate|compare``: tiny models, few steps, real files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
import torch

from conftest import (
    TINY,
    assert_same_weights,
    metrics,
    run_cli,
    train_args,
    weights,
)
from lstm import cli
from lstm.lm.config import TrainConfig, flags
from lstm.lm.corpus import read_corpus, split
from lstm.lm.files import load_tensors
from lstm.lm.run_folder import (
    MODEL_FILE,
    RUN_FILES,
    STATE_FILE,
    RunFolder,
    load_run,
    validation_series,
)
from lstm.lm.sample import bits_per_character, printable

# ------------------------------------------------------------------------------ train


def test_train_writes_a_complete_run_folder(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = train_args(corpus_file, out, "--steps", "40", "--eval-every", "20", "--lr", "1e-2")
    code, printed, _ = run_cli(args, capsys)
    assert code == 0
    assert sorted(entry.name for entry in out.iterdir()) == sorted(RUN_FILES)
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["hidden"] == 8
    assert saved["train"]["steps"] == 40
    assert saved["world_size"] == 1
    assert saved["corpus"]["sha256"] == read_corpus(corpus_file).sha256
    records = metrics(out)
    assert [r["step"] for r in records if "train_bpc" in r] == [10, 20, 30, 40]
    assert [r["step"] for r in records if "validation_bpc" in r] == [20, 40]
    final = records[-1]
    assert records[0]["train_bpc"] > final["test_bpc"]  # it learned something
    assert final["test_bpc"] < 5.0  # uniform guessing is 8 bits
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "step 20/40: train" in printed
    assert f"test {final['test_bpc']:.3f} bpc" in printed
    assert "tokens/s" in printed
    # evaluate reads it back and finds the same test BPC
    code, printed, _ = run_cli(["evaluate", "--checkpoint", str(out), "--device", "cpu"], capsys)
    assert code == 0
    assert f"test {final['test_bpc']:.4f} bpc" in printed
    loaded = load_run(out)
    test = split(read_corpus(corpus_file).data).test
    assert bits_per_character(loaded.model, test, 8, 2) == pytest.approx(final["test_bpc"])


def test_generate_prints_the_prompt_and_a_reproducible_sample(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run_cli(train_args(corpus_file, out, "--steps", "4"), capsys)[0] == 0
    sample = ["generate", "--checkpoint", str(out), "--prompt", "the cell", "--length", "50"]
    code, first, _ = run_cli([*sample, "--seed", "1", "--device", "cpu"], capsys)
    assert code == 0
    assert first.startswith("the cell")
    assert run_cli([*sample, "--seed", "1"], capsys)[1] == first
    assert run_cli([*sample, "--seed", "2"], capsys)[1] != first


def test_printable_escapes_control_characters_but_newline_and_tab() -> None:
    text = "a\x1b[31mred\x07\n\tb\u0085c\\d\x7f é"
    assert printable(text) == "a\\x1b[31mred\\x07\n\tb\\u0085c\\d\\x7f é"
    assert all(unicodedata.category(c) != "Cc" or c in "\n\t" for c in printable(text))


def test_generate_escapes_control_bytes_and_raw_writes_them(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    # A model trained on bytes that are mostly ESC and BEL samples them.
    data = tmp_path / "controls.bin"
    data.write_bytes(bytes([27, 7, 27, 91, 27, 7]) * 2000)
    out = tmp_path / "run"
    assert cli.main(train_args(data, out, "--steps", "30", "--lr", "0.03")) == 0
    capsysbinary.readouterr()
    sample = ["generate", "--checkpoint", str(out), "--length", "40", "--prompt", "x"]
    assert cli.main(sample) == 0
    shown = capsysbinary.readouterr().out
    assert b"\x1b" not in shown
    assert b"\x07" not in shown
    assert b"\\x1b" in shown  # escaped, as text
    assert cli.main([*sample, "--raw"]) == 0
    raw = capsysbinary.readouterr().out
    assert raw.startswith(b"x")
    assert len(raw) == 41
    assert b"\x1b" in raw
    assert printable(raw.decode("utf-8", errors="replace")).encode() + b"\n" == shown


def test_resume_continues_exactly(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--steps", "12", "--checkpoint-every", "4", "--eval-every", "4"]
    straight, halted = tmp_path / "straight", tmp_path / "halted"
    # Randomness inside the model that the resume must restore: stochastic-array takes the
    # likeliest lane (it draws only with sample_lanes=True), so dropout between layers draws.
    stochastic = ["--cell", "stochastic-array", "--layers", "2", "--dropout", "0.25"]
    assert run_cli(train_args(corpus_file, straight, *common, *stochastic), capsys)[0] == 0
    first_leg = ["--steps", "6", "--checkpoint-every", "4", "--eval-every", "4"]
    assert run_cli(train_args(corpus_file, halted, *first_leg, *stochastic), capsys)[0] == 0
    resumed = train_args(corpus_file, halted, *common, *stochastic, "--resume")
    code, printed, _ = run_cli(resumed, capsys)
    assert code == 0
    assert "resuming at step 6 of 12" in printed
    assert_same_weights(straight, halted)
    assert sha256(halted / MODEL_FILE) == sha256(straight / MODEL_FILE)  # byte for byte
    # The first leg ended at step 6, so it logged steps 5-6 there; records before and after match.
    straight_records, halted_records = metrics(straight), metrics(halted)
    straight_bpc = {r["step"]: r["train_bpc"] for r in straight_records if "train_bpc" in r}
    halted_bpc = {r["step"]: r["train_bpc"] for r in halted_records if "train_bpc" in r}
    assert sorted(straight_bpc) == [4, 8, 12]
    assert sorted(halted_bpc) == [4, 6, 8, 12]
    assert halted_bpc[4] == straight_bpc[4]
    assert halted_bpc[12] == straight_bpc[12]
    # The training state leaves out the times, and the resume took them back from metrics.jsonl.
    assert all("tokens_per_second" in r for r in halted_records if "train_bpc" in r)
    state = load_tensors(halted / STATE_FILE, kind="lstm-training-state/1")[1]
    assert [r["step"] for r in state["metrics"] if "tokens_per_second" not in r] == [4, 6, 8, 12]
    # Its records aside (the first leg's own at step 6 changed the next), the training state
    # is the straight run's; byte for byte where the first leg stops between records (after a
    # signal: test_signals.py).
    straight_state = load_tensors(straight / STATE_FILE, kind="lstm-training-state/1")[1]
    assert {**state, "metrics": None} == {**straight_state, "metrics": None}


def test_resume_with_only_the_run_folder_takes_its_flags_from_config_json(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first leg's flags (data, sizes, cell, layers, dropout, device, ...) are read back
    # from config.json; --steps, a flag a resume may change, is the only one given.
    flags_ = ["--cell", "stochastic-array", "--layers", "2", "--dropout", "0.25"]
    flags_ += ["--checkpoint-every", "4", "--eval-every", "4"]
    straight, halted = tmp_path / "straight", tmp_path / "halted"
    assert run_cli(train_args(corpus_file, straight, *flags_, "--steps", "12"), capsys)[0] == 0
    assert run_cli(train_args(corpus_file, halted, *flags_, "--steps", "6"), capsys)[0] == 0
    resumed = ["train", "--out", str(halted), "--resume", "--steps", "12", "--quiet"]
    code, printed, _ = run_cli(resumed, capsys)
    assert code == 0
    assert "resuming at step 6 of 12" in printed
    assert "threads: 1 (--threads 1)" in printed  # the run's own count, from config.json
    assert sha256(halted / MODEL_FILE) == sha256(straight / MODEL_FILE)
    # Without --steps a resume goes on to the last leg's steps (12, not config.json's 6):
    # here it is done, and nothing changes.
    code, printed, _ = run_cli(["train", "--out", str(halted), "--resume", "--quiet"], capsys)
    assert code == 0
    assert sha256(halted / MODEL_FILE) == sha256(straight / MODEL_FILE)


def test_resume_with_only_the_run_folder_runs_on_the_run_s_threads(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = torch.get_num_threads()
    out = tmp_path / "run"
    try:
        assert (
            run_cli(train_args(corpus_file, out, "--steps", "2", "--threads", "1"), capsys)[0] == 0
        )
        torch.set_num_threads(2)
        resumed = ["train", "--out", str(out), "--resume", "--steps", "3", "--quiet"]
        assert run_cli(resumed, capsys)[0] == 0
        assert torch.get_num_threads() == 1  # config.json's count, applied before training
    finally:
        torch.set_num_threads(before)


def test_resume_refuses_a_flag_given_that_differs_from_the_run(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A flag that shapes the weights, given and different from config.json's, is refused
    # as before; given and equal, it is taken (--hidden 8 is the trained run's own).
    code, _, err = run_cli(["train", "--out", str(trained), "--resume", "--hidden", "16"], capsys)
    assert code == 2
    assert "--hidden: 8 -> 16" in err
    same = ["train", "--out", str(trained), "--resume", "--hidden", "8", "--quiet"]
    assert run_cli(same, capsys)[0] == 0


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resuming_a_finished_run_changes_nothing(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run_cli(train_args(corpus_file, out, "--steps", "3"), capsys)[0] == 0
    before = weights(out)
    code, printed, _ = run_cli(train_args(corpus_file, out, "--steps", "3", "--resume"), capsys)
    assert code == 0
    assert "no steps left to train" in printed
    after = weights(out)
    assert all(torch.equal(after[name], tensor) for name, tensor in before.items())
    code, printed, _ = run_cli(train_args(corpus_file, out, "--steps", "4", "--resume"), capsys)
    assert code == 0
    assert re.search(r"over this run's 1 step in [0-9.]+s$", printed.rstrip("\n"))  # not "1 steps"


def test_validation_follows_eval_every_not_the_log_interval(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert (
        run_cli(train_args(corpus_file, out, "--steps", "30", "--eval-every", "15"), capsys)[0] == 0
    )
    records = metrics(out)
    assert [r["step"] for r in records if "validation_bpc" in r] == [15, 30]
    assert [r["step"] for r in records if "train_bpc" in r] == [10, 15, 20, 30]


def test_impl_torch_follows_the_same_loss_trajectory(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--steps", "20", "--layers", "2", "--eval-every", "10"]
    _, ours_printed, _ = run_cli(train_args(corpus_file, tmp_path / "lstm", *common), capsys)
    code, torch_printed, _ = run_cli(
        train_args(corpus_file, tmp_path / "torch", *common, "--impl", "torch"), capsys
    )
    assert code == 0
    assert "training torch.nn.LSTM via --impl torch (2 x 8, " in torch_printed
    assert "training this package's lstm.LSTM (2 x 8, " in ours_printed
    assert "\nengine: kernel (LSTM's own step: torch.lstm" in ours_printed
    assert "\nengine: torch.nn.LSTM (--impl torch" in torch_printed
    assert "tokens/s" in torch_printed
    assert "tokens/s" in ours_printed
    ours, theirs = metrics(tmp_path / "lstm"), metrics(tmp_path / "torch")
    for mine, other in zip(ours, theirs, strict=True):
        for key in ("train_bpc", "validation_bpc", "test_bpc"):
            if key in mine:
                assert other[key] == pytest.approx(mine[key], abs=1e-4), (mine["step"], key)
    evaluated = run_cli(["evaluate", "--checkpoint", str(tmp_path / "torch")], capsys)[1]
    assert f"test {theirs[-1]['test_bpc']:.4f} bpc" in evaluated


def test_compare_trains_every_cell_at_one_budget(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "compare"
    argv = ["compare", "--data", str(corpus_file), "--out", str(out), *TINY, "--hidden", "16"]
    code, printed, _ = run_cli([*argv, "--steps", "6", "--cells", "lstm", "array"], capsys)
    assert code == 0
    results = json.loads((out / "compare.json").read_text())
    entries = results["entries"]
    assert [entry["cell"] for entry in entries] == ["lstm", "array"]
    budget = entries[0]["parameters"]
    assert abs(entries[1]["parameters"] - budget) <= 0.05 * budget
    assert entries[1]["hidden"] < 16  # four lanes cost parameters: a narrower layer
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "| lstm | 16 |" in printed
    for entry in entries:
        assert f"{entry['test_bpc']:.3f}" in printed
    assert run_cli([*argv, "--steps", "6"], capsys)[0] == 2  # results are not overwritten
    for entry in entries:  # the chart's final star is the table's figure, at the last step
        series = validation_series(RunFolder(out / entry["cell"]).read_metrics())
        assert series.final == (6, pytest.approx(entry["validation_bpc"]))
        assert series.points[-1][0] == 6


def test_the_validation_curve_reaches_the_last_step_and_says_what_it_reads(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = train_args(corpus_file, out, "--steps", "7", "--eval-every", "3", "--eval-bytes", "64")
    assert run_cli(argv, capsys)[0] == 0
    series = validation_series(RunFolder(out).read_metrics())
    assert [step for step, _ in series.points] == [3, 6, 7]  # 7 is not a multiple of 3
    assert series.final is not None
    assert series.final[0] == 7
    # the whole validation split, read as training reads it; the points read 64 bytes
    run = load_run(out)
    validation = split(read_corpus(corpus_file).data).validation
    whole = bits_per_character(run.model, validation, run.config.seq_len, run.config.batch_size)
    assert series.final[1] == pytest.approx(whole, abs=1e-6)
    assert series.points[-1][1] != pytest.approx(whole, abs=1e-6)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "expected --steps >= 1, got 0"),
        (["--seq-len", "1"], "expected --seq-len >= 2, got 1"),
        (["--cell", "gru"], "unknown cell 'gru'; expected one of"),
        (["--cell", "array", "--k", "0"], "expected --k >= 1, got 0"),
        (["--k", "2"], "cell 'lstm' has no lanes; expected no k, got k=2"),
        (["--impl", "torch", "--cell", "slstm"], "expected cell 'lstm', got 'slstm'"),
        (["--lr", "-1"], "expected --lr to be a finite number > 0, got -1.0"),
        (["--dropout", "1"], r"expected --dropout in \[0, 1\), got 1.0"),
        (["--batch-size", "0"], "expected --batch-size >= 1, got 0"),
        (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
        (["--resume", "--force"], "argument --force: not allowed with argument --resume"),
        (["--seq-len", "4000"], "data too short: 12,"),
    ],
)
def test_bad_training_values(
    corpus_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "run"
    code, _, error = run_cli(train_args(corpus_file, out, *extra), capsys)
    assert code == 2
    assert len(error.splitlines()) == 1, error
    assert error.startswith("python -m lstm train: error: ")
    assert re.search(message, error), error
    assert not out.exists()  # nothing written


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--checkpoint", "/nonexistent/run"], "checkpoint folder /nonexistent/run"),
        (["generate", "--checkpoint", "{run}", "--temperature", "0"], "temperature > 0, got 0.0"),
        (["generate", "--checkpoint", "{run}", "--length", "-2"], "length >= 0, got -2"),
        (["evaluate", "--checkpoint", "{run}", "--data", "/nonexistent.txt"], "does not exist"),
        (["evaluate"], "the following arguments are required: --checkpoint"),
    ],
)
def test_bad_evaluate_and_generate_values(
    trained_run: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, printed, error = run_cli([part.format(run=trained_run) for part in argv], capsys)
    assert code == 2
    assert printed == ""
    assert len(error.splitlines()) == 1, error
    assert message in error


def test_errors_name_what_was_found_and_what_to_pass_instead(
    trained_run: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def error_of(argv: list[str]) -> str:
        code, printed, error = run_cli(argv, capsys)
        assert code == 2
        assert printed == ""
        assert len(error.splitlines()) == 1, error
        return error

    # a run's file instead of its folder
    error = error_of(["evaluate", "--checkpoint", str(trained_run / MODEL_FILE)])
    assert f"expects a run folder, got the file {trained_run / MODEL_FILE}" in error
    assert f"pass its folder: --checkpoint {trained_run}" in error
    # a compare folder instead of one of its runs
    compared = tmp_path / "compare"
    for name in ("lstm", "array"):
        shutil.copytree(trained_run, compared / name)
    (compared / "compare.json").write_text("{}")
    error = error_of(["generate", "--checkpoint", str(compared)])
    assert f"{compared} is a compare folder, not a run; pass one of its runs: " in error
    assert f"--checkpoint {compared / 'array'}, --checkpoint {compared / 'lstm'}" in error
    # an evaluation file too small for its 5 % test split
    small = tmp_path / "five.txt"
    small.write_bytes(b"hello")
    error = error_of(["evaluate", "--checkpoint", str(trained_run), "--data", str(small)])
    assert f"{small} has 5 bytes: evaluate reads its test split, the last 5 % (0 bytes)" in error
    assert "at least 40 bytes" in error
    # a truncated training state: the weights are intact, and how to start over
    state = (trained / STATE_FILE).read_bytes()
    (trained / STATE_FILE).write_bytes(state[: len(state) // 2])
    error = error_of(["train", "--out", str(trained), "--resume", "--steps", "4"])
    assert f"{trained / MODEL_FILE} is intact (step 2)" in error
    assert f"--out {trained} --force" in error


def test_empty_and_missing_data_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    for data, message in [("empty.txt", "is empty"), ("absent.txt", "does not exist")]:
        out = tmp_path / "run"
        code, _, error = run_cli(
            ["train", "--data", str(tmp_path / data), "--out", str(out), *TINY], capsys
        )
        assert code == 2
        assert f"data file {tmp_path / data} {message}" in error
        assert not out.exists()


def test_an_unwritable_folder_is_one_clear_line(
    corpus_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # chmod cannot stop root, so the refusal is simulated where every write begins.
    import tempfile

    def refuse(*args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(tmp_path / "run"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, _, error = run_cli(train_args(corpus_file, tmp_path / "run", "--steps", "2"), capsys)
    assert code == 1
    assert error == (
        f"python -m lstm train: error: [Errno 13] Permission denied: '{tmp_path / 'run'}'\n"
    )


def test_missing_extra_is_named(
    corpus_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now fails
    code, _, error = run_cli(train_args(corpus_file, tmp_path / "run", "--steps", "2"), capsys)
    assert code == 2
    assert error == "python -m lstm train: error: needs tqdm: pip install 'pure-lstm[cli]'\n"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, printed, _ = run_cli(["--help"], capsys)
    assert code == 0
    for command in ("train", "evaluate", "generate", "compare", "bench"):
        assert command in printed


@pytest.mark.parametrize("command", ["train", "compare", "evaluate", "generate"])
def test_the_configuration_flags_are_the_fields_of_train_config(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, printed, _ = run_cli([command, "--help"], capsys)
    assert code == 0
    for option in flags(command):
        assert option.option_string in printed
    if command in ("train", "compare"):  # no flags given: the fields' defaults
        args = cli.build_parser().parse_args([command])
        steps = 400 if command == "train" else 300
        assert TrainConfig.from_flags(vars(args), command) == TrainConfig(steps=steps)
    assert "--clip" not in printed  # a field without a flag


# ------------------------------------------------------------------------------ many processes


def torchrun(*argv: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*command, "-m", "lstm", *argv], capture_output=True, text=True, timeout=300, check=False
    )


def test_two_processes_train_with_ddp_and_resume_the_same(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--data", str(corpus_file), *TINY, "--checkpoint-every", "3", "--eval-every", "6"]
    straight, halted = tmp_path / "straight", tmp_path / "halted"
    done = torchrun("train", *common, "--steps", "12", "--out", str(straight))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("training this package's lstm.LSTM") == 1  # process 0 alone reports
    assert "with 2 process(es)" in done.stdout
    assert json.loads((straight / "config.json").read_text())["world_size"] == 2
    state = load_tensors(straight / STATE_FILE, kind="lstm-training-state/1")[0]
    assert state["rng/cpu"].shape[0] == 2  # one RNG state per process
    assert state["carry/0"].shape[-2] == 4  # both processes' streams: 2 x batch 2
    first = torchrun("train", *common, "--steps", "6", "--out", str(halted))
    assert first.returncode == 0, first.stderr
    resumed = torchrun("train", *common, "--steps", "12", "--out", str(halted), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step 6 of 12" in resumed.stdout
    assert_same_weights(straight, halted)
    # a different number of processes cannot continue the run exactly: refused (one
    # process, so this one, without a launcher)
    code, _, error = run_cli(
        ["train", *common, "--steps", "14", "--out", str(halted), "--resume"], capsys
    )
    assert code == 2
    assert "it ran on 2 process(es), expected the same, got 1" in error


def _children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads worker processes from /proc")
def test_a_killed_worker_restarts_the_group_under_torchrun_to_the_same_weights(
    corpus_file: Path, tmp_path: Path
) -> None:
    common = ["--data", str(corpus_file), *TINY, "--checkpoint-every", "300"]
    common += ["--eval-every", "3000", "--steps", "3000", "--resume"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launcher += ["--nproc_per_node=2", "--max-restarts=2", "-m", "lstm", "train"]
    environment = {**os.environ, "LSTM_DIST_TIMEOUT": "60"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run(
        [*launcher, *common, "--out", str(straight)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    process = subprocess.Popen(
        [*launcher, *common, "--out", str(killed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        deadline = time.monotonic() + 300
        while not (killed / STATE_FILE).exists():  # the first checkpoint is written
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.05)
        workers = _children(process.pid)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)
        printed, error = process.communicate(timeout=600)  # bounded: never hangs the suite
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, error
    assert "resuming at step" in printed  # the restarted round continued the run
    assert_same_weights(straight, killed)
    for name in (MODEL_FILE, STATE_FILE):
        assert sha256(killed / name) == sha256(straight / name), name
