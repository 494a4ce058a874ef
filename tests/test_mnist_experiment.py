"""The MNIST experiment end to end through Hydra, on a tiny fake dataset (smoke profile, 8 channels)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neuralode.models.mnist import MODEL_NAMES
from tests.fake_mnist import write_fake_mnist

REPO = Path(__file__).resolve().parents[1]
SMALL = ["profile=smoke", "++model.channels=8", "test_batch_size=32", "progress=false", "tensorboard=false"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fake_mnist(tmp_path_factory.mktemp("mnist"))


def _command(data_dir, *overrides):
    flags = [o for o in overrides if o.startswith("-")]  # Hydra wants flags such as -m before overrides
    overrides = tuple(o for o in overrides if not o.startswith("-"))
    return [sys.executable, "-m", "experiments.mnist", *flags, f"data_dir={data_dir}", *SMALL, *overrides]


def _run(cwd, data_dir, *overrides):
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(_command(data_dir, *overrides), cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _run_dir(cwd: Path, model: str) -> Path:
    """The one run folder of ``model`` under ``cwd`` (its name is made from the overrides)."""
    (found,) = (cwd / "runs/mnist/smoke" / model).iterdir()
    return found


def _result(path: Path) -> dict:
    return json.loads((path / "result.json").read_text())


TIMING = ("seconds_per_iteration", "wall_s", "cpu_s", "eval_wall_s", "peak_memory_mb")  # differ run to run


def _comparable(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def test_odenet_smoke_run_writes_its_files_and_records_its_provenance(tmp_path, data_dir):
    out = _run(tmp_path, data_dir, "model=odenet", "tensorboard=true")
    run_dir = _run_dir(tmp_path, "odenet")
    assert "ODE-Net: test error" in out
    result = _result(run_dir)
    for key in ("commit", "device", "date", "seed", "parameters", "profile", "config"):
        assert key in result
    assert result["solver"]["method"] == "dopri5"
    assert result["final"]["train_nfe_forward"] > 0 and result["final"]["train_nfe_backward"] > 0
    assert len(result["history"]) == 2
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "epochs.csv").exists()
    assert any((run_dir / "tb").iterdir())
    assert (run_dir / ".hydra" / "config.yaml").exists()


def test_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path, data_dir):
    overrides = ["model=rknet", "epochs=4"]
    _run(tmp_path / "a", data_dir, *overrides)
    expected = _result(_run_dir(tmp_path / "a", "rknet"))

    cwd = tmp_path / "b"
    cwd.mkdir()
    run_dir = _run_dir(tmp_path / "a", "rknet")
    run_dir = cwd / run_dir.relative_to(tmp_path / "a")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(_command(data_dir, *overrides), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "result.json").exists(), "the run finished before it could be killed"

    out = _run(cwd, data_dir, *overrides)
    assert "resuming" in out
    result = _result(run_dir)
    assert 1 <= result["resumed_from_epoch"] <= 3
    assert _comparable(result["history"]) == _comparable(expected["history"])


def test_multirun_over_models_puts_each_run_in_its_own_folder(tmp_path, data_dir):
    _run(tmp_path, data_dir, "-m", "model=mlp,resnet", "epochs=1")
    for model in ("mlp", "resnet"):
        result = _result(_run_dir(tmp_path, model))
        assert result["model"] == model and len(result["history"]) == 1


def test_the_table1_experiment_trains_the_four_models_rknet_direct_and_odenet_adjoint(tmp_path, data_dir):
    """What ``make table1`` runs: one multirun (configs/experiment/table1.yaml), each model in its folder."""
    _run(tmp_path, data_dir, "-m", "experiment=table1", "epochs=1")
    results = {model: _result(_run_dir(tmp_path, model)) for model in MODEL_NAMES}
    assert all(results[m]["model"] == m and len(results[m]["history"]) == 1 for m in MODEL_NAMES)
    assert results["rknet"]["solver"]["gradient"] == "direct"
    assert results["odenet"]["solver"]["gradient"] == "adjoint"
    assert results["rknet"]["final"]["train_nfe_backward"] == 0  # backprop through the solver
    assert results["odenet"]["final"]["train_nfe_backward"] > 0  # the adjoint's backward solve


def test_missing_data_names_the_make_target(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = _command(tmp_path / "nowhere", "model=mlp")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "make data" in done.stderr


def test_bf16_precision_trains_the_odenet(tmp_path, data_dir):
    """``precision=bf16``: the ODE-Net trains under bfloat16 autocast (the solver itself stays float32)."""
    _run(tmp_path, data_dir, "model=odenet", "precision=bf16", "epochs=1")
    result = _result(_run_dir(tmp_path, "odenet"))
    assert result["config"]["precision"] == "bf16"
    final = result["final"]
    assert final["train_loss"] == final["train_loss"] and final["train_loss"] < 10  # finite, not diverged
    assert final["train_nfe_forward"] > 0 and final["train_nfe_backward"] > 0


def test_fp16_precision_is_refused_before_training(tmp_path, data_dir):
    cwd = tmp_path
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        _command(data_dir, "model=odenet", "precision=fp16"), cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "precision='bf16'" in done.stderr
    assert not (cwd / "runs/mnist/smoke/odenet").exists() or not any(
        (cwd / "runs/mnist/smoke/odenet").rglob("*.pt")
    )


def test_rnode_regularization_adds_the_ode_blocks_penalty_to_the_loss(tmp_path, data_dir):
    """``regularization=rnode``: the kinetic and Jacobian penalties are integrated along the ODE block's
    solve, added to the loss and reported; the run gets its own folder and settings."""
    _run(tmp_path, data_dir, "model=odenet", "regularization=rnode", "epochs=1")
    run_dir = _run_dir(tmp_path, "odenet")
    assert "regularization=rnode" in run_dir.name
    result = _result(run_dir)
    assert result["config"]["regularization"]["name"] == "rnode"
    assert result["config"]["regularization"]["kinetic"] > 0
    final = result["final"]
    assert final["train_regularization"] > 0 and final["train_loss"] == final["train_loss"]
    assert final["train_nfe_forward"] > 0 and final["train_nfe_backward"] > 0


def test_a_negative_regularization_weight_is_refused_before_training(tmp_path, data_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = _command(data_dir, "model=odenet", "regularization=rnode", "regularization.kinetic=-1")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "regularization=" in done.stderr and "kinetic must be a finite number >= 0" in done.stderr
    assert not (tmp_path / "runs").exists()
