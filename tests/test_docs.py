"""Every Python example in the docs runs as written, and so do the docstring examples."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

import lstm
import lstm.cells.array
import lstm.cells.lstm
import lstm.driver

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(
    path for path in DOCS.rglob("*.md") if "```python" in path.read_text(encoding="utf-8")
)


def test_the_pages_with_examples_are_found() -> None:
    names = {path.name for path in PAGES}
    assert {"quickstart.md", "tutorial.md", "migration.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=[str(path.relative_to(DOCS)) for path in PAGES])
def test_page_examples_run(
    page: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A page may register a cell; keep that from leaking into other tests.
    monkeypatch.setattr(lstm.registry, "CELLS", dict(lstm.CELLS))
    monkeypatch.setattr(lstm, "CELLS", lstm.registry.CELLS)
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)


@pytest.mark.parametrize(
    "module", [lstm.cells.lstm, lstm.cells.array, lstm.driver], ids=lambda m: m.__name__
)
def test_docstring_examples(module: object) -> None:
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)  # type: ignore[arg-type]
    assert tried > 0
    assert failures == 0
