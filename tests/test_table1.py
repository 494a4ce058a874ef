"""Table 1's writer and the memory measurement, on synthetic results and a fake dataset."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from neuralode import Adjoint, Direct, SolverConfig
from neuralode.models.mnist import MODEL_NAMES
from tests.fake_mnist import write_fake_mnist

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(model: str, error: float) -> dict:
    solver = {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3} if model in ("rknet", "odenet") else None
    nfe = (26.0, 38.0 if model == "odenet" else 0.0) if solver else (0.0, 0.0)
    return {
        "label": model.upper(), "parameters": 1000, "epochs": 3, "mean_seconds_per_iteration": 0.5,
        "final": {"test_error": error, "train_nfe_forward": nfe[0], "train_nfe_backward": nfe[1]},
        "solver": solver, "device": "CPU (test)", "seed": 0, "date": "today", "commit": "abc",
        "config": {"batch_size": 128, "optimizer": {"lr": 0.1, "momentum": 0.9},
                   "schedule": {"milestones": [0.5, 0.75, 0.9], "gamma": 0.1},
                   "profile": {"mnist": {"crop_padding": 0}}},
    }  # fmt: skip


def test_table_puts_ours_beside_the_papers_and_states_how_it_was_made():
    table1 = _load("make_table1")
    results = {m: _result(m, 0.01 + i / 1000) for i, m in enumerate(MODEL_NAMES)}
    points = [(m, 1e-3) for m in MODEL_NAMES] + [("rknet", 1e-5), ("odenet", 1e-5)]
    measured = [
        {"model": m, "rtol": r, "nfe_forward": 20, "nfe_backward": 20, "peak_memory_mb": 100.0 + i,
         "seconds_per_step": 0.1, "peak_reset": True}
        for i, (m, r) in enumerate(points)
    ]  # fmt: skip
    memory = {"date": "today", "commit": "abc", "device": "CPU (test)", "rows": measured}
    rows = table1.table_rows(results, memory)
    assert [row["test_error_pct"] for row in rows] == [1.0, 1.1, 1.2, 1.3]
    assert [row["paper_test_error"] for row in rows] == ["1.60%", "0.41%", "0.47%", "0.42%"]
    text = table1.markdown(rows, results, memory, "quick")
    for needed in ("quick profile", "CPU (test)", "Seed 0", "commit abc", "LSODE", "| 1.00% | 1.60% |",
                   "50%/75%/90%", "- (backprop)", "| ODENET | 1e-05 |"):  # fmt: skip
        assert needed in text, needed
    assert "Warning" not in text


def test_memory_measurement_of_one_step(tmp_path):
    memory = _load("measure_mnist_memory")
    data = write_fake_mnist(tmp_path)
    solver = memory.model_solver("rknet", tmp_path / "no-runs")  # the shipped config's: direct gradient
    assert solver.gradient == Direct() and memory.model_solver("odenet", tmp_path).gradient == Adjoint()
    assert memory.model_solver("mlp", tmp_path) is None
    row = memory.measure_step(
        "rknet", solver.replace(rtol=1e-2, atol=1e-2), None, str(data), torch.device("cpu")
    )
    assert row["nfe_forward"] > 0 and row["nfe_backward"] == 0
    assert row["peak_memory_mb"] > 0 and row["seconds_per_step"] > 0 and row["peak_reset"]


def test_the_memory_measurement_takes_the_runs_solver(tmp_path):
    memory = _load("measure_mnist_memory")
    run = tmp_path / "odenet" / "default"
    run.mkdir(parents=True)
    solver = {"method": "rk4", "rtol": 1e-3, "atol": 1e-3, "options": {"step_size": 0.5},
              "gradient": "adjoint", "adjoint": {}, "checkpoint_every": 1}  # fmt: skip
    (run / "result.json").write_text(json.dumps({"solver": solver}))
    assert memory.model_solver("odenet", tmp_path) == SolverConfig("rk4", options={"step_size": 0.5})
    (run / "result.json").write_text(json.dumps({"solver": {"method": "rk4", "rtol": 1e-3, "atol": 1e-3}}))
    assert memory.model_solver("odenet", tmp_path) == SolverConfig()  # an old run's: the shipped config's
