"""The latent ODE experiment end to end through Hydra (smoke profile): runs, resume, Table 2, figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["profile=smoke", "progress=false", "tensorboard=false"]


def _run(cwd: Path, *args: str, module: str = "experiments.latent_ode", check: bool = True):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", module, *args] if module else [sys.executable, *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Both nets at every observation count (one multirun), plus the event-rate run, in one folder."""
    cwd = tmp_path_factory.mktemp("latent")
    _run(cwd, "-m", "net=rnn,latent_ode", "num_observed=30,50,100", *SMALL)
    _run(cwd, "num_observed=100", "latent_ode.event_rate=true", *SMALL)
    return cwd


def test_runs_write_results_with_provenance_and_a_finished_run_is_left_alone(smoke_runs):
    run_dir = smoke_runs / "runs/latent_ode/smoke/latent_ode/n30/default"
    result = json.loads((run_dir / "result.json").read_text())
    final = result["final"]
    assert final["test_rmse_extrapolation"] > 0 and final["test_nfe_forward"] > 0
    assert result["profile"] == "smoke" and result["commit"] and result["device"].startswith("CPU")
    assert {"train_elbo", "train_kl", "train_log_likelihood"} <= set(final)
    before = (run_dir / "result.json").read_text()
    again = _run(smoke_runs, "num_observed=30", *SMALL)
    assert "extrapolation RMSE" in again.stdout
    assert (run_dir / "result.json").read_text() == before
    rnn = json.loads((smoke_runs / "runs/latent_ode/smoke/rnn/n30/default/result.json").read_text())
    assert rnn["bptt"]["strategy"] == "full" and "train_mse" in rnn["final"]


def test_table2_and_figures_from_the_smoke_runs(smoke_runs, tmp_path):
    runs = smoke_runs / "runs/latent_ode"
    out = tmp_path / "results"
    table = [
        str(REPO / "scripts/make_table2.py"),
        "--profile",
        "smoke",
        "--runs",
        str(runs),
        "--out",
        str(out),
    ]
    empty = tmp_path / "empty"
    (empty / "smoke").mkdir(parents=True)
    missing = _run(smoke_runs, *table[:-4], "--runs", str(empty), "--out", str(out), module="", check=False)
    assert missing.returncode != 0 and "net=rnn num_observed=30" in missing.stderr  # names the run to make
    _run(smoke_runs, *table, module="")
    text = (out / "table2.md").read_text()
    assert "0.1642" in text and "0.3937" in text  # the paper's column
    assert "Profile **smoke**" in text and "commit" in text
    assert len((out / "table2.csv").read_text().strip().splitlines()) == 4
    plots = [
        str(REPO / "scripts/plot_latent_ode.py"),
        "--profile",
        "smoke",
        "--runs",
        str(runs),
        "--out",
        str(out),
    ]
    _run(smoke_runs, *plots, module="")
    for name in ("latent_extrapolation.png", "latent_trajectories.png", "latent_poisson.png"):
        assert (out / name).stat().st_size > 10_000


def test_the_gradient_is_the_solver_group_s_and_an_override_selects_the_adjoint(smoke_runs, tmp_path):
    direct = json.loads((smoke_runs / "runs/latent_ode/smoke/latent_ode/n30/default/result.json").read_text())
    assert direct["config"]["solver"]["gradient"] == "direct" and direct["final"]["train_nfe_backward"] == 0
    _run(tmp_path, "num_observed=30", "solver.gradient=adjoint", *SMALL)
    run_dir = tmp_path / "runs/latent_ode/smoke/latent_ode/n30/solver.gradient=adjoint"
    adjoint = json.loads((run_dir / "result.json").read_text())
    assert adjoint["config"]["solver"]["gradient"] == "adjoint" and adjoint["final"]["train_nfe_backward"] > 0


def test_bad_settings_fail_before_any_work(tmp_path):
    done = _run(tmp_path, "net=lstm", *SMALL, check=False)
    assert done.returncode != 0 and "net must be one of" in done.stderr
    done = _run(tmp_path, "num_observed=500", *SMALL, check=False)
    assert done.returncode != 0 and "num_observed" in done.stderr
    assert not (tmp_path / "runs/latent_ode/smoke/lstm").exists() or not any(
        (tmp_path / "runs/latent_ode/smoke/lstm").rglob("checkpoint.pt")
    )


def test_a_sweep_goes_through_submitit_with_the_local_launcher(tmp_path):
    done = _run(tmp_path, "-m", "hydra/launcher=local", "net=rnn,latent_ode", "num_observed=30", *SMALL)
    assert "Submitit 'local' sweep" in done.stdout + done.stderr
    sweep = tmp_path / "runs/latent_ode/smoke"
    for net in ("rnn", "latent_ode"):
        assert (sweep / net / "n30/default/result.json").exists()
    assert any((sweep / ".submitit").iterdir())  # submitit's job folders: the jobs went through it


def test_rnode_regularization_adds_the_latent_solves_penalty(tmp_path):
    _run(tmp_path, "num_observed=30", "regularization=rnode", *SMALL)
    run_dir = tmp_path / "runs/latent_ode/smoke/latent_ode/n30/regularization=rnode"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["config"]["regularization"]["name"] == "rnode"
    assert result["final"]["train_regularization"] > 0 and result["final"]["train_nfe_forward"] > 0
