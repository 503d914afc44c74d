"""docs/browse.py, the offline reader of the built docs, on small pages made to fail.

CI runs the tool on the real build (``.ci/run``); these tests show that what it checks can
fail: a page whose MathJax comes from a CDN shows raw TeX and asks the network, an image that
did not load is named, and each screenshot is its own page's height. They need Debian's
Chromium and chromedriver and Selenium, and skip without them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import browse

pytestmark = pytest.mark.skipif(
    not (browse.CHROMIUM.is_file() and browse.CHROMEDRIVER.is_file())
    or importlib.util.find_spec("selenium") is None,
    reason="needs apt-get install chromium chromium-driver, and pip install selenium",
)

EQUATION = r'<span class="math notranslate nohighlight">\(h_t = o_t \odot \tanh(c_t)\)</span>'
DARK = "<style>html[data-theme=dark] body { background: #000 }</style>"


def _vendored_mathjax() -> Path:
    """The MathJax that sphinx-mathjax-offline copies into every build."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "static/mathjax/tex-chtml.js"


def _size_and_pixel(path: Path) -> tuple[tuple[int, int], tuple[int, ...]]:
    """A PNG's (width, height), and its colour 300 px down the middle."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size, image.convert("RGB").getpixel((image.size[0] // 2, 300))


def _page(folder: Path, name: str, head: str, body: str) -> None:
    html = f'<html><head>{DARK}{head}</head><body><div class="bd-article">{body}</div></body>'
    (folder / f"{name}.html").write_text(html + "</html>", encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    config = '<script>window.MathJax = {"options": {"processHtmlClass": "math"}};</script>'
    local = f'{config}<script defer src="{_vendored_mathjax().as_uri()}"></script>'
    cdn = f'{config}<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/tex-chtml.js">'
    _page(tmp_path, "offline", local, f"<p>An equation {EQUATION}.</p><pre>\\(x\\)</pre>")
    _page(tmp_path, "cdn", cdn + "</script>", f"<p>An equation {EQUATION}.</p>")
    _page(tmp_path, "images", "", '<img src="https://example.com/a.png"><img src="gone.png">')
    _page(tmp_path, "tall", "", '<div style="height: 5000px">tall</div>')
    _page(tmp_path, "short", "", "<p>short</p>")
    return tmp_path


def test_vendored_mathjax_typesets_with_the_network_off(site: Path) -> None:
    (report,) = browse.read_site(site, ["offline"])
    assert (report.equations, report.mathjax) == (1, "typeset")
    assert report.problems() == []  # TeX inside <pre> is code, not raw TeX


def test_mathjax_from_a_cdn_leaves_raw_tex_and_is_caught_asking_the_network(
    site: Path,
) -> None:
    (report,) = browse.read_site(site, ["cdn"])
    assert report.mathjax == "absent"
    assert report.unrendered == [r"\(h_t = o_t \odot \tanh(c_t)\)"]
    assert report.raw_tex
    assert all("\\" in tex for tex in report.raw_tex)
    assert report.requests == ["https://cdn.jsdelivr.net/npm/mathjax@3/tex-chtml.js"]
    assert "cdn: asked the network for https://cdn.jsdelivr.net" in "\n".join(report.problems())


def test_images_that_do_not_load_are_named(site: Path) -> None:
    (report,) = browse.read_site(site, ["images"])
    assert sorted(report.broken_images) == ["gone.png", "https://example.com/a.png"]
    assert report.requests == ["https://example.com/a.png"]


def test_each_screenshot_is_its_own_page_height_light_and_dark(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "shots"
    tall, short = browse.read_site(site, ["tall", "short"], width=800, out=out)
    sizes = {path.name: _size_and_pixel(path)[0] for path in [*tall.shots, *short.shots]}
    assert sizes["tall-800-light.png"] == sizes["tall-800-dark.png"]
    assert sizes["tall-800-dark.png"][1] > 5000
    # Read after the tall page, the short one is a screen high, not 5000 px of blank.
    assert sizes["short-800-dark.png"] == sizes["short-800-light.png"]
    assert sizes["short-800-dark.png"][0] == 800
    assert sizes["short-800-dark.png"][1] <= browse.WINDOW_HEIGHT
    light = _size_and_pixel(out / "short-800-light.png")[1]
    dark = _size_and_pixel(out / "short-800-dark.png")[1]
    assert (light, dark) == ((255, 255, 255), (0, 0, 0))


def test_a_page_taller_than_one_screenshot_comes_in_parts(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(browse, "SHOT_HEIGHT_MAX", 2000)
    (report,) = browse.read_site(site, ["tall"], width=800, out=tmp_path / "shots")
    light = [path for path in report.shots if "light" in path.name]
    assert [path.name for path in light] == [
        "tall-800-light.png",
        "tall-800-light-2.png",
        "tall-800-light-3.png",
    ]
    heights = [_size_and_pixel(path)[0][1] for path in light]
    assert heights[:2] == [2000, 2000]
    assert 1000 < heights[2] <= 2000


def test_content_pages_leaves_out_sphinx_own_pages_and_static_files(tmp_path: Path) -> None:
    for name in ("index", "cells/array", "genindex", "search", "py-modindex", "_static/x"):
        (tmp_path / f"{name}.html").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{name}.html").write_text("<html></html>")
    assert browse.content_pages(tmp_path) == ["cells/array", "index"]


def test_main_exits_1_and_prints_each_problem(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert browse.main(["--html", str(site), "--pages", "offline"]) == 0
    assert "no problems" in capsys.readouterr().out
    assert browse.main(["--html", str(site), "--pages", "offline", "cdn"]) == 1
    printed = capsys.readouterr().out
    assert "cdn: equation left as raw TeX" in printed
    assert printed.rstrip().endswith("problems")
