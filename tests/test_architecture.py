"""docs/architecture.md's import table is the code's: the layers of the core cannot drift."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import lstm
from diagrams import import_graph, runtime_imports  # docs/diagrams.py: the picture reads them too

PACKAGE = Path(lstm.__file__).parent
DOC = Path(__file__).parent.parent / "docs" / "architecture.md"


def documented_imports() -> dict[str, set[str]]:
    rows = re.findall(r"^\| `([\w.]+)` \| ([^|]*)\|$", DOC.read_text(), flags=re.MULTILINE)
    return {module: set(re.findall(r"`([\w.]+)`", imports)) for module, imports in rows}


def test_architecture_table_matches_the_imports() -> None:
    table = documented_imports()
    core = {"checks", "parameters", "state", "scan", "fused", "layout", "engines", "driver"}
    core |= {"registry", "compiled"}  # compiled/: one part (its modules' outside imports)
    core |= {f"cells.{path.stem}" for path in (PACKAGE / "cells").glob("[!_]*.py")}
    assert set(table) == core
    graph = import_graph(PACKAGE)  # what the picture of docs/architecture.md draws
    assert set(graph) == core
    order = list(table)
    for index, (module, imports) in enumerate(table.items()):
        assert graph[module] == imports, module
        assert imports <= set(order[:index]), f"{module} imports a module below it"


def test_core_never_imports_the_command_line() -> None:
    for module in documented_imports():
        assert not {
            name
            for name in runtime_imports(module, PACKAGE)
            if name.split(".")[0] in ("lm", "cli", "bench")
        }


DRIVER_MAX_LINES = 400
CLASS_MAX_LINES = 450
FUNCTION_MAX_CODE_LINES = 60
"""The sizes docs/architecture.md promises: the driver on a few screens, a method on one."""


def code_lines(node: ast.AST, source: list[str]) -> int:
    """Lines of ``node`` that hold code: docstrings, blank lines and comments aside."""
    docstrings: set[int] = set()
    for inner in ast.walk(node):
        body = getattr(inner, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings |= set(range(body[0].lineno, (body[0].end_lineno or 0) + 1))
    lines = range(node.lineno, (getattr(node, "end_lineno", None) or node.lineno) + 1)
    return sum(
        1
        for number in lines
        if number not in docstrings
        and source[number - 1].strip()
        and not source[number - 1].strip().startswith("#")
    )


def oversized(path: Path) -> list[str]:
    """Classes over CLASS_MAX_LINES (all of it) and functions over FUNCTION_MAX_CODE_LINES."""
    source = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(source))):
        span = (getattr(node, "end_lineno", None) or 0) - getattr(node, "lineno", 0) + 1
        if isinstance(node, ast.ClassDef) and span > CLASS_MAX_LINES:
            found.append(f"class {node.name}: {span} lines")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            size = code_lines(node, source)
            if size > FUNCTION_MAX_CODE_LINES:
                found.append(f"function {node.name}: {size} lines")
    return [f"{path.relative_to(PACKAGE)}: {item}" for item in found]


def test_no_class_or_function_outgrows_a_screen() -> None:
    found = [item for path in sorted(PACKAGE.rglob("*.py")) for item in oversized(path)]
    assert found == []


def test_the_driver_stays_small() -> None:
    lines = len((PACKAGE / "driver.py").read_text().splitlines())
    assert lines <= DRIVER_MAX_LINES, (
        f"driver.py: expected <= {DRIVER_MAX_LINES} lines, got {lines}"
    )


def test_code_lines_leaves_docstrings_blanks_and_comments_aside() -> None:
    source = '''def f(x):
    """Doc.

    More doc.
    """
    # a comment

    return x
'''.splitlines()
    function = ast.parse("\n".join(source)).body[0]
    assert code_lines(function, source) == 2  # the def line and the return
