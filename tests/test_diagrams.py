"""The architecture picture (docs/diagrams.py): drawn from the code, layered, deterministic."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import lstm
from diagrams import (
    NEW_CELL,
    NEW_ENGINE,
    implied_imports,
    import_graph,
    layers,
    write_architecture_svg,
)

PACKAGE = Path(lstm.__file__).parent
SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(path: Path) -> list[str]:
    """The text of every ``<text>`` element of an SVG file (which must parse as XML)."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_architecture_svg(tmp_path_factory.mktemp("diagram") / "architecture.svg", PACKAGE)


def test_every_module_sits_above_what_it_imports() -> None:
    graph = import_graph(PACKAGE)
    rank = layers(graph)
    for module, imports in graph.items():
        for name in imports:
            assert rank[module] > rank[name], f"{module} ({rank[module]}) -> {name} ({rank[name]})"
    assert {m for m, layer in rank.items() if layer == 0} == {"checks", "parameters"}
    assert max(rank, key=rank.__getitem__) == "registry"


def test_layers_is_the_longest_path_and_refuses_a_cycle() -> None:
    assert layers({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == {"a": 2, "b": 1, "c": 0}
    with pytest.raises(ValueError, match="import cycle: a -> b -> a"):
        layers({"a": {"b"}, "b": {"a"}})


def test_implied_imports_are_those_another_import_reaches() -> None:
    graph = {"scan": {"state", "checks"}, "state": {"checks"}, "checks": set()}
    assert implied_imports(graph) == {("scan", "checks")}


def test_the_svg_names_every_module_and_both_notes(picture: Path) -> None:
    texts = svg_texts(picture)
    assert set(import_graph(PACKAGE)) <= set(texts)
    assert {*NEW_CELL, *NEW_ENGINE} <= set(texts)
    assert "a new cell goes here:" in texts
    assert "a new engine goes here:" in texts


def test_the_svg_is_the_same_bytes_every_time(picture: Path, tmp_path: Path) -> None:
    again = write_architecture_svg(tmp_path / "again.svg", PACKAGE)
    assert again.read_bytes() == picture.read_bytes()


def test_the_picture_follows_a_new_cell_family(tmp_path: Path) -> None:
    package = tmp_path / "lstm"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("lm", "__pycache__"))
    (package / "cells" / "toy.py").write_text(
        '"""A toy family."""\n\nfrom lstm.driver import Recurrent\n\n\n'
        "class ToyCell(Recurrent):\n    pass\n"
    )
    graph = import_graph(package)
    assert graph["cells.toy"] == {"driver"}
    assert layers(graph)["cells.toy"] == layers(graph)["driver"] + 1
    texts = svg_texts(write_architecture_svg(tmp_path / "toy.svg", package))
    assert {"cells.toy", "ToyCell"} <= set(texts)
