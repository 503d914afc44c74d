"""The README's Python example runs as written and does what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import torch

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
