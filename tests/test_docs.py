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

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
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


CODE_LINE_MAX = 100
"""Longest line of a fenced code block in the docs. At 1280 px the theme shows 102 characters
per code block on every page (measured with docs/browse.py), so no block scrolls sideways."""

EXAMPLE_LINE_MAX = 94
"""Longest line of a docstring example, its ``>>> `` prompt included: the API page nests the
examples in definition lists, where a block shows 94 characters at 1280 px (docs/browse.py)."""


def rendered_pages() -> list[Path]:
    """Every page of the docs, and every file a page pulls in with ``{include}``."""
    pages = sorted(DOCS.rglob("*.md"))
    included = [
        (page.parent / target).resolve()
        for page in pages
        for target in re.findall(r"^```\{include\} (\S+)", page.read_text("utf-8"), re.M)
    ]
    return pages + included


def long_code_lines(text: str, limit: int) -> list[str]:
    """Lines longer than ``limit`` inside the fenced code blocks of Markdown ``text``.

    Directive blocks (```` ```{eval-rst} ````, ```` ```{toctree} ````) are not code a reader
    sees and are skipped.
    """
    long, fence = [], None  # fence: the opening line of the block we are in, if any
    for line in text.splitlines():
        if line.startswith("```"):
            fence = line if fence is None else None
        elif fence is not None and not fence.startswith("```{") and len(line) > limit:
            long.append(line)
    return long


def test_long_code_lines_finds_only_lines_inside_code_blocks() -> None:
    text = "prose " * 30 + "\n```python\nshort\n" + "x" * 12 + "\n```\n" + "y" * 12 + "\n"
    text += "```{eval-rst}\n" + "z" * 12 + "\n```\n"
    assert long_code_lines(text, 10) == ["x" * 12]


def test_the_included_pages_are_checked_too() -> None:
    assert (DOCS.parent / "BENCHMARKS.md").resolve() in rendered_pages()


@pytest.mark.parametrize("page", rendered_pages(), ids=lambda path: path.name)
def test_no_code_line_is_wider_than_the_page(page: Path) -> None:
    assert long_code_lines(page.read_text("utf-8"), CODE_LINE_MAX) == []


@pytest.mark.parametrize("name", MODULES)
def test_no_docstring_example_line_is_wider_than_the_api_page(name: str) -> None:
    module = importlib.import_module(name)
    lines = [
        line
        for test in doctest.DocTestFinder().find(module)
        for example in test.examples
        for line in (example.source + example.want).splitlines()
    ]
    assert lines
    assert [line for line in lines if len(">>> " + line) > EXAMPLE_LINE_MAX] == []


PROSE_PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
"""Every page a reader reads: the README, BENCHMARKS.md and the docs."""

IN_HOUSE = re.compile(r"\b(issues?|this task|lent|the probe|this session)\b", re.IGNORECASE)
"""Words of the team's own work that mean nothing to a reader (an issue number, a task)."""


@pytest.mark.parametrize("page", PROSE_PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_in_house_wording(page: Path) -> None:
    found = [
        f"{page.name}:{number}: {line.strip()}"
        for number, line in enumerate(page.read_text().splitlines(), start=1)
        if IN_HOUSE.search(line.replace("PyTorch issues", "").replace("pytorch issues", ""))
    ]
    assert not found, "\n".join(found)


def test_the_offline_check_finds_a_cdn_a_missing_file_and_math_without_mathjax(
    tmp_path: Path,
) -> None:
    import check_offline

    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "mathjax.js").write_text("")
    math = '<div class="math notranslate">\\[x^2\\]</div>'
    pages = {
        "local.html": f'<script src="_static/mathjax.js"></script>{math}',
        "cdn.html": f'<script src="https://cdn.jsdelivr.net/npm/mathjax@3/tex.js"></script>{math}',
        "missing.html": '<link rel="stylesheet" href="_static/gone.css">',
        "bare.html": math,
    }
    for name, body in pages.items():
        (tmp_path / name).write_text(f"<html><body>{body}</body></html>")
    found = {name: check_offline.problems(tmp_path / name, tmp_path) for name in pages}
    assert found["local.html"] == []
    assert found["cdn.html"] == [
        "cdn.html: loads https://cdn.jsdelivr.net/npm/mathjax@3/tex.js from the network"
    ]
    assert found["missing.html"] == [
        "missing.html: loads _static/gone.css, which the build does not have"
    ]
    assert found["bare.html"] == [
        "bare.html: shows equations but loads no MathJax: they would show as raw TeX"
    ]
    assert check_offline.main([str(tmp_path)]) == 1


def _section_names(doc: str) -> dict[str, set[str]]:
    """The names each numpy-style section of ``doc`` lists (``a, b : type`` lines)."""
    lines = doc.splitlines()
    found: dict[str, set[str]] = {}
    current = None
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"-{3,}", following.strip()):
            current = found.setdefault(line.strip(), set())
        elif current is not None and (match := re.match(r"^(\w[\w, ]*?)\s*(:|$)", line)):
            current.update(name.strip() for name in match[1].split(","))
    return found


def test_the_api_page_lists_each_parameter_once() -> None:
    # A name under Parameters that a class lists again under Attributes shows twice on the
    # API page, once with its meaning and once as "the setting above".
    import inspect

    import lstm.nn

    twice = {}
    for module in (lstm, lstm.nn):
        for name in dir(module):
            value = getattr(module, name)
            if inspect.isclass(value) and (doc := inspect.getdoc(value)):
                sections = _section_names(doc)
                both = sections.get("Parameters", set()) & sections.get("Attributes", set())
                if both:
                    twice[f"{module.__name__}.{name}"] = sorted(both)
    assert twice == {}


PARAGRAPH_WORDS_MAX = 90
"""Longest paragraph (or list item) of prose a page may hold, in words: about six lines of the
page at 1280 px. A longer one is a wall the reader skims; split it, or make it a list."""

_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


def prose_paragraphs(text: str) -> list[str]:
    """The paragraphs of prose of Markdown ``text``, each list item on its own.

    Code and directive blocks (```` ``` ````), display math (``$$``), headings and table rows
    are not prose and are left out; a paragraph's lines are joined with spaces.
    """
    units: list[str] = []
    current: list[str] = []
    fence: str | None = None  # the fence that opened the block we are in, if any

    def close() -> None:
        if current:
            units.append(" ".join(current))
            current.clear()

    for line in text.splitlines():
        stripped = line.strip()
        marker = next((m for m in ("```", "$$") if stripped.startswith(m)), None)
        if marker is not None and (fence is None or marker == fence):
            close()
            fence = marker if fence is None else None
        elif fence is None:
            if not stripped or stripped.startswith(("#", "|")) or _LIST_ITEM.match(line):
                close()
            if stripped and not stripped.startswith(("#", "|")):
                current.append(stripped)
    close()
    return units


def test_prose_paragraphs_leaves_out_code_math_tables_and_splits_list_items() -> None:
    text = "One two\nthree.\n\n```python\nx = 1\n\ny = 2\n```\n$$\na + b\n$$\n| a | b |\n"
    text += "# Head\n- first item\n  goes on\n- second\n\nlast"
    assert prose_paragraphs(text) == [
        "One two three.",
        "- first item goes on",
        "- second",
        "last",
    ]


@pytest.mark.parametrize("page", PROSE_PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_paragraph_is_a_wall_of_text(page: Path) -> None:
    long = [
        f"{len(unit.split())} words: {unit[:70]}..."
        for unit in prose_paragraphs(page.read_text("utf-8"))
        if len(unit.split()) > PARAGRAPH_WORDS_MAX
    ]
    assert not long, "\n".join(long)
