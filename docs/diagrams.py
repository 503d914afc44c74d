"""The architecture picture of docs/architecture.md, drawn from the source at every build.

The modules of the core and the imports between them are read from ``src/lstm`` with
:mod:`ast` (nothing is imported), placed in layers by their longest import path from the
bottom and drawn with matplotlib as an SVG. ``tests/test_architecture.py`` reads the
imports through :func:`runtime_imports` too, so the table of the page, the test and the
picture all rest on one reading of the code.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "lstm"
"""The package read by default: the source tree next to these docs."""

CORE = (
    "checks",
    "parameters",
    "state",
    "scan",
    "fused",
    "compiled",
    "layout",
    "engines",
    "driver",
    "registry",
)
"""The core's modules outside ``cells/``; ``compiled`` is a sub-package drawn as one part
(its modules' imports outside it are its imports). The cell families are found on disk."""

SUMMARIES = {
    "checks": "checks as pure functions: arguments, lengths, one step",
    "parameters": "nn.LSTM-style names per cell (i2h_l1_reverse), views",
    "state": "the opaque state: map, combine, stack; initial states",
    "scan": "the time loop: one direction, the layer stack, dropout, zoneout",
    "fused": "a direction as one autograd node: a family's step rule, backward by hand",
    "compiled": "forward_cell traced, generated as C, run by a C++ time loop "
    "(trace, codegen, build, loop.cpp, run)",
    "layout": "forward's input in, results out, in the caller's layout",
    "engines": "checks a call, chooses its engine and why; the kernel contract",
    "driver": "Recurrent: the cell contract, parameters per layer and direction, forward",
    "registry": "CELLS: name → class, for the CLI, the benchmark, the tests",
}
"""A few words per module, shortened from the text block of docs/architecture.md. A cell
family is summed up by the classes its file defines, read from the code."""


NEW_CELL = (
    "a new cell goes here:",
    "cells/<family>.py",
    "+ registry.py,",
    "tests/test_<family>.py,",
    "docs/cells/<family>.md",
)
NEW_ENGINE = ("a new engine goes here:", "engines.py", "(choose_engine rule", "+ runner)")
"""The two notes, line by line: where a new cell family and a new engine go."""

WIDTH = 9.4
"""Inches: about 900 px in a browser, where the 11 pt text stays 11 pt."""
MAIN = 6.85
"""Inches: the modules take the left of the picture; the notes and the legend the rest."""
NAME_PT, TEXT_PT = 13.0, 11.0
BOX_MAX, WAYPOINT, GAP, ROW_GAP, PAD = 2.9, 0.3, 0.22, 0.4, 0.09
INK, MUTED, FILL, BORDER, ARROW = "#1f1f1f", "#6b6b6b", "#edf1f7", "#4f5b6b", "#7a8594"
CELL_TINT, CELL_INK, ENGINE_TINT, ENGINE_INK = "#e2f0dc", "#2f6b27", "#fbe4c8", "#a65417"


def module_path(module: str, package: Path = PACKAGE) -> Path:
    """The file of a dotted module name of the package.

    Parameters
    ----------
    module : str
        A name relative to ``lstm``, e.g. ``"engines"`` or ``"cells.lstm"``.
    package : Path
        The package's folder (``src/lstm``).

    Returns
    -------
    Path
        ``package / "cells/lstm.py"`` for ``"cells.lstm"``.
    """
    if (package / module).is_dir():  # a sub-package of the core: its __init__
        return package / module / "__init__.py"
    return package / (module.replace(".", "/") + ".py")


def core_modules(package: Path = PACKAGE) -> list[str]:
    """The core's modules: :data:`CORE` and one ``cells.<family>`` per file in ``cells/``.

    Parameters
    ----------
    package : Path
        The package's folder (``src/lstm``).

    Returns
    -------
    list of str
        Dotted names relative to ``lstm``; the cell families in the order of their files'
        names, private files (``_*.py``, ``__init__.py``) left out.
    """
    families = sorted(path.stem for path in (package / "cells").glob("[!_]*.py"))
    return [*CORE, *(f"cells.{family}" for family in families)]


def runtime_imports(module: str, package: Path = PACKAGE) -> set[str]:
    """The ``lstm.*`` modules that ``module`` imports when it runs.

    Only the module level counts (no import of the core hides in a function), and imports
    under ``if TYPE_CHECKING:`` are left aside (they are for annotations only). A core
    sub-package (``compiled``) counts as one module: its files' imports outside it, and an
    import of one of its files is an import of it.

    Parameters
    ----------
    module : str
        A dotted name relative to ``lstm``, e.g. ``"cells.array"``, or a sub-package of the
        core, ``"compiled"``.
    package : Path
        The package's folder (``src/lstm``).

    Returns
    -------
    set of str
        Dotted names relative to ``lstm``: ``from lstm import state`` gives ``"state"``,
        ``from lstm.cells.lstm import LSTM`` gives ``"cells.lstm"``, and
        ``from lstm.compiled.run import run_compiled_direction`` gives ``"compiled"``.
    """
    folder = package / module
    if folder.is_dir():
        files = sorted(f"{module}.{path.stem}" for path in folder.glob("*.py"))
        found = set().union(*(_file_imports(name, package) for name in files))
        return {_collapsed(name) for name in found} - {module}
    return {_collapsed(name) for name in _file_imports(module, package)}


def _collapsed(name: str) -> str:
    """A module of a core sub-package as that sub-package (``compiled.run``: ``compiled``)."""
    first = name.split(".")[0]
    return first if first in CORE and first != name else name


def _file_imports(module: str, package: Path) -> set[str]:
    """The ``lstm.*`` modules one file imports at module level, outside ``TYPE_CHECKING``."""
    tree = ast.parse(module_path(module, package).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:  # an `if TYPE_CHECKING:` block is an ast.If: skipped with the rest
        if isinstance(node, ast.ImportFrom) and node.module == "lstm":
            found |= {a.name for a in node.names if (package / f"{a.name}.py").exists()}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lstm."):
            inner = node.module.removeprefix("lstm.")
            folder = package / inner.replace(".", "/")
            for alias in node.names:  # `from lstm.compiled import build` imports a module
                module_name = f"{inner}.{alias.name}"
                found.add(module_name if (folder / f"{alias.name}.py").exists() else inner)
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("lstm.") for a in node.names if a.name.startswith("lstm.")
            }
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Every core module and the core modules it imports at run time.

    Parameters
    ----------
    package : Path
        The package's folder (``src/lstm``).

    Returns
    -------
    dict of str to set of str
        Importer to imported, in the order of :func:`core_modules`.
    """
    return {module: runtime_imports(module, package) for module in core_modules(package)}


def outer_modules(package: Path = PACKAGE) -> list[str]:
    """The package's public modules and sub-packages outside the core (``bench``, ``lm/``...).

    Parameters
    ----------
    package : Path
        The package's folder (``src/lstm``).

    Returns
    -------
    list of str
        Module names, and sub-package names with a trailing ``/``, sorted.
    """
    modules = {path.stem for path in package.glob("[!_]*.py")} - set(CORE)
    packages = {f"{path.name}/" for path in package.iterdir() if (path / "__init__.py").exists()}
    return sorted(modules | (packages - {"cells/", *(f"{name}/" for name in CORE)}))


def layers(graph: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """Each module's layer: the length of its longest import path down to the bottom.

    A module that imports nothing is at layer 0; any other is one above the highest module
    it imports, so every arrow of the picture points down.

    Parameters
    ----------
    graph : Mapping of str to Iterable of str
        Importer to imported modules; a module imported but not a key counts as layer 0.

    Returns
    -------
    dict of str to int
        The layer of every key of ``graph``.

    Raises
    ------
    ValueError
        If the imports go round in a circle.
    """
    found: dict[str, int] = {}

    def layer(module: str, path: tuple[str, ...]) -> int:
        """The layer of ``module``, reached through the importers in ``path``."""
        if module in path:
            raise ValueError(f"import cycle: {' -> '.join((*path, module))}")
        if module not in found:
            below = [layer(name, (*path, module)) for name in graph.get(module, ())]
            found[module] = 1 + max(below, default=-1)
        return found[module]

    return {module: layer(module, ()) for module in graph}


def implied_imports(graph: Mapping[str, set[str]]) -> set[tuple[str, str]]:
    """The imports that another import of the same module already reaches.

    ``scan`` imports ``checks`` itself, and also through ``state``: ``("scan", "checks")``
    is implied. The picture draws the others as arrows and lists these in the boxes.

    Parameters
    ----------
    graph : Mapping of str to set of str
        Importer to imported modules.

    Returns
    -------
    set of tuple of (str, str)
        The ``(importer, imported)`` pairs that a longer path joins too.
    """

    def reach(module: str) -> set[str]:
        """Every module ``module`` imports, directly or through others."""
        seen: set[str] = set()
        todo = list(graph.get(module, ()))
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(graph.get(name, ()))
        return seen

    return {
        (module, name)
        for module, imports in graph.items()
        for name in imports
        if any(name in reach(other) for other in imports - {name})
    }


def drawn_imports(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """The imports drawn as arrows: those that no other import of the module reaches.

    Parameters
    ----------
    graph : Mapping of str to set of str
        Importer to imported modules.

    Returns
    -------
    dict of str to set of str
        ``graph`` less :func:`implied_imports`.
    """
    implied = implied_imports(graph)
    return {
        m: {name for name in imports if (m, name) not in implied} for m, imports in graph.items()
    }


def summary(module: str, package: Path = PACKAGE) -> str:
    """The words under a module's name: :data:`SUMMARIES`, or a family's classes.

    Parameters
    ----------
    module : str
        A dotted name relative to ``lstm``.
    package : Path
        The package's folder (``src/lstm``).

    Returns
    -------
    str
        For ``cells.<family>``, the public classes the file defines, in the file's order;
        for another module missing from :data:`SUMMARIES`, the first line of its docstring.
    """
    if module in SUMMARIES:
        return SUMMARIES[module]
    tree = ast.parse(module_path(module, package).read_text(encoding="utf-8"))
    if module.startswith("cells."):
        classes = [
            node.name
            for node in tree.body
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_")
        ]
        return ", ".join(classes)
    return (ast.get_docstring(tree) or "").split("\n")[0]


def routes(
    graph: Mapping[str, set[str]], rank: Mapping[str, int]
) -> dict[tuple[str, str], list[str]]:
    """The nodes each arrow passes through: its two modules and a waypoint per layer between.

    A waypoint takes a narrow place in its layer's row, so that an arrow over several layers
    runs between the boxes of the rows it crosses, not behind them.

    Parameters
    ----------
    graph : Mapping of str to set of str
        Importer to imported modules.
    rank : Mapping of str to int
        The layers, from :func:`layers`.

    Returns
    -------
    dict of (str, str) to list of str
        For each drawn import ``(importer, imported)``, its nodes from top to bottom; a
        waypoint is named ``"importer>imported@layer"``.
    """
    found: dict[tuple[str, str], list[str]] = {}
    for module, imports in drawn_imports(graph).items():
        for name in sorted(imports):
            between = [f"{module}>{name}@{n}" for n in range(rank[module] - 1, rank[name], -1)]
            found[(module, name)] = [module, *between, name]
    return found


def order_rows(
    graph: Mapping[str, set[str]], rank: Mapping[str, int], chains: Mapping[Any, list[str]]
) -> list[list[str]]:
    """The nodes of each layer, bottom up, ordered to keep the arrows short and uncrossed.

    Each node sits at the mean place of the nodes it points down to (the barycentre rule of
    layered drawings), ties kept in the order of ``graph``; the bottom layer keeps that order.

    Parameters
    ----------
    graph : Mapping of str to set of str
        Importer to imported modules.
    rank : Mapping of str to int
        The layers of the modules, from :func:`layers`.
    chains : Mapping to list of str
        The arrows' nodes, from :func:`routes`.

    Returns
    -------
    list of list of str
        One list of modules and waypoints per layer, layer 0 first.
    """
    level = {module: rank[module] for module in graph}
    below: dict[str, list[str]] = {}
    for chain in chains.values():
        for i, (upper, lower) in enumerate(itertools.pairwise(chain)):
            level[lower] = rank[chain[0]] - i - 1
            below.setdefault(upper, []).append(lower)
    rows: list[list[str]] = [[] for _ in range(max(level.values()) + 1)]
    for node, layer in level.items():
        rows[layer].append(node)
    place: dict[str, float] = {}
    for row in rows:
        keys: dict[str, tuple[float, int]] = {}
        for i, node in enumerate(row):
            spots = [place[name] for name in below.get(node, ())]
            keys[node] = (sum(spots) / len(spots) if spots else 0.5), i
        row.sort(key=keys.__getitem__)
        place.update({node: (i + 0.5) / len(row) for i, node in enumerate(row)})
    return rows


class Box(NamedTuple):
    """A rectangle, in inches from the picture's lower left corner."""

    x: float
    y: float
    width: float
    height: float

    @property
    def middle(self) -> float:
        """The x of the box's vertical axis."""
        return self.x + self.width / 2

    @property
    def top(self) -> float:
        """The y of the box's upper edge."""
        return self.y + self.height


def line_height(points: float) -> float:
    """Inches a line of text of ``points`` takes, with its spacing.

    Parameters
    ----------
    points : float
        The font size.

    Returns
    -------
    float
        Inches.
    """
    return points * 1.3 / 72


def text_width(text: str, points: float, bold: bool = False) -> float:
    """Inches ``text`` takes in matplotlib's sans-serif (DejaVu Sans) at ``points``.

    Parameters
    ----------
    text : str
        One line.
    points : float
        The font size.
    bold : bool
        Whether the text is bold.

    Returns
    -------
    float
        Inches.
    """
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    font = FontProperties(size=points, weight="bold" if bold else "normal")
    return float(text_to_path.get_text_width_height_descent(text, font, ismath=False)[0]) / 72


def wrap(text: str, width: float, points: float = TEXT_PT, bold: bool = False) -> list[str]:
    """Lines of ``text``, broken at spaces, that fit in ``width`` inches.

    Parameters
    ----------
    text : str
        Words separated by spaces.
    width : float
        Inches available; each line is measured with a 6 % margin, for a browser's font.
    points : float
        The font size.
    bold : bool
        Whether the text is bold.

    Returns
    -------
    list of str
        The lines (a word wider than ``width`` gets a line of its own).
    """
    lines: list[str] = []
    for word in text.split():
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and 1.06 * text_width(joined, points, bold) <= width:
            lines[-1] = joined
        else:
            lines.append(word)
    return lines


def box_lines(
    module: str, width: float, graph: Mapping[str, set[str]], package: Path
) -> list[tuple[str, str]]:
    """The lines under a module's name: its summary, then the imports no arrow shows.

    Parameters
    ----------
    module : str
        A core module.
    width : float
        Inches of text the box holds.
    graph : Mapping of str to set of str
        Importer to imported modules.
    package : Path
        The package's folder (``src/lstm``).

    Returns
    -------
    list of (str, str)
        Each line with its colour.
    """
    lines = [(line, INK) for line in wrap(summary(module, package), width)]
    also = sorted(graph[module] - drawn_imports(graph)[module])
    if also:
        lines += [(line, MUTED) for line in wrap("also: " + ", ".join(also), width)]
    return lines


def main_width(rows: list[list[str]], graph: Mapping[str, set[str]], package: Path) -> float:
    """Inches the modules need: :data:`MAIN`, or more for a row too full to hold its words.

    Parameters
    ----------
    rows : list of list of str
        Modules and waypoints per layer, from :func:`order_rows`.
    graph : Mapping of str to set of str
        Importer to imported modules: its keys are the modules, the other nodes waypoints.
    package : Path
        The package's folder (``src/lstm``).

    Returns
    -------
    float
        At least :data:`MAIN`; wide enough that every row's boxes hold their name and their
        longest word (a family with many cells widens the picture instead of overflowing).
    """
    needed = MAIN
    for row in rows:
        modules = [node for node in row if node in graph]
        words = [text_width(m, NAME_PT, bold=True) for m in modules]
        words += [
            text_width(word, TEXT_PT) for m in modules for word in summary(m, package).split()
        ]
        box = 1.06 * max(words) + 2 * PAD
        waypoints = WAYPOINT * (len(row) - len(modules))
        needed = max(needed, len(modules) * box + waypoints + GAP * (len(row) + 1))
    return needed


def place_rows(
    rows: list[list[str]], graph: Mapping[str, set[str]], package: Path, main: float
) -> tuple[dict[str, Box], dict[str, list[tuple[str, str]]]]:
    """The box of every module and waypoint, row by row from the bottom up.

    The boxes of a row share one width (at most :data:`BOX_MAX`) and one height (for the
    most lines in the row), and the row is centred in the left ``main`` inches.

    Parameters
    ----------
    rows : list of list of str
        Modules and waypoints per layer, from :func:`order_rows`.
    graph : Mapping of str to set of str
        Importer to imported modules: its keys are the modules, the other nodes waypoints.
    package : Path
        The package's folder (``src/lstm``).
    main : float
        Inches of the picture's width that the modules take, from :func:`main_width`.

    Returns
    -------
    tuple of (dict of str to Box, dict of str to list of (str, str))
        The boxes, and the lines of each module's box (see :func:`box_lines`).
    """
    boxes: dict[str, Box] = {}
    texts: dict[str, list[tuple[str, str]]] = {}
    y = 0.2
    for row in rows:
        modules = [node for node in row if node in graph]
        free = main - WAYPOINT * (len(row) - len(modules)) - GAP * (len(row) + 1)
        width = min(BOX_MAX, free / len(modules))
        texts.update({m: box_lines(m, width - 2 * PAD, graph, package) for m in modules})
        lines = max(len(texts[m]) for m in modules)
        height = 2 * PAD + line_height(NAME_PT) + lines * line_height(TEXT_PT)
        sizes = [width if node in graph else WAYPOINT for node in row]
        x = (main - sum(sizes) - GAP * (len(row) - 1)) / 2
        for node, size in zip(row, sizes, strict=True):
            boxes[node] = Box(x, y, size, height)
            x += size + GAP
        y += height + ROW_GAP
    return boxes, texts


def draw_box(
    ax: Any,
    box: Box,
    name: str,
    lines: list[tuple[str, str]],
    name_pt: float = NAME_PT,
    **style: Any,
) -> None:
    """A rounded box with a bold name and lines of text under it.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Axes in inches.
    box : Box
        Where it goes.
    name : str
        The first line, in bold.
    lines : list of (str, str)
        The lines under the name, each with its colour.
    name_pt : float
        The name's font size.
    **style : Any
        Passed to :class:`matplotlib.patches.FancyBboxPatch` (``facecolor``, ``linestyle``...).
    """
    from matplotlib.patches import FancyBboxPatch

    options: dict[str, Any] = {"facecolor": FILL, "edgecolor": BORDER, "linewidth": 1.2}
    options.update(style)
    shape = "round,pad=0,rounding_size=0.08"
    corner = (box.x, box.y)
    ax.add_patch(FancyBboxPatch(corner, box.width, box.height, boxstyle=shape, zorder=3, **options))
    text = {"ha": "center", "va": "top", "zorder": 4, "parse_math": False}
    top = box.top - PAD
    ax.text(box.middle, top, name, size=name_pt, weight="bold", color=INK, **text)
    for i, (line, colour) in enumerate(lines):
        y = top - line_height(name_pt) - i * line_height(TEXT_PT)
        ax.text(box.middle, y, line, size=TEXT_PT, color=colour, **text)


def ports(box: Box, count: int) -> list[float]:
    """The x of ``count`` arrow ends spread along a box's edge, left to right.

    Parameters
    ----------
    box : Box
        The box.
    count : int
        How many arrows start (or end) on that edge.

    Returns
    -------
    list of float
        Inches, around the box's middle.
    """
    step = min(0.28, 0.75 * box.width / max(count, 1))
    return [box.middle + (i - (count - 1) / 2) * step for i in range(count)]


def arrow_ends(
    chains: Mapping[Any, list[str]], boxes: Mapping[str, Box]
) -> tuple[list[float], list[float]]:
    """Where each arrow leaves its importer and reaches the module it imports.

    The arrows leaving a box share its lower edge, ordered as the places they go to, and
    those reaching a box share its upper edge, ordered as the places they come from, so
    that the arrows at a box do not cross there.

    Parameters
    ----------
    chains : Mapping to list of str
        The arrows' nodes, from :func:`routes`.
    boxes : Mapping of str to Box
        Where every node is.

    Returns
    -------
    tuple of (list of float, list of float)
        The x of each arrow's start and of its end, in the order of ``chains``.
    """
    paths = list(chains.values())
    start = [0.0] * len(paths)
    end = [0.0] * len(paths)
    for node in {path[0] for path in paths} | {path[-1] for path in paths}:
        leaving = sorted((boxes[p[1]].middle, i) for i, p in enumerate(paths) if p[0] == node)
        for (_, i), x in zip(leaving, ports(boxes[node], len(leaving)), strict=True):
            start[i] = x
        coming = sorted((boxes[p[-2]].middle, i) for i, p in enumerate(paths) if p[-1] == node)
        for (_, i), x in zip(coming, ports(boxes[node], len(coming)), strict=True):
            end[i] = x
    return start, end


def draw_arrows(ax: Any, chains: Mapping[Any, list[str]], boxes: Mapping[str, Box]) -> None:
    """Every drawn import as a smooth arrow, behind the boxes.

    An arrow leaves the importer's lower edge, passes its waypoints straight down, and
    ends on the imported module's upper edge; between two rows it is a curve that leaves
    and arrives vertically.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Axes in inches.
    chains : Mapping to list of str
        The arrows' nodes, from :func:`routes`.
    boxes : Mapping of str to Box
        Where every node is.
    """
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as Curve

    start, end = arrow_ends(chains, boxes)
    for i, chain in enumerate(chains.values()):
        points = [(start[i], boxes[chain[0]].y)]
        for node in chain[1:-1]:
            points += [(boxes[node].middle, boxes[node].top), (boxes[node].middle, boxes[node].y)]
        points.append((end[i], boxes[chain[-1]].top))
        verts, codes = [points[0]], [Curve.MOVETO]
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            half = (y0 - y1) / 2
            verts += [(x0, y0 - half), (x1, y1 + half), (x1, y1)]
            codes += [Curve.CURVE4] * 3
        arrow = FancyArrowPatch(
            path=Curve(verts, codes),
            arrowstyle="-|>,head_length=7,head_width=3.5",
            color=ARROW,
            linewidth=1.4,
            zorder=2,
        )
        ax.add_patch(arrow)


def note_box(lines: tuple[str, ...], x: float, middle: float, width: float) -> Box:
    """The box of a note of ``lines``, ``width`` inches wide, centred on height ``middle``.

    Parameters
    ----------
    lines : tuple of str
        The heading and the lines under it.
    x, middle : float
        The left edge, and the height of the middle.
    width : float
        Inches.

    Returns
    -------
    Box
        The note's box.
    """
    height = 2 * PAD + len(lines) * line_height(TEXT_PT)
    return Box(x, middle - height / 2, width, height)


def note(ax: Any, box: Box, lines: tuple[str, ...], colours: tuple[str, str], target: Box) -> None:
    """A coloured note, its first line in bold, with a dashed arrow to what it is about.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Axes in inches.
    box : Box
        Where the note goes, from :func:`note_box`.
    lines : tuple of str
        The heading, then the lines under it.
    colours : tuple of (str, str)
        The fill, and the colour of the border, the text and the arrow.
    target : Box
        What the note is about: the arrow ends in the middle of its right edge.
    """
    from matplotlib.patches import FancyArrowPatch

    tint, ink = colours
    body = [(line, ink) for line in lines[1:]]
    style = {"facecolor": tint, "edgecolor": ink, "linewidth": 1.6}
    draw_box(ax, box, lines[0], body, name_pt=TEXT_PT, **style)
    arrow = FancyArrowPatch(
        (box.x, box.y + box.height / 2),
        (target.x + target.width, target.y + target.height / 2),
        arrowstyle="-|>,head_length=7,head_width=4",
        color=ink,
        linewidth=1.6,
        linestyle=(0, (4, 3)),
        shrinkA=0,
        shrinkB=3,
        zorder=5,
    )
    ax.add_patch(arrow)


def around(boxes: Iterable[Box], margin: float) -> Box:
    """The smallest box holding ``boxes``, grown by ``margin`` on every side.

    Parameters
    ----------
    boxes : Iterable of Box
        At least one box.
    margin : float
        Inches.

    Returns
    -------
    Box
        Their hull.
    """
    items = list(boxes)
    x0 = min(b.x for b in items) - margin
    y0 = min(b.y for b in items) - margin
    x1 = max(b.x + b.width for b in items) + margin
    y1 = max(b.top for b in items) + margin
    return Box(x0, y0, x1 - x0, y1 - y0)


def legend(ax: Any, x: float, y: float, width: float) -> None:
    """What the arrows and the grey lines mean, from (``x``, ``y``) inches up.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Axes in inches.
    x, y : float
        The lower left corner.
    width : float
        Inches of text.
    """
    from matplotlib.patches import FancyArrowPatch

    text = {"size": TEXT_PT, "va": "top", "parse_math": False}
    grey = wrap("also: imports that an arrow reaches already", width)
    for i, line in enumerate(reversed(grey)):
        ax.text(x, y + (i + 1) * line_height(TEXT_PT), line, color=MUTED, **text)
    top = y + (len(grey) + 1.6) * line_height(TEXT_PT)
    sample = FancyArrowPatch(
        (x + 0.1, top),
        (x + 0.1, top - 0.3),
        arrowstyle="-|>,head_length=7,head_width=3.5",
        color=ARROW,
        linewidth=1.4,
    )
    ax.add_patch(sample)
    ax.text(x + 0.3, top - 0.04, "imports (at run time)", color=INK, **text)


def architecture_figure(package: Path = PACKAGE) -> Any:
    """The picture: the core's modules by layer, their imports, the two notes and the legend.

    Parameters
    ----------
    package : Path
        The package's folder (``src/lstm``).

    Returns
    -------
    matplotlib.figure.Figure
        A figure :data:`WIDTH` inches wide (wider if a row needs it: :func:`main_width`),
        made without pyplot (no global state).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    graph = import_graph(package)
    rank = layers(graph)
    chains = routes(graph, rank)
    rows = order_rows(graph, rank, chains)
    main = main_width(rows, graph, package)
    boxes, texts = place_rows(rows, graph, package, main)
    bottom = max(b.top for b in boxes.values()) + ROW_GAP + 0.1
    outer = Box(GAP, bottom, main - 2 * GAP, 2 * PAD + line_height(NAME_PT) + line_height(TEXT_PT))

    width = main + WIDTH - MAIN
    figure = Figure(figsize=(width, outer.top + 0.15))
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, outer.top + 0.15)
    ax.set_axis_off()

    cells = around([boxes[m] for m in graph if m.startswith("cells.")], 0.13)
    shape = "round,pad=0,rounding_size=0.15"
    corner = (cells.x, cells.y)
    band = FancyBboxPatch(corner, cells.width, cells.height, boxstyle=shape, zorder=0)
    band.set(facecolor=CELL_TINT, edgecolor="none")
    ax.add_patch(band)
    for module in graph:
        draw_box(ax, boxes[module], module, texts[module])
    draw_arrows(ax, chains, boxes)
    uses = [("python -m lstm …: they use the package's public names", MUTED)]
    dashed: dict[str, Any] = {"facecolor": "white", "edgecolor": MUTED, "linestyle": (0, (5, 3))}
    draw_box(ax, outer, " · ".join(outer_modules(package)), uses, **dashed)

    x, column = main + 0.12, WIDTH - MAIN - 0.2  # the notes' and the legend's column
    place = note_box(NEW_CELL, x, cells.y + cells.height / 2, column)
    note(ax, place, NEW_CELL, (CELL_TINT, CELL_INK), cells)
    engines = boxes["engines"]
    place = note_box(NEW_ENGINE, x, engines.y + engines.height / 2, column)
    note(ax, place, NEW_ENGINE, (ENGINE_TINT, ENGINE_INK), engines)
    legend(ax, x, 0.2, column)
    return figure


def write_architecture_svg(path: Path, package: Path = PACKAGE) -> Path:
    """Draw the picture and write it as SVG, the same bytes from the same code.

    Text stays text (``svg.fonttype = "none"``: searchable, sharp at any size) and the ids
    in the file come from a fixed salt (``svg.hashsalt``) with no date in the metadata, so
    a build that changes nothing changes no byte. A file that already holds those bytes is
    left alone (its date too, so Sphinx does not read the page again for nothing).

    Parameters
    ----------
    path : Path
        The file to write; its folder is made if needed.
    package : Path
        The package's folder (``src/lstm``).

    Returns
    -------
    Path
        ``path``.
    """
    import io

    import matplotlib

    svg = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "lstm-architecture", "svg.fonttype": "none"}):
        architecture_figure(package).savefig(svg, format="svg", metadata={"Date": None})
    if not path.exists() or path.read_bytes() != svg.getvalue():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(svg.getvalue())
    return path
