"""Check that the built HTML docs need no network: every script, style sheet and image is a
file of the build, and every page with an equation loads MathJax from the build itself.

A page that loads MathJax from a CDN shows its equations as raw TeX (``\\[\\begin{split}...``)
to a reader without network; this fails the build instead. CI runs it after sphinx-build.

Use::

    python docs/check_offline.py docs/_build/html
"""

from __future__ import annotations

import argparse
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

MATH_CLASSES = ("math",)
"""Classes Sphinx gives the elements that hold an equation for MathJax."""


class _Page(HTMLParser):
    """The resources one page loads (script, link, img) and whether it holds an equation."""

    def __init__(self) -> None:
        super().__init__()
        self.resources: list[str] = []
        self.scripts: list[str] = []
        self.has_math = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.scripts.append(values["src"] or "")
            self.resources.append(values["src"] or "")
        elif tag == "link" and (values.get("rel") or "") in ("stylesheet", "preload"):
            self.resources.append(values.get("href") or "")
        elif tag == "img" and values.get("src"):
            self.resources.append(values["src"] or "")
        classes = (values.get("class") or "").split()
        if any(name in classes for name in MATH_CLASSES):
            self.has_math = True


def problems(page: Path, root: Path) -> list[str]:
    """What on ``page`` (an HTML file under ``root``) needs the network, or is missing.

    Parameters
    ----------
    page : Path
        One built HTML page.
    root : Path
        The build's root folder (a resource may not point outside it).

    Returns
    -------
    list of str
        One line per problem, naming the page and the resource; empty when it works offline.
    """
    parser = _Page()
    parser.feed(page.read_text(encoding="utf-8"))
    found = []
    name = page.relative_to(root)
    for resource in parser.resources:
        parts = urlsplit(resource)
        if parts.scheme or parts.netloc:
            found.append(f"{name}: loads {resource} from the network")
            continue
        target = (page.parent / parts.path).resolve()
        if parts.path and not target.is_file():
            found.append(f"{name}: loads {resource}, which the build does not have")
    if parser.has_math and not any("mathjax" in src.lower() for src in parser.scripts):
        found.append(f"{name}: shows equations but loads no MathJax: they would show as raw TeX")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the built HTML folder")
    args = parser.parse_args(argv)
    root = args.html.resolve()
    # _static holds the theme's assets (a Jinja template among them), not pages
    pages = sorted(page for page in root.rglob("*.html") if "_static" not in page.parts)
    if not pages:
        print(f"{root}: no HTML pages", file=sys.stderr)
        return 1
    found = [line for page in pages for line in problems(page, root)]
    for line in found:
        print(line, file=sys.stderr)
    with_math = sum(1 for page in pages if _has_math(page))
    print(f"{len(pages)} pages, {with_math} with equations: {len(found)} problem(s)")
    return 1 if found else 0


def _has_math(page: Path) -> bool:
    parser = _Page()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.has_math


if __name__ == "__main__":
    sys.exit(main())
