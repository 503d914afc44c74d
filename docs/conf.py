"""Sphinx configuration: numpy-style docstrings, Markdown pages, strict builds (-W in CI)."""

from __future__ import annotations

import lstm

project = "lstm"
author = "The lstm developers"
copyright = "2026, The lstm developers"
release = lstm.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "alabaster"
html_title = f"lstm {release}"

# --- The architecture picture ---------------------------------------------------------------
# docs/architecture.md shows docs/_generated/architecture.svg, drawn here from the source's own
# modules and imports at every build (docs/diagrams.py), so the picture follows the code.
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diagrams  # noqa: E402

diagrams.write_architecture_svg(Path(__file__).resolve().parent / "_generated" / "architecture.svg")
