"""Figure 3's pipeline end to end on a tiny ODE-Net and a fake dataset (seconds): experiments/nfe_stats.py
measures points, scripts/make_figure3.py draws them; the sweep never changes the model it measures."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neuralode import Adjoint, Direct, SolverConfig
from neuralode.analysis import adjoint_variants, fit_ratio, measure_tolerance, reference_outputs
from neuralode.models.mnist import build_mnist_model
from tests.fake_mnist import write_fake_mnist

REPO = Path(__file__).resolve().parents[1]
TINY = ["profile=smoke", "checkpoint=untrained", "untrained_channels=4", "batch_size=8", "test_batch_size=16",
        "repeats=1", "reference_rtol=1e-7"]  # fmt: skip


def _run(cwd: Path, *args: str, module: str = "experiments.nfe_stats") -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, *(["-m", module] if module else []), *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _figure(cwd: Path, out: Path) -> str:
    points = cwd / "runs/nfe_stats/smoke/points"
    return _run(cwd, str(REPO / "scripts/make_figure3.py"), "--profile", "smoke", "--points", str(points),
                "--out", str(out), module="")  # fmt: skip


def _rows(path: Path) -> list[dict[str, float]]:
    with path.open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def test_sweep_writes_the_figure_nfe_grows_as_the_tolerance_tightens_and_a_multirun_adds_points(tmp_path):
    data = write_fake_mnist(tmp_path / "data")
    out = _run(tmp_path, f"data_dir={data}", *TINY, "tolerances=[1e-1,1e-2,1e-3]")
    assert "backward/forward NFE ratio" in out
    assert any((tmp_path / "runs/nfe_stats/smoke").glob("*/tb/*"))
    results = tmp_path / "figure"
    assert "backward/forward NFE ratio" in _figure(tmp_path, results)
    for name in ("figure3.png", "figure3.csv", "figure3.md"):
        assert (results / name).stat().st_size > 0
    assert "Backward/forward NFE ratio" in (results / "figure3.md").read_text()

    _run(tmp_path, "-m", f"data_dir={data}", *TINY, "rtol=1e-4")  # one more point, as a multirun job
    _figure(tmp_path, results)
    rows = sorted(_rows(results / "figure3.csv"), key=lambda row: -row["rtol"])
    assert [row["rtol"] for row in rows] == [1e-1, 1e-2, 1e-3, 1e-4]
    forward = [row["nfe_forward"] for row in rows]
    assert all(a < b for a, b in itertools.pairwise(forward)), forward
    errors = [row["relative_error"] for row in rows]
    assert errors[-1] < errors[0]
    assert all(row["nfe_backward"] > 0 and row["nfe_backward_seminorm"] > 0 for row in rows)


def test_a_trained_checkpoint_is_measured_and_its_training_log_drawn(tmp_path):
    """What ``make figure3`` does: train the ODE-Net, pass its checkpoint.pt, draw panel (d) from its run."""
    data = write_fake_mnist(tmp_path / "data")
    train = ["model=odenet", "profile=smoke", "++model.channels=4", "progress=false", "test_batch_size=32"]
    _run(tmp_path, f"data_dir={data}", *train, module="experiments.mnist")
    checkpoint = next((tmp_path / "runs/mnist/smoke/odenet").glob("*/checkpoint.pt"))
    _run(tmp_path, f"data_dir={data}", *TINY[2:], "profile=smoke", f"checkpoint='{checkpoint}'", "rtol=1e-2")
    (point,) = (tmp_path / "runs/nfe_stats/smoke/points").glob("rtol=*.json")
    recorded = json.loads(point.read_text())
    assert (
        recorded["model"].startswith("ODE-Net trained 2 epochs") and recorded["batches_per_epoch"] == 2
    )  # 256 images, batch 128
    assert recorded["mnist_run"] == str(checkpoint.parent)
    _figure(tmp_path, tmp_path / "figure")
    assert "no training log" not in (tmp_path / "figure/figure3.md").read_text()
    assert (tmp_path / "figure/figure3.png").stat().st_size > 0


def test_missing_checkpoint_says_how_to_train_one_before_any_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "experiments.nfe_stats", "profile=smoke",
                           f"checkpoint={tmp_path / 'none.pt'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 2 and "experiments.mnist model=odenet" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_sweep_leaves_the_measured_models_solver_config_unchanged():
    torch.manual_seed(0)
    solver = SolverConfig(rtol=1e-3, atol=1e-3, gradient=Adjoint(rtol=1e-4))
    model = build_mnist_model("odenet", channels=4, solver=solver)
    block, before = model.features, [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        inputs = [model.stem(torch.rand(2, 1, 28, 28))]
    labels = [torch.tensor([1, 2])]
    references = reference_outputs(block, inputs, 1e-6)
    assert references[0].dtype == torch.float64 and block.t.dtype == torch.float32
    tolerances = []
    point = measure_tolerance(block, model.head, inputs, labels, references, 1e-2,
                              lambda rtol: tolerances.append(rtol) or 0.0, repeats=1)  # fmt: skip
    assert point.nfe_forward > 0 and point.nfe_backward > 0 and point.nfe_backward_seminorm > 0
    assert tolerances == [1e-2]
    assert model.features is block and block.solver is solver
    assert solver == SolverConfig(rtol=1e-3, atol=1e-3, gradient=Adjoint(rtol=1e-4))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())


def test_the_adjoint_variants_keep_the_backward_settings_and_differ_only_in_the_norm():
    solver = SolverConfig(
        gradient=Adjoint(rtol=1e-5, method="bosh3", options={"max_num_steps": 500, "norm": "rms"})
    )
    variants = adjoint_variants(solver)
    assert variants["default"].gradient == Adjoint(rtol=1e-5, method="bosh3", options={"max_num_steps": 500})
    assert variants["seminorm"].gradient == Adjoint(
        rtol=1e-5, method="bosh3", options={"max_num_steps": 500, "norm": "seminorm"}
    )
    assert adjoint_variants(SolverConfig(gradient=Direct()))["default"].gradient == Adjoint()


def test_fit_ratio_is_the_least_squares_slope_through_the_origin():
    assert fit_ratio([10, 20, 40], [5, 10, 20]) == pytest.approx(0.5)
    assert fit_ratio([1, 2], [1, 3]) == pytest.approx((1 + 6) / 5)
    with pytest.raises(ValueError, match="zero"):
        fit_ratio([0, 0], [1, 2])
