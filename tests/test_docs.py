"""The documentation site: it builds strictly (a broken link, a missing reference or a failing
executed example is an error), its generated pages carry what they are generated from, and its pages
render in headless Chromium."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neuralode import SOLVERS
from scripts.docs_check import check_site, find_browser
from tests.parity_differences import DELIBERATE_DIFFERENCES

ROOT = Path(__file__).resolve().parents[1]


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-f",
        str(config),
        "-d",
        str(site),
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=config.parent, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = _mkdocs(ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text()


def test_examples_ran_and_api_pages_were_generated(site):
    started = _page(site, "getting-started")
    assert "exp(-t) = 0.60653066" in started  # the executed example's output, not its source
    assert "function evaluations: forward" in started
    api = _page(site, "api/solve")
    for name in ("neuralode.odeint.odeint", "neuralode.odeint.odeint_adjoint", "neuralode.solve.solve"):
        assert f'id="{name}"' in api
    assert ":func:" not in api  # Sphinx roles are rewritten for Markdown


def test_generated_pages_list_every_method_and_difference(site):
    methods = _page(site, "guide/methods")
    assert all(f"<code>{name}</code>" in methods for name in SOLVERS)
    migration = _page(site, "migration")
    assert all(f"<code>{key}</code>" in migration for key in DELIBERATE_DIFFERENCES)
    gradients = _page(site, "guide/gradients")
    assert "Case 5: peak memory" in gradients  # read from results/bench.json at build time


def test_results_pages_are_the_results_files(site):
    for name in ("table1", "figure3", "table2", "bench"):
        assert (site / "results" / name / "index.html").is_file()
    assert (site / "results" / "figure3.png").stat().st_size == (
        ROOT / "results" / "figure3.png"
    ).stat().st_size


@pytest.mark.parametrize(
    "page, expected",
    [
        ("[a link](missing.md)\n", "missing.md"),
        ('```python exec="on"\nraise RuntimeError("broken example")\n```\n', "broken example"),
        ("::: neuralode.no_such_function\n", "no_such_function"),
    ],
    ids=["broken link", "failing example", "missing reference"],
)
def test_strict_build_fails_on(tmp_path, page, expected):
    """The site's own settings (mkdocs.yml) on a one-page site with one defect: the build fails naming it."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Page\n\n## Section\n\n" + page)
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config.update(docs_dir=str(tmp_path / "docs"), nav=["index.md"])
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            python = plugin["mkdocstrings"]["handlers"]["python"]
            python["paths"] = [str(ROOT)]
            python["options"]["extensions"] = [str(ROOT / e) for e in python["options"]["extensions"]]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    result = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert expected in result.stderr + result.stdout


@pytest.mark.skipif(find_browser() is None, reason="no headless browser (Debian's chromium package)")
def test_pages_render_in_chromium(site, tmp_path):
    lines = check_site(site, tmp_path / "shots")
    assert len(lines) == 2 and all("code blocks" in line for line in lines)


def test_readme_fits_on_a_screen_or_two_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 8 * 1024
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local, "the README links to the documentation"
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_readme_example_runs():
    """The README's five-line example, as a visitor would paste it."""
    readme = (ROOT / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["ys"].shape == (10, 512, 2)
    assert all(p.grad is not None for p in scope["func"].parameters())
