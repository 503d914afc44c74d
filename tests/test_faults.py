"""Training killed with SIGKILL at random moments resumes to the same weights.

Each trial starts ``python -m lstm train`` (a checkpoint every step, so most moments fall
inside or between writes), kills it after a random delay, checks that every run file then
visible is whole, resumes with ``--resume`` and compares the final weights bit for bit with a
run never interrupted. The default suite runs a few trials; ``-m slow`` runs 20 more.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lstm.lm.files import load_tensors
from lstm.lm.run_folder import MODEL_KIND, STATE_FILE, STATE_KIND

ARGS = [
    "train", "--hidden", "8", "--seq-len", "8", "--batch-size", "2", "--steps", "30",
    "--checkpoint-every", "1", "--eval-every", "10", "--quiet", "--device", "cpu",
    "--threads", "1",
]  # fmt: skip


def train(data: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "lstm", *ARGS, "--data", str(data), "--out", str(out), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    """Wait for the process; its exit status and what it wrote on stderr."""
    _, error = process.communicate(timeout=300)
    return process.returncode, error.decode(errors="replace")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A data file and the uninterrupted run's folder; also how long that run took."""
    folder = tmp_path_factory.mktemp("faults")
    data = folder / "data.txt"
    generator = torch.Generator().manual_seed(1)
    data.write_bytes(bytes(torch.randint(97, 123, (8000,), generator=generator).tolist()))
    started = time.perf_counter()
    code, error = finish(train(data, folder / "straight"))
    assert code == 0, error
    return folder, time.perf_counter() - started


def assert_visible_files_are_whole(out: Path) -> None:
    if not out.exists():
        return
    if (out / "config.json").exists():
        json.loads((out / "config.json").read_text())
    if (out / "model.safetensors").exists():
        load_tensors(out / "model.safetensors", kind=MODEL_KIND)
    if (out / STATE_FILE).exists():
        load_tensors(out / STATE_FILE, kind=STATE_KIND)
    if (out / "metrics.jsonl").exists():
        for line in (out / "metrics.jsonl").read_text().splitlines():
            json.loads(line)


def kill_and_resume(reference: tuple[Path, float], trial: int) -> bool:
    """One trial; returns whether the process was really killed (not already finished)."""
    folder, duration = reference
    out = folder / f"trial-{trial}"
    delay = random.Random(trial).uniform(0.05, 1.0) * duration
    process = train(folder / "data.txt", out)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    killed = finish(process)[0] == -signal.SIGKILL
    assert_visible_files_are_whole(out)
    code, error = finish(train(folder / "data.txt", out, "--resume"))
    assert code == 0, error
    ours = load_tensors(out / "model.safetensors", kind=MODEL_KIND)[0]
    straight = load_tensors(folder / "straight" / "model.safetensors", kind=MODEL_KIND)[0]
    assert sorted(ours) == sorted(straight)
    for name, tensor in straight.items():
        assert torch.equal(ours[name], tensor), (trial, name)
    assert not list(out.glob(".*.tmp"))  # a cut-short write leaves nothing once resumed
    return killed


@pytest.mark.parametrize("trial", [0, 1])
def test_killed_runs_resume_to_the_same_weights(reference: tuple[Path, float], trial: int) -> None:
    kill_and_resume(reference, trial)


@pytest.mark.slow
def test_twenty_killed_runs_resume_to_the_same_weights(reference: tuple[Path, float]) -> None:
    killed = sum(kill_and_resume(reference, trial) for trial in range(100, 120))
    print(f"{killed} of 20 trials killed mid-run; all resumed to the same weights")
    assert killed >= 15  # the delays fall inside the run, not after it


def test_a_full_disk_mid_run_is_one_line_and_loses_nothing(
    reference: tuple[Path, float],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lstm import cli

    folder, _ = reference
    out = folder / "full-disk"
    argv = [*ARGS, "--data", str(folder / "data.txt"), "--out", str(out)]
    real_fsync, calls = os.fsync, [0]

    def fsync_until_full(descriptor: int) -> None:
        calls[0] += 1
        if calls[0] > 40:  # a dozen checkpoints in, the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync_until_full)
    assert cli.main(argv) == 1
    error = capsys.readouterr().err
    assert error == "python -m lstm train: error: [Errno 28] No space left on device\n"
    assert_visible_files_are_whole(out)
    assert not list(out.glob(".*.tmp"))  # the failed write cleaned up after itself
    monkeypatch.setattr(os, "fsync", real_fsync)  # space again: resume and finish
    assert cli.main([*argv, "--resume"]) == 0
    ours = load_tensors(out / "model.safetensors", kind=MODEL_KIND)[0]
    straight = load_tensors(folder / "straight" / "model.safetensors", kind=MODEL_KIND)[0]
    assert all(torch.equal(ours[name], tensor) for name, tensor in straight.items())
