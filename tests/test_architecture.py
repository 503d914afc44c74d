"""docs/architecture.md's import table is the code's: the layers of the core cannot drift."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import lstm

PACKAGE = Path(lstm.__file__).parent
DOC = Path(__file__).parent.parent / "docs" / "architecture.md"


def runtime_imports(module: str) -> set[str]:
    """The ``lstm.*`` modules ``module`` imports outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse((PACKAGE / (module.replace(".", "/") + ".py")).read_text())
    found: set[str] = set()
    for node in tree.body:  # module level only: no import hides in a function of the core
        if isinstance(node, ast.ImportFrom) and node.module == "lstm":  # from lstm import state
            found |= {a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists()}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lstm."):
            found.add(node.module.removeprefix("lstm."))
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("lstm.") for a in node.names if a.name.startswith("lstm.")
            }
    return found


def documented_imports() -> dict[str, set[str]]:
    rows = re.findall(r"^\| `([\w.]+)` \| ([^|]*)\|$", DOC.read_text(), flags=re.MULTILINE)
    return {module: set(re.findall(r"`([\w.]+)`", imports)) for module, imports in rows}


def test_architecture_table_matches_the_imports() -> None:
    table = documented_imports()
    core = {"checks", "parameters", "state", "scan", "layout", "engines", "driver", "registry"}
    core |= {f"cells.{path.stem}" for path in (PACKAGE / "cells").glob("[!_]*.py")}
    assert set(table) == core
    order = list(table)
    for index, (module, imports) in enumerate(table.items()):
        assert runtime_imports(module) == imports, module
        assert imports <= set(order[:index]), f"{module} imports a module below it"


def test_core_never_imports_the_command_line() -> None:
    for module in documented_imports():
        assert not {
            name for name in runtime_imports(module) if name.split(".")[0] in ("lm", "cli", "bench")
        }
