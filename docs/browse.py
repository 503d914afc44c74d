"""Read the built documentation as an offline reader does: headless Chromium, network off.

It builds the HTML docs (or takes a built folder) and opens every page of it in headless
Chromium at a reader's window width, with every network request refused. On each page it
checks that

- every equation was typeset by MathJax: no raw TeX (``\\[\\begin{split}...``) shows anywhere
  outside code,
- the page asked the network for nothing, and every image loaded,
- no code block or table needs sideways scrolling.

With ``--out`` it also writes a full-page screenshot of each page, light and dark, each at the
page's own height. CI runs it on the build it checks (``.ci/run``).

Set-up (Debian)::

    apt-get install chromium chromium-driver
    pip install -e '.[docs,docs-browser]'

Use::

    python docs/browse.py                                    # build, then check every page
    python docs/browse.py --html docs/_build/html --out /tmp/docs-shots --width 1024

It exits 1 when a page shows a problem (each is printed), 0 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DOCS = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
GENERATED = ("genindex", "search", "py-modindex")
"""Pages Sphinx writes for every site (index of names, search): not the project's own."""
WINDOW_HEIGHT = 900
"""The window's height, set once when the browser opens: a laptop screen's."""
SHOT_HEIGHT_MAX = 16_000
"""The longest screenshot taken in one piece, in px (Chromium's limit is 16,384); a taller
page comes in parts."""
LOCAL_SCHEMES = ("file", "data", "blob", "about", "chrome", "devtools")
"""URL schemes that need no network."""

PAGE_SCRIPT = """
const done = arguments[arguments.length - 1];
const startup = window.MathJax && MathJax.startup && MathJax.startup.promise;
const typeset = startup ? startup.then(() => 'typeset') : Promise.resolve('absent');
const timeout = new Promise((resolve) => setTimeout(() => resolve('timeout'), 20000));
Promise.race([typeset.then((how) => document.fonts.ready.then(() => how)), timeout])
  .then((how) => {
    const article = document.querySelector('.bd-article') || document.body;
    const probe = document.createElement('span');
    probe.textContent = 'x'.repeat(100);
    (document.querySelector('pre') || document.body).appendChild(probe);
    const charWidth = probe.getBoundingClientRect().width / 100;
    probe.remove();
    const prose = article.cloneNode(true);
    prose.querySelectorAll('pre, code, script, style, mjx-container').forEach((n) => n.remove());
    const equations = Array.from(document.querySelectorAll('.math'));
    done({
      mathjax: how,
      equations: equations.length,
      unrendered: equations.filter((e) => !e.querySelector('mjx-container'))
        .map((e) => e.textContent.trim().slice(0, 60)),
      rawTex: (prose.textContent.match(RAW_TEX) || []).slice(0, 20),
      brokenImages: Array.from(document.images)
        .filter((image) => !image.complete || image.naturalWidth === 0)
        .map((image) => image.getAttribute('src')),
      charWidth: charWidth,
      blocks: Array.from(document.querySelectorAll('pre')).map((block) => ({
        textWidth: block.clientWidth - parseFloat(getComputedStyle(block).paddingLeft)
          - parseFloat(getComputedStyle(block).paddingRight),
        clientWidth: block.clientWidth,
        scrollWidth: block.scrollWidth,
        firstLine: block.textContent.split('\\n')[0].slice(0, 60),
      })),
      wideTables: Array.from(article.querySelectorAll('table'))
        .filter((table) => table.parentElement.scrollWidth > table.parentElement.clientWidth + 1)
        .map((table) => table.textContent.trim().slice(0, 60)),
    });
  }, (error) => done({error: String(error)}));
""".replace(
    "RAW_TEX",
    r"/.{0,20}(\\[\[\]()]|\\(begin|end|frac|sum|odot|sigma|tanh|mathrm|top|left|right)\b).{0,20}/g",
)
"""Run with ``execute_async_script`` once a page has loaded: waits until MathJax has typeset
the page (at most 20 s) and its fonts are in, then reports how that went (``typeset``,
``absent``: no MathJax on the page, or ``timeout``), the page's equations and those left
untypeset, TeX commands showing in its prose (code aside), images that did not load, and every
``<pre>`` (its text width, visible and full width, and one monospace glyph's width) and table
that scrolls sideways."""


@dataclass(frozen=True)
class Block:
    """One code block of a page, as the browser laid it out."""

    page: str
    index: int
    first_line: str
    visible_chars: int
    scrolls: bool


@dataclass(frozen=True)
class PageReport:
    """What one page showed a reader with no network.

    Attributes
    ----------
    page : str
        The page, as :func:`content_pages` names it.
    equations : int
        Its elements that hold an equation (class ``math``).
    mathjax : str
        ``"typeset"``, ``"absent"`` (the page has no MathJax) or ``"timeout"``.
    unrendered : list of str
        The start of each equation MathJax left as TeX.
    raw_tex : list of str
        TeX commands showing in the page's prose (code aside), with a little context.
    requests : list of str
        Every URL the page asked the network for.
    broken_images : list of str
        The ``src`` of each image that did not load.
    blocks : list of Block
        Its code blocks as laid out.
    wide_tables : list of str
        The start of each table that scrolls sideways.
    shots : list of Path
        The screenshots written, light then dark (several each for a very tall page).
    """

    page: str
    equations: int
    mathjax: str
    unrendered: list[str]
    raw_tex: list[str]
    requests: list[str]
    broken_images: list[str]
    blocks: list[Block]
    wide_tables: list[str]
    shots: list[Path]

    def problems(self) -> list[str]:
        """One line per thing a reader would see wrong; empty when the page reads well."""
        lines = [f"{self.page}: equation left as raw TeX: {tex!r}" for tex in self.unrendered]
        lines += [f"{self.page}: raw TeX in the text: {tex!r}" for tex in self.raw_tex]
        if self.mathjax == "timeout":
            lines.append(f"{self.page}: MathJax did not finish typesetting within 20 s")
        lines += [f"{self.page}: asked the network for {url}" for url in self.requests]
        lines += [f"{self.page}: image did not load: {src}" for src in self.broken_images]
        lines += [
            f"{self.page}: code block {block.index} scrolls sideways: {block.first_line!r}"
            for block in self.blocks
            if block.scrolls
        ]
        lines += [f"{self.page}: table scrolls sideways: {start!r}" for start in self.wide_tables]
        return lines


def build(html: Path) -> Path:
    """Build the docs into ``html`` with warnings as errors (as CI does); return ``html``."""
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    subprocess.run([*command, str(DOCS), str(html)], check=True)
    return html


def content_pages(html: Path) -> list[str]:
    """Every page of the build that the project wrote, as ``folder/name`` without ``.html``:
    Sphinx's own index and search pages and the ``_static``-like folders left out."""
    return sorted(
        path.relative_to(html).with_suffix("").as_posix()
        for path in html.rglob("*.html")
        if not any(part.startswith("_") for part in path.relative_to(html).parts)
        and path.stem not in GENERATED
    )


@contextmanager
def offline_browser(width: int) -> Iterator[Any]:
    """Headless Chromium through chromedriver with the network cut off, twice over: every host
    name resolves to nothing, and DevTools' network emulation is offline. Requests are still
    logged (``performance`` log), so a page that asks for something is caught, not just
    slowed down."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        raise SystemExit(
            f"docs/browse.py needs {' and '.join(missing)}: "
            "apt-get install chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--window-size={width},{WINDOW_HEIGHT}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
        )
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()


def network_requests(driver: Any) -> list[str]:
    """The URLs the browser asked for since the last call that need the network."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if urlsplit(url).scheme not in LOCAL_SCHEMES:
                urls.append(url)
    return sorted(set(urls))


def shoot(driver: Any, path: Path, width: int) -> list[Path]:
    """Screenshots of the whole loaded page, as tall as the page itself.

    The shot reaches beyond the viewport instead of stretching the window, so the window
    stays a screen high and a previous, taller page cannot leave blank space below this one.
    A page taller than Chromium's longest screenshot comes in parts, ``path`` then ``path``
    with ``-2``, ``-3``, ... before the suffix; the paths written are returned.
    """
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    written = []
    for part, top in enumerate(range(0, height, SHOT_HEIGHT_MAX), start=1):
        clip = {"x": 0, "y": top, "width": width, "scale": 1}
        clip["height"] = min(SHOT_HEIGHT_MAX, height - top)
        options = {"format": "png", "captureBeyondViewport": True, "clip": clip}
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", options)
        target = path if part == 1 else path.with_name(f"{path.stem}-{part}{path.suffix}")
        target.write_bytes(base64.b64decode(shot["data"]))
        written.append(target)
    return written


def read_page(driver: Any, html: Path, page: str, width: int, out: Path | None) -> PageReport:
    """Load one page with the network off, check it, and (with ``out``) shoot it light and
    dark."""
    network_requests(driver)  # forget what earlier pages asked for
    driver.get((html / f"{page}.html").resolve().as_uri())
    found = driver.execute_async_script(PAGE_SCRIPT)
    if "error" in found:
        raise RuntimeError(f"{page}: the page check failed in the browser: {found['error']}")
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
    shots: list[Path] = []
    if out is not None:
        name = page.replace("/", "-")
        for mode in ("light", "dark"):
            driver.execute_script(
                "document.documentElement.dataset.theme = arguments[0];"
                "document.documentElement.dataset.mode = arguments[0];",
                mode,
            )
            shots += shoot(driver, out / f"{name}-{width}-{mode}.png", width)
    return PageReport(
        page=page,
        equations=int(found["equations"]),
        mathjax=str(found["mathjax"]),
        unrendered=list(found["unrendered"]),
        raw_tex=list(found["rawTex"]),
        requests=network_requests(driver),
        broken_images=[str(src) for src in found["brokenImages"]],
        blocks=blocks,
        wide_tables=list(found["wideTables"]),
        shots=shots,
    )


def read_site(
    html: Path, pages: list[str], width: int = 1280, out: Path | None = None
) -> list[PageReport]:
    """Read ``pages`` of the build in ``html`` (names as :func:`content_pages` gives them).

    Parameters
    ----------
    html : Path
        A built HTML folder.
    pages : list of str
        The pages to read, e.g. ``["index", "cells/array"]``.
    width : int
        The window's width in px.
    out : Path, optional
        Where to write each page's light and dark screenshots; none are taken without it.

    Returns
    -------
    list of PageReport
        One per page, in the order given.
    """
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    with offline_browser(width) as driver:
        return [read_page(driver, html, page, width, out) for page in pages]


def main(argv: list[str] | None = None) -> int:
    """Build (unless ``--html`` is given), read every page offline, print what is wrong."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, help="a built HTML folder (default: build one)")
    parser.add_argument("--out", type=Path, help="write light and dark screenshots here")
    parser.add_argument("--width", type=int, default=1280, help="window width in px")
    parser.add_argument("--pages", nargs="+", help="page names (default: every page)")
    args = parser.parse_args(argv)
    html = args.html or build(Path(tempfile.mkdtemp()) / "html")
    reports = read_site(html, args.pages or content_pages(html), args.width, args.out)
    blocks = [block for report in reports for block in report.blocks]
    equations = sum(report.equations for report in reports)
    with_math = sum(report.equations > 0 for report in reports)
    print(
        f"{len(reports)} pages read offline at {args.width} px: {equations} equations on "
        f"{with_math} pages, {len(blocks)} code blocks"
    )
    for report in reports:
        if report.blocks:
            narrowest = min(block.visible_chars for block in report.blocks)
            print(f"{report.page}: {len(report.blocks)} code blocks, {narrowest}+ characters wide")
    problems = [line for report in reports for line in report.problems()]
    for line in problems:
        print(line)
    if args.out is not None:
        print(f"screenshots (light and dark, each page's own height) in {args.out}")
    print(f"{len(problems)} problems" if problems else "no problems: every page reads offline")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
