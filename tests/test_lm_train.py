"""The training loop's parts: the state it carries, the processes, the device, a whole run."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from lstm.lm import train as train_module
from lstm.lm.config import TrainConfig
from lstm.lm.corpus import read_corpus, split
from lstm.lm.model import build_model, parameter_count
from lstm.lm.run_folder import load_run
from lstm.lm.sample import bits_per_character
from lstm.lm.train import (
    DIST_TIMEOUT_S,
    Processes,
    TrainingState,
    collapse_hint,
    dist_timeout,
    resolve_device,
    train,
)


def test_training_state_sums_the_loss_until_a_record_takes_it() -> None:
    model = build_model(TrainConfig(hidden=4))
    state = TrainingState(model, torch.optim.Adam(model.parameters()))
    assert (state.step, state.carry, state.metrics) == (0, None, [])
    state.add_loss(8.0)
    state.add_loss(7.0)
    assert (state.pending_bits, state.pending_steps) == (15.0, 2)
    assert state.take_pending() == 7.5
    assert (state.pending_bits, state.pending_steps) == (0.0, 0)
    assert isinstance(state.pending_bits, float)  # saved as 0.0, as before


def test_processes_read_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Processes.from_environment() == Processes(0, 1, 0)
    assert not Processes().distributed
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    processes = Processes.from_environment()
    assert processes == Processes(3, 4, 1)
    assert processes.distributed
    assert not processes.leader
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(ValueError, match="expected integer RANK/WORLD_SIZE/LOCAL_RANK"):
        Processes.from_environment()


def test_resolve_device() -> None:
    assert resolve_device("cpu", Processes()) == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto", Processes(1, 2, 1)) == torch.device("cuda", 1)
    else:
        assert resolve_device("auto", Processes()) == torch.device("cpu")
        with pytest.raises(ValueError, match="expected --device cuda to find a CUDA device"):
            resolve_device("cuda", Processes())


def test_processes_take_their_own_rows_of_the_streams() -> None:
    assert Processes().rows(4) == slice(0, 4)
    assert Processes(2, 3, 0).rows(4) == slice(8, 12)


def test_train_reports_through_log_and_returns_a_summary(corpus_file: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        data=str(corpus_file), hidden=4, seq_len=4, batch_size=2, steps=3, eval_every=2,
        device="cpu",
    )  # fmt: skip
    lines: list[str] = []
    summary = train(config, tmp_path / "run", progress=False, log=lines.append)
    assert (summary.folder, summary.step) == (tmp_path / "run", 3)
    assert summary.parameters == parameter_count(build_model(config))
    assert 7.0 < summary.test_bpc < 9.0
    assert summary.tokens_per_second > 0
    assert lines[0].startswith("training this package's lstm.LSTM (1 x 4, 2,")
    assert "impl" not in lines[0]  # it named the cell but not what runs it: "impl lstm"
    assert lines[1].startswith("engine: kernel (LSTM's own step: torch.lstm")
    assert lines[2].startswith("threads: ")  # the count it runs on, and how to choose it
    assert "--threads" in lines[2]
    assert lines[3].startswith("step 2/3: train ")
    assert lines[-1].startswith(
        f"done: step 3, train {summary.train_bpc:.3f} bpc, validation "
        f"{summary.validation_bpc:.3f} bpc, test {summary.test_bpc:.3f} bpc (each on "
    )
    with pytest.raises(ValueError, match="expected at most one of --resume and --force"):
        train(config, tmp_path / "run", resume=True, force=True)


def test_the_final_figures_come_from_one_evaluator_on_as_many_bytes_of_each_split(
    corpus_file: Path, tmp_path: Path
) -> None:
    config = TrainConfig(
        data=str(corpus_file), hidden=4, seq_len=4, batch_size=2, steps=4, eval_every=2,
        layers=2, dropout=0.5, device="cpu",
    )  # fmt: skip
    lines: list[str] = []
    summary = train(config, tmp_path / "run", progress=False, log=lines.append)
    loaded = load_run(tmp_path / "run")
    parts = split(read_corpus(corpus_file).data)
    size = parts.test.numel()
    assert parts.validation.numel() == size
    expected = {
        name: bits_per_character(loaded.model, data, config.seq_len, config.batch_size)
        for name, data in [
            ("train", parts.train[:size]), ("validation", parts.validation), ("test", parts.test)
        ]
    }  # fmt: skip
    assert summary.train_bpc == pytest.approx(expected["train"], abs=1e-6)
    assert summary.validation_bpc == pytest.approx(expected["validation"], abs=1e-6)
    assert summary.test_bpc == pytest.approx(expected["test"], abs=1e-6)
    final = loaded_metrics(tmp_path / "run")[-1]
    assert final["final_train_bpc"] == pytest.approx(expected["train"], abs=1e-6)
    assert final["test_bpc"] == pytest.approx(expected["test"], abs=1e-6)
    last_record = loaded_metrics(tmp_path / "run")[-2]
    assert final["final_train_bpc"] != last_record["train_bpc"]  # not the running mean
    assert f"(each on {size:,} bytes, in eval mode;" in lines[-1]


def loaded_metrics(folder: Path) -> list[dict[str, float]]:
    """The records of ``folder``'s ``metrics.jsonl``."""
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, so tqdm draws its bar there."""

    def isatty(self) -> bool:
        return True


def tiny_config(corpus_file: Path, steps: int) -> TrainConfig:
    """A model small enough to train ``steps`` steps in a moment."""
    return TrainConfig(
        data=str(corpus_file), hidden=4, seq_len=4, batch_size=2, steps=steps, eval_every=2,
        device="cpu",
    )  # fmt: skip


def test_report_lines_never_share_a_line_with_the_progress_bar(
    corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)  # the bar's stream, and the lines' too
    train(
        tiny_config(corpus_file, 4), tmp_path / "run", log=lambda line: print(line, file=terminal)
    )
    shown = terminal.getvalue()
    assert "step/s" in shown or "it/s" in shown or "4/4" in shown  # the bar was drawn
    for report in ("step 2/4: train ", "step 4/4: train ", "done: step 4, "):
        where = shown.index(report)
        assert shown[where - 1] in "\r\n", repr(shown[max(where - 40, 0) : where + 20])
    assert "step 1/4, " not in shown  # no heartbeat with a bar


def test_off_a_terminal_a_silent_log_gets_a_heartbeat(
    corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]

    def clock() -> float:  # 16 s pass at every look: 30 s of silence every few steps
        now[0] += 16.0
        return now[0]

    monkeypatch.setattr(train_module, "_clock", clock)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: no bar
    lines: list[str] = []
    train(tiny_config(corpus_file, 5), tmp_path / "run", log=lines.append)
    beats = [line for line in lines if re.fullmatch(r"step \d/5, [\d,]+ tokens/s", line)]
    assert beats, lines
    assert lines[-1].startswith("done: step 5, ")  # the lines go on as before
    quiet: list[str] = []
    train(tiny_config(corpus_file, 5), tmp_path / "quiet", progress=False, log=quiet.append)
    assert not [line for line in quiet if re.fullmatch(r"step \d/5, .*", line)]


def test_the_heartbeat_waits_for_30_silent_seconds() -> None:
    from tqdm import tqdm

    now = [100.0]
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "_clock", lambda: now[0])
        bar = tqdm(total=10, disable=True)
        reporter = train_module._Reporter(lines.append, bar, heartbeat=True, tokens_per_step=50)
        now[0] += 29.9
        reporter.after_step(3, 10)
        assert lines == []
        reporter.write("step 3/10: train 7.000 bpc")
        now[0] += 29.9
        reporter.after_step(4, 10)
        now[0] += 0.1
        reporter.after_step(5, 10)  # 30 s since the report line, 2 steps of 50 tokens
        assert lines == ["step 3/10: train 7.000 bpc", "step 5/10, 3 tokens/s"]
        now[0] += 29.0
        reporter.after_step(6, 10)
        assert len(lines) == 2  # the heartbeat counts as a line


@pytest.mark.parametrize(
    ("speeds", "threads", "expected"),
    [
        ([100.0, 17_000.0, 16_500.0, 2_100.0], 2, "from 17,000 to 2,100 tokens/s on 2 threads"),
        ([100.0, 17_000.0, 16_500.0, 6_000.0], 2, None),  # above a third: not collapsed
        ([100.0, 17_000.0, 16_500.0, 2_100.0], 1, None),  # one thread: nothing to suggest
        ([17_000.0, 2_100.0], 2, None),  # too few records (the first is set-up)
        ([30_000.0, 9_000.0, 2_100.0], 2, "from 9,000 to 2,100"),  # the first is left out
    ],
)
def test_a_collapse_of_throughput_on_several_threads_suggests_one(
    speeds: list[float], threads: int, expected: str | None
) -> None:
    hint = collapse_hint(speeds, threads)
    if expected is None:
        assert hint is None
    else:
        assert hint is not None
        assert expected in hint
        assert "--threads 1" in hint


def test_the_wait_for_other_processes_is_bounded_and_configurable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LSTM_DIST_TIMEOUT", raising=False)
    assert dist_timeout() == DIST_TIMEOUT_S == 300.0
    monkeypatch.setenv("LSTM_DIST_TIMEOUT", "45.5")
    assert dist_timeout() == 45.5
    for bad in ("0", "-3", "soon", "nan"):
        monkeypatch.setenv("LSTM_DIST_TIMEOUT", bad)
        with pytest.raises(
            ValueError, match=f"expected LSTM_DIST_TIMEOUT in seconds > 0, got '{bad}'"
        ):
            dist_timeout()
