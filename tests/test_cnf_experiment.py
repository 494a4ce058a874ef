"""The CNF experiment end to end through Hydra (smoke profile), the trace-cost script, and bad configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neuralode.flows.tasks import resolve_trace

REPO = Path(__file__).resolve().parents[1]


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_mle_smoke_run_writes_result_plot_data_and_tensorboard(tmp_path):
    overrides = ["task=mle", "target=moons", "flow=mlp", "size=8", "trace=hutchinson", "noise=rademacher"]
    done = _run(tmp_path, "-m", "experiments.cnf", "profile=smoke", "progress=false", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs/cnf/smoke/mle/moons/mlp-8-hutchinson/noise=rademacher"
    result = json.loads((run_dir / "result.json").read_text())
    for key in ("commit", "device", "date", "seed", "parameters", "profile", "iterations", "trace"):
        assert key in result
    assert result["trace"] == "hutchinson" and result["iterations"] == 4
    final = result["final"]
    assert final["train_nfe_forward"] > 0 and final["train_nfe_backward"] > 0
    assert 0 < final["test_nll"] < 10
    assert (run_dir / "epochs.csv").exists() and any((run_dir / "tb").iterdir())
    plot = torch.load(run_dir / "plot_data.pt", weights_only=True)
    assert plot["grid_logp"].shape == (100, 100) and plot["snapshots"].shape[:2] == (6, 2000)
    assert "test NLL" in done.stdout


def test_density_smoke_run_reports_kl(tmp_path):
    done = _run(tmp_path, "-m", "experiments.cnf", "profile=smoke", "progress=false", "tensorboard=false",
                "task=density", "target=u2", "flow=planar", "size=2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(
        (tmp_path / "runs/cnf/smoke/density/u2/planar-2-auto/default/result.json").read_text()
    )
    assert result["final"]["kl"] > 0 and result["final"]["kl_stderr"] > 0  # KL(q || p) >= 0 in expectation


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"flow": "realnvp"}, "flow must be one of"),
        ({"target": "u9"}, "target for task=density"),
        ({"task": "mle", "target": "u1"}, "target for task=mle"),
        ({"trace": "hutchinson"}, "trace for flow=cnf"),
        ({"task": "vae"}, "task must be one of"),
    ],
)
def test_bad_config_fails_naming_the_key(override, message):
    settings = {"task": "density", "target": "u1", "flow": "cnf", "trace": "auto", **override}
    with pytest.raises(ValueError, match=message):
        resolve_trace(**settings)
    assert resolve_trace(task="mle", target="moons", flow="mlp", trace="auto") == "exact"
    assert resolve_trace(task="density", target="u1", flow="cnf", trace="auto") == "closed_form"


def test_trace_cost_script_writes_both_methods_per_dimension(tmp_path):
    done = _run(
        tmp_path, str(REPO / "scripts/measure_cnf_trace.py"), "--profile", "smoke", "--runs", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "smoke/trace_cost.json").read_text())["rows"]
    assert {(r["dim"], r["trace"]) for r in rows} == {(d, t) for d in (2, 8) for t in ("exact", "hutchinson")}
    assert all(r["forward_s"] > 0 and r["nfe_forward"] == 16 for r in rows)


def test_mle_smoke_run_with_rnode_regularization_adds_its_penalty(tmp_path):
    overrides = ["task=mle", "target=moons", "flow=mlp", "size=8", "trace=hutchinson", "regularization=rnode"]
    done = _run(tmp_path, "-m", "experiments.cnf", "profile=smoke", "progress=false", "tensorboard=false",
                *overrides)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs/cnf/smoke/mle/moons/mlp-8-hutchinson/regularization=rnode"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["config"]["regularization"]["name"] == "rnode"
    final = result["final"]
    assert final["train_regularization"] > 0 and 0 < final["test_nll"] < 10
    assert final["train_nfe_forward"] > 0 and final["train_nfe_backward"] > 0
