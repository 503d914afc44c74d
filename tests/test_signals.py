"""SIGINT and SIGTERM during ``python -m lstm train``: a checkpoint, one line, an exact resume.

The run checkpoints only at its end (``--checkpoint-every`` beyond ``--steps``), so without
the handling a signal lost every step. Each test starts the command line in a subprocess,
sends the signal once it has reported a few steps, then resumes with the command it printed
and compares the files with an uninterrupted run's, byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, assert_same_weights, run_cli
from lstm import cli
from lstm.cli import resume_command
from lstm.lm.run_folder import MODEL_FILE, STATE_FILE

FLAGS = [*TINY, "--steps", "60", "--checkpoint-every", "1000", "--eval-every", "2"]
FLAGS += ["--eval-bytes", "64"]  # a line on stdout every 2 steps: progress to wait for


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def straight(corpus_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run never interrupted."""
    out = tmp_path_factory.mktemp("signals") / "straight"
    assert cli.main(["train", "--data", str(corpus_file), "--out", str(out), *FLAGS]) == 0
    return out


def stop_after_progress(argv: list[str], number: int) -> tuple[int, str]:
    """Run ``python -m lstm ARGV``, send signal ``number`` after step 6: status and stderr."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lstm", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("step 6/"):
            break
    process.send_signal(number)
    _, error = process.communicate(timeout=120)
    return process.returncode, error


@pytest.mark.parametrize(("number", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_checkpoints_and_the_printed_command_resumes_exactly(
    corpus_file: Path,
    straight: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    number: signal.Signals,
    status: int,
) -> None:
    out = tmp_path / "run folder"  # a space: the printed command must quote it
    argv = ["train", "--data", str(corpus_file), "--out", str(out), *FLAGS, "--force"]
    code, error = stop_after_progress(argv, number)
    assert code == status, error
    match = re.fullmatch(
        rf"{number.name}: stopped at step (\d+) of 60, checkpoint in (.+); resume with: (.+)\n",
        error,
    )
    assert match, error  # one line, and nothing else (no traceback)
    step, folder, command = int(match[1]), match[2], match[3]
    assert 6 <= step < 60
    assert folder == str(out)
    assert (out / STATE_FILE).exists()
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"  # the curves so far
    resume = [*argv[:-1], "--resume"]
    assert shlex.split(command) == ["python", "-m", "lstm", *resume]
    code, printed, _ = run_cli(shlex.split(command)[3:], capsys)
    assert code == 0
    assert f"resuming at step {step} of 60" in printed
    assert_same_weights(straight, out)
    for name in (MODEL_FILE, STATE_FILE):
        assert sha256(out / name) == sha256(straight / name), name


def test_the_resume_command_swaps_force_for_resume_and_quotes() -> None:
    assert resume_command(["train", "--out", "my run", "--force"]) == (
        "python -m lstm train --out 'my run' --resume"
    )
    assert resume_command(["train", "--forc"]) == "python -m lstm train --resume"
    assert resume_command(["train", "--res"]) == "python -m lstm train --res"
    assert resume_command(["train", "--steps", "9"], world_size=2) == (
        "torchrun --nproc_per_node=2 -m lstm train --steps 9 --resume"
    )
