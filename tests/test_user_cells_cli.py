"""A user's own cell on the command line, end to end, as the tutorial shows it.

The tutorial's ``GatedRecurrentCell`` is written to a module of its own, ``mycells.py``,
and the tutorial's ``python -m lstm`` commands run as written in fresh processes (with a
few steps on a small file added to ``train`` and a tiny shape to ``bench``): ``train`` says
whose class it trains, ``evaluate`` and ``generate`` import the class from the run's
``config.json``, and say so when they cannot. Then the same class registered by name
through the ``lstm.cells`` entry-point group of an installed distribution's metadata.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import TINY

DOCS = Path(__file__).resolve().parents[1] / "docs"
TUTORIAL = (DOCS / "tutorial.md").read_text()


def tutorial_class(name: str) -> str:
    """The source of class ``name`` in the tutorial's code blocks, up to its last line."""
    match = re.search(rf"^class {name}\(.*?(?=^\S)", TUTORIAL + "\nEND", re.S | re.M)
    assert match, name
    return match[0]


def tutorial_commands() -> list[list[str]]:
    """The ``python -m lstm`` commands of the tutorial's command-line section, split."""
    section = TUTORIAL.split("## On the command line", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.strip().splitlines()]


def run(argv: list[str], folder: Path, *, path: str | None) -> subprocess.CompletedProcess[str]:
    """``argv`` (``python -m lstm ...``, with ``PYTHONPATH=...`` in front or not) in
    ``folder``, with ``path`` as ``PYTHONPATH`` (``None``: none)."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if path is not None:
        environment["PYTHONPATH"] = path
    command = [part for part in argv if not part.startswith("PYTHONPATH=")]
    assert command[:3] == ["python", "-m", "lstm"], command
    return subprocess.run(
        [sys.executable, *command[1:]],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def module_folder(tmp_path: Path, corpus_file: Path) -> Path:
    """A folder holding ``mycells.py`` (the tutorial's class) and a small data file."""
    source = "import lstm\nimport torch\nfrom torch import nn\n\n\n"
    (tmp_path / "mycells.py").write_text(source + tutorial_class("GatedRecurrentCell"))
    (tmp_path / "data.txt").write_bytes(corpus_file.read_bytes())
    return tmp_path


def test_the_tutorial_s_commands_run_a_user_cell_in_fresh_processes(module_folder: Path) -> None:
    train, evaluate, generate, bench = tutorial_commands()
    assert train[1:6] == ["python", "-m", "lstm", "train", "--cell"]
    small = [*TINY, "--data", "data.txt", "--steps", "3"]
    trained = run([*train[: train.index("--steps")], *small], module_folder, path=".")
    assert trained.returncode == 0, trained.stderr
    assert "training your mycells.GatedRecurrentCell (1 x 8" in trained.stdout
    run_folder = module_folder / "runs" / "gated"
    assert '"cell": "mycells:GatedRecurrentCell"' in (run_folder / "config.json").read_text()
    evaluated = run(evaluate, module_folder, path=".")
    assert evaluated.returncode == 0, evaluated.stderr
    assert re.match(r"test \d+\.\d{4} bpc on [\d,]+ bytes", evaluated.stdout), evaluated.stdout
    generated = run([*generate, "--length", "20"], module_folder, path=".")
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("def ")
    timed = run([*bench[:-2], "--shape", "2,4,3,8", "--rounds", "1"], module_folder, path=".")
    assert timed.returncode == 0, timed.stderr
    assert "mycells:GatedRecurrentCell" in timed.stdout
    # Without the module importable (another folder, no PYTHONPATH), one line that says what
    # to do.
    elsewhere = ["python", "-m", "lstm", "evaluate", "--checkpoint", str(run_folder)]
    missing = run(elsewhere, module_folder.parent, path=None)
    assert missing.returncode == 2
    assert "cannot import cell 'mycells:GatedRecurrentCell'" in missing.stderr
    assert "installed, or on PYTHONPATH" in missing.stderr
    assert len(missing.stderr.splitlines()) == 1, missing.stderr


def test_an_installed_package_registers_its_cell_by_name(module_folder: Path) -> None:
    # An installed distribution is its metadata on sys.path: entry_points.txt names the class.
    metadata = module_folder / "site" / "mycells-0.1.dist-info"
    metadata.mkdir(parents=True)
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: mycells\nVersion: 0.1\n")
    (metadata / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [lstm.cells]
            gated = mycells:GatedRecurrentCell
            """
        )
    )
    path = os.pathsep.join([str(module_folder), str(module_folder / "site")])
    command = ["python", "-m", "lstm", "train", "--cell", "gated", "--out", "runs/named"]
    trained = run([*command, *TINY, "--data", "data.txt", "--steps", "2"], module_folder, path=path)
    assert trained.returncode == 0, trained.stderr
    assert "training your mycells.GatedRecurrentCell" in trained.stdout
    unknown = run([*command, "--cell", "gatd", "--force"], module_folder, path=path)
    assert unknown.returncode == 2
    assert "unknown cell 'gatd'" in unknown.stderr
    assert "'gated'" in unknown.stderr  # the installed name is listed beside the built-in ones


def test_compare_sizes_a_user_cell_to_the_budget(
    module_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lstm import cli

    monkeypatch.syspath_prepend(str(module_folder))
    out = module_folder / "compare"
    argv = ["compare", "--cells", "lstm", "mycells:GatedRecurrentCell", "--out", str(out)]
    argv += [*TINY, "--hidden", "16", "--data", str(module_folder / "data.txt"), "--steps", "2"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| mycells:GatedRecurrentCell |" in printed
    assert (out / "mycells.GatedRecurrentCell" / "config.json").is_file()
    assert (out / "compare.png").is_file()
