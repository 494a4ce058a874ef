"""The results dashboard (scripts/make_dashboard.py): each results file under its section, with provenance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_dashboard_copies_results_shows_figures_and_names_missing_targets(tmp_path):
    (tmp_path / "table2.md").write_text(
        "# Table 2: latent ODE\n\nProfile **smoke**, commit `abc`.\n\n| a |\n|---|\n"
    )
    (tmp_path / "latent_extrapolation.png").write_bytes(b"png")
    script = str(REPO / "scripts/make_dashboard.py")
    command = [sys.executable, script, "--profile", "smoke", "--results", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "README.md").read_text()
    assert "# Results (smoke profile)" in page
    assert "### Table 2: latent ODE" in page  # the file's own title, nested under its section
    assert "Profile **smoke**, commit `abc`." in page
    assert "![latent_extrapolation.png](latent_extrapolation.png)" in page
    assert "![latent_poisson.png]" not in page  # only figures that exist
    assert "_Not produced yet at the smoke profile: run `make table1 PROFILE=smoke`._" in page
    assert "Re-make: `make table2 PROFILE=smoke`." in page
    assert "| `table2.md` | Latent ODE, Table 2 | `make table2` |" in page


def test_dashboard_shows_about_and_links_other_result_folders(tmp_path):
    (tmp_path / "ABOUT.md").write_text("# Made by hand on a GPU\n\nNot by make.\n")
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "ABOUT.md").write_text("# Table 1 on one H100\n")
    script = str(REPO / "scripts/make_dashboard.py")
    done = subprocess.run(
        [sys.executable, script, "--profile", "quick", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "README.md").read_text()
    assert "## Made by hand on a GPU" in page and "Not by make." in page
    assert "[`gpu/`](gpu/README.md) (Table 1 on one H100)" in page
