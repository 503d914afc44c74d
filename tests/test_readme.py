"""The README's Python example runs as written and does what its comments say."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import torch

from lstm import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    for name, shape in (("out", (4, 10, 64)), ("hidden", (4, 4, 32)), ("state", (4, 4, 32))):
        value = namespace[name]
        assert isinstance(value, torch.Tensor)
        assert value.shape == shape, name
    assert len(blocks[0].strip().splitlines()) <= 14


def _setup_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, flags=re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.startswith("pip install")]


def test_readme_main_job_trains_then_samples_the_same_run() -> None:
    main_job, test_command = _setup_commands()
    install, train, generate = main_job.split(" && ")
    assert install == "pip install -r requirements.txt"
    parser = cli.build_parser()
    train_args = parser.parse_args(shlex.split(train)[3:])
    generate_args = parser.parse_args(shlex.split(generate)[3:])
    assert shlex.split(train)[:3] == ["python", "-m", "lstm"]
    assert (train_args.command, generate_args.command) == ("train", "generate")
    assert generate_args.checkpoint == train_args.out
    assert train_args.force  # the main job can be run again on the same machine
    assert test_command == "pip install -r requirements-dev.txt && python -m pytest"
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines()
