"""Open pages of the built documentation site in headless Chromium and check that they render: the
DOM after the page's scripts ran has its title heading, section headings and code blocks, and a
screenshot of the page is not blank. The site is a web page, so it is tested as one.

    python -m scripts.docs_check [--site site] [--screenshots DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

# the pages checked: the index and one API page, with a heading each must show
PAGES = {"index.html": "neuralode", "api/solve/index.html": "Solving"}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    """The headless browser on PATH (Debian's ``chromium`` package), or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@dataclass
class Rendered:
    """What a rendered page shows: heading texts by level and the number of code blocks."""

    headings: dict[str, list[str]] = field(default_factory=dict)
    code_blocks: int = 0


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Rendered()
        self._in: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in ("h1", "h2", "h3"):
            self._in, self._text = tag, []
        if tag == "pre":
            self.page.code_blocks += 1

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            text = " ".join("".join(self._text).split()).rstrip("¶").strip()
            self.page.headings.setdefault(tag, []).append(text)
            self._in = None


def _chromium(browser: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   f"--user-data-dir={profile}", "--virtual-time-budget=3000", *args]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def render(browser: str, page: Path) -> Rendered:
    """The page's DOM after its scripts ran (``--dump-dom``), parsed."""
    collector = _Collector()
    collector.feed(_chromium(browser, "--dump-dom", page.resolve().as_uri()).stdout)
    return collector.page


def screenshot(browser: str, page: Path, png: Path) -> float:
    """Take a 1280x900 screenshot of ``page`` into ``png``; returns the standard deviation of its grey
    levels (0 for a blank page)."""
    from PIL import Image, ImageStat

    _chromium(
        browser, f"--screenshot={png}", "--window-size=1280,900", "--hide-scrollbars", page.resolve().as_uri()
    )
    with Image.open(png) as image:
        return ImageStat.Stat(image.convert("L")).stddev[0]


def check_site(site: Path, screenshots: Path, browser: str | None = None) -> list[str]:
    """Check every page of PAGES; returns a line per page; raises AssertionError naming what is missing."""
    browser = browser or find_browser()
    if browser is None:
        raise RuntimeError(
            "no headless browser: install Debian's chromium package (apt-get install chromium)"
        )
    screenshots.mkdir(parents=True, exist_ok=True)
    lines = []
    for relative, heading in PAGES.items():
        page = site / relative
        assert page.is_file(), f"{page} was not built"
        shown = render(browser, page)
        h1 = shown.headings.get("h1", [])
        assert heading in h1, f"{relative}: the rendered page's h1 is {h1}, not {heading!r}"
        assert shown.headings.get("h2"), f"{relative}: no section headings rendered"
        assert shown.code_blocks > 0, f"{relative}: no code block rendered"
        png = screenshots / (relative.replace("/", "_").replace(".html", ".png"))
        spread = screenshot(browser, page, png)
        assert spread > 5.0, f"{relative}: the screenshot is blank (grey-level std {spread:.1f})"
        lines.append(
            f"{relative}: h1 {h1[0]!r}, {len(shown.headings['h2'])} section headings, "
            f"{shown.code_blocks} code blocks, screenshot {png.name} (grey-level std {spread:.0f})"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--site", default="site", help="the built site (mkdocs build)")
    parser.add_argument("--screenshots", default="site/_screenshots", help="where the screenshots go")
    args = parser.parse_args()
    for line in check_site(Path(args.site), Path(args.screenshots)):
        print(line)


if __name__ == "__main__":
    main()
