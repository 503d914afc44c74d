"""Look at the built documentation as a reader does: screenshots and code blocks that scroll.

A developer tool, not a CI step. It builds the HTML docs (or takes a built folder), opens the
main pages in headless Chromium at a reader's window width, writes a full-page screenshot of
each (light theme, and the index in dark mode too), and reports every code block and table
that needs sideways scrolling, with the number of characters a code block shows.

Set-up (Debian)::

    apt-get install chromium chromium-driver
    pip install -e '.[docs,docs-browser]'

Use::

    python docs/browse.py --out /tmp/docs-shots            # build, shoot, report
    python docs/browse.py --html docs/_build/html --width 1024

It exits 1 when some code block or table scrolls sideways, 0 otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
PAGES = ("index", "quickstart", "tutorial", "architecture", "migration", "benchmarks")
"""The pages a newcomer reads first."""

OVERFLOW_SCRIPT = """
const probe = document.createElement('span');
probe.textContent = 'x'.repeat(100);
const pre = document.querySelector('pre');
(pre || document.body).appendChild(probe);
const charWidth = probe.getBoundingClientRect().width / 100;
probe.remove();
const blocks = Array.from(document.querySelectorAll('pre'));
return {
  charWidth: charWidth,
  blocks: blocks.map((block) => ({
    textWidth: block.clientWidth - parseFloat(getComputedStyle(block).paddingLeft)
      - parseFloat(getComputedStyle(block).paddingRight),
    clientWidth: block.clientWidth,
    scrollWidth: block.scrollWidth,
    firstLine: block.textContent.split('\\n')[0].slice(0, 60),
  })),
  wideTables: Array.from(document.querySelectorAll('.bd-article table'))
    .filter((table) => table.parentElement.scrollWidth > table.parentElement.clientWidth + 1)
    .map((table) => table.textContent.trim().slice(0, 60)),
};
"""
"""Measures every ``<pre>``: its text area (padding aside), its visible and its full width,
and one monospace glyph's width; and finds the tables whose box scrolls sideways."""


@dataclass(frozen=True)
class Block:
    """One code block of a page, as the browser laid it out."""

    page: str
    index: int
    first_line: str
    visible_chars: int
    scrolls: bool


@dataclass(frozen=True)
class Page:
    """What one page showed: its code blocks, and the start of every table that scrolls."""

    blocks: list[Block]
    wide_tables: list[str]


def build(html: Path) -> Path:
    """Build the docs into ``html`` with warnings as errors (as CI does); return ``html``."""
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    subprocess.run([*command, str(DOCS), str(html)], check=True)
    return html


def open_browser(width: int, height: int) -> Any:
    """Headless Chromium through chromedriver, with the flags this closed network needs."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def shoot(driver: Any, path: Path, width: int) -> None:
    """A screenshot of the whole page: the window is stretched to the document's height."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(int(height) + 120, 16000))
    driver.save_screenshot(str(path))


def measure(driver: Any, page: str) -> Page:
    """Every code block of the loaded page, whether it scrolls sideways, and wide tables."""
    found = driver.execute_script(OVERFLOW_SCRIPT)
    char_width = float(found["charWidth"]) or 1.0
    blocks = [
        Block(
            page=page,
            index=index,
            first_line=block["firstLine"],
            visible_chars=int(block["textWidth"] / char_width),
            scrolls=block["scrollWidth"] > block["clientWidth"] + 1,
        )
        for index, block in enumerate(found["blocks"])
    ]
    return Page(blocks, [f"{page}: {start!r}" for start in found["wideTables"]])


def main(argv: list[str] | None = None) -> int:
    """Build (unless ``--html`` is given), shoot and measure; print what scrolls."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, help="a built HTML folder (default: build one)")
    parser.add_argument("--out", type=Path, default=Path("docs-screenshots"))
    parser.add_argument("--width", type=int, default=1280, help="window width in px")
    parser.add_argument("--pages", nargs="+", default=list(PAGES))
    args = parser.parse_args(argv)
    html = args.html or build(Path(tempfile.mkdtemp()) / "html")
    args.out.mkdir(parents=True, exist_ok=True)
    driver = open_browser(args.width, 900)
    blocks: list[Block] = []
    wide_tables: list[str] = []
    try:
        for page in args.pages:
            driver.set_window_size(args.width, 900)
            driver.get((html / f"{page}.html").resolve().as_uri())
            measured = measure(driver, page)
            blocks += measured.blocks
            wide_tables += measured.wide_tables
            name = page.replace("/", "-")
            shoot(driver, args.out / f"{name}-{args.width}.png", args.width)
        driver.get((html / "index.html").resolve().as_uri())
        driver.execute_script("document.documentElement.dataset.theme = 'dark'")
        shoot(driver, args.out / f"index-{args.width}-dark.png", args.width)
    finally:
        driver.quit()
    print(f"{len(blocks)} code blocks on {len(args.pages)} pages at {args.width} px")
    for page in args.pages:
        widths = [block.visible_chars for block in blocks if block.page == page]
        if widths:
            print(f"{page}: {len(widths)} blocks, the narrowest shows {min(widths)} characters")
    scrolling = [block for block in blocks if block.scrolls]
    for block in scrolling:
        print(f"scrolls: {block.page} block {block.index}: {block.first_line!r}")
    for table in wide_tables:
        print(f"table scrolls: {table}")
    print(f"screenshots in {args.out}")
    return 1 if scrolling or wide_tables else 0


if __name__ == "__main__":
    raise SystemExit(main())
