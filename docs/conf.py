"""Sphinx configuration: numpy-style docstrings, Markdown pages, strict builds (-W in CI)."""

from __future__ import annotations

import sys
from pathlib import Path

import lstm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diagrams  # docs/diagrams.py, found through the line above

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
    # MathJax from the built docs' own _static/mathjax, not a CDN: equations render offline
    # (docs/check_offline.py checks the build)
    "sphinx-mathjax-offline",
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

# pydata-sphinx-theme, the base of PyTorch's own documentation theme: light and dark modes,
# and room for code. The left sidebar is dropped: every page sits at the top of the toctree,
# so it would stay empty and take 20% of the width. At 1280 px a code block then shows 102
# characters (docs/browse.py measures it); tests/test_docs.py keeps fenced code lines <= 100.
html_theme = "pydata_sphinx_theme"
html_title = f"lstm {release}"
html_sidebars = {"**": []}
html_static_path = ["_static"]
html_css_files = ["lstm.css"]
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "pygments_light_style": "default",
    "pygments_dark_style": "monokai",
}

# --- The architecture picture ---------------------------------------------------------------
# docs/architecture.md shows docs/_generated/architecture.svg, drawn here from the source's own
# modules and imports at every build (docs/diagrams.py), so the picture follows the code.
diagrams.write_architecture_svg(Path(__file__).resolve().parent / "_generated" / "architecture.svg")
