"""Every Python example in the docs runs as written, and so do the docstring examples."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import lstm

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(
    path for path in DOCS.rglob("*.md") if "```python" in path.read_text(encoding="utf-8")
)


def _modules_with_examples() -> list[str]:
    """The core's modules whose source holds a docstring example (``>>>``), found by reading
    the files: the list follows the core's layout as it changes. The language model
    (``lstm.lm``) and ``__main__`` are not the core."""
    names = []
    for module in pkgutil.walk_packages(lstm.__path__, prefix="lstm."):
        if module.name.startswith("lstm.lm") or module.name.endswith("__main__"):
            continue
        origin = getattr(importlib.util.find_spec(module.name), "origin", None)
        if origin and origin.endswith(".py") and ">>> " in Path(origin).read_text("utf-8"):
            names.append(module.name)
    return sorted(names)


MODULES = _modules_with_examples()


@pytest.fixture
def registry() -> Iterator[None]:
    """Restores ``lstm.CELLS`` (the same dict object) after a page registers a cell in it."""
    saved = dict(lstm.CELLS)
    yield
    lstm.CELLS.clear()
    lstm.CELLS.update(saved)


def test_the_pages_with_examples_are_found() -> None:
    names = {path.name for path in PAGES}
    assert {"quickstart.md", "tutorial.md", "migration.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=[str(path.relative_to(DOCS)) for path in PAGES])
@pytest.mark.usefixtures("registry")  # a page may register a cell; it must not leak
def test_page_examples_run(page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)


def test_the_modules_with_examples_are_found() -> None:
    assert {"lstm.cells.lstm", "lstm.cells.array"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0
    assert failures == 0
