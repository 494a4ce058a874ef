"""Figure 3's pipeline end to end on a tiny untrained ODE-Net and a fake dataset (seconds)."""

from __future__ import annotations

import csv
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neuralode.analysis import fit_ratio
from tests.fake_mnist import write_fake_mnist

REPO = Path(__file__).resolve().parents[1]
TINY = ["profile=smoke", "checkpoint=untrained", "untrained_channels=4", "batch_size=8", "test_batch_size=16",
        "repeats=1", "reference_rtol=1e-7"]  # fmt: skip


def _run(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "experiments.nfe_stats", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _rows(path: Path) -> list[dict[str, float]]:
    with path.open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def test_sweep_writes_the_figure_nfe_grows_as_the_tolerance_tightens_and_a_multirun_adds_points(tmp_path):
    data = write_fake_mnist(tmp_path / "data")
    out = _run(tmp_path, f"data_dir={data}", *TINY, "tolerances=[1e-1,1e-2,1e-3]")
    assert "backward/forward NFE ratio" in out
    results = tmp_path / "runs/nfe_stats/smoke"
    for name in ("figure3.png", "figure3.csv", "figure3.md"):
        assert (results / name).stat().st_size > 0
    assert "Backward/forward NFE ratio" in (results / "figure3.md").read_text()
    assert any(results.glob("*/tb/*"))

    _run(tmp_path, "-m", f"data_dir={data}", *TINY, "solver.rtol=1e-4")  # one more point, as a multirun job
    rows = sorted(_rows(results / "figure3.csv"), key=lambda row: -row["rtol"])
    assert [row["rtol"] for row in rows] == [1e-1, 1e-2, 1e-3, 1e-4]
    forward = [row["nfe_forward"] for row in rows]
    assert all(a < b for a, b in itertools.pairwise(forward)), forward
    errors = [row["relative_error"] for row in rows]
    assert errors[-1] < errors[0]
    assert all(row["nfe_backward"] > 0 and row["nfe_backward_seminorm"] > 0 for row in rows)


def test_missing_checkpoint_says_how_to_train_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "experiments.nfe_stats", "profile=smoke",
                           f"checkpoint={tmp_path / 'none.pt'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode != 0 and "experiments.mnist model=odenet" in done.stderr


def test_fit_ratio_is_the_least_squares_slope_through_the_origin():
    assert fit_ratio([10, 20, 40], [5, 10, 20]) == pytest.approx(0.5)
    assert fit_ratio([1, 2], [1, 3]) == pytest.approx((1 + 6) / 5)
    with pytest.raises(ValueError, match="zero"):
        fit_ratio([0, 0], [1, 2])
