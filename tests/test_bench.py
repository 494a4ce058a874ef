"""The benchmark harness (scripts/bench.py): its pieces, and its smoke mode end to end. No timings are
asserted; only the structure of what it writes and the bookkeeping it relies on."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def test_round_robin_interleaves_and_takes_medians():
    order = []

    def job(name, values):
        it = iter(values)

        def run():
            order.append(name)
            return {"seconds": next(it), "label": name}

        return run

    result = bench.round_robin(
        {"a": job("a", [9, 1, 2, 3]), "b": job("b", [9, 5, 7, 6])}, repeats=3, warmup=1
    )
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rounds rotating the start
    assert result["a"]["seconds"] == 2 and result["b"]["seconds"] == 6  # medians, warm-up excluded
    assert result["a"]["seconds_all"] == [1, 2, 3] and result["a"]["label"] == "a"


def test_timed_counts_calls_and_time():
    field = bench.Timed(bench.make_mlp(torch.float64))
    y = torch.zeros(3, 2, dtype=torch.float64)
    for _ in range(4):
        field(torch.tensor(0.0), y)
    assert field.calls == 4 and field.seconds > 0
    field.reset()
    assert field.calls == 0 and field.seconds == 0


def test_timed_flat_state_layouts():
    """torchode's batched (batch, features) state and its adjoint's single (features,) sample."""
    field = bench.Timed(bench.make_block_field(8), flat_shape=(8, 4, 4))
    y = torch.randn(3, 8 * 4 * 4)
    batched = field(torch.zeros(3), y)
    single = field(torch.tensor(0.0), y[0])
    assert batched.shape == (3, 128) and single.shape == (128,)
    torch.testing.assert_close(single, batched[0], rtol=1e-5, atol=1e-5)


def test_time_at_error_interpolates_log_log():
    rows = [{"library": "x", "error": 1e-2, "seconds": 1.0}, {"library": "x", "error": 1e-4, "seconds": 4.0}]
    assert bench.time_at_error(rows, "x", 1e-3) == pytest.approx(2.0)
    assert bench.time_at_error(rows, "x", 1e-6) is None
    assert bench.time_at_error(rows, "y", 1e-3) is None


def test_smoke_run_writes_results(tmp_path):
    """``--quick --libraries neuralode`` needs no optional peers; the files have every case."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        str(ROOT / "scripts" / "bench.py"),
        "--quick",
        "--libraries",
        "neuralode",
        "--out-dir",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    meta = result["meta"]
    assert meta["quick"] is True and meta["threads"] == 1 and meta["libraries"] == ["neuralode"]
    assert {"torch", "neuralode", "python"} <= set(meta["versions"]) and meta["commit"]
    forward = result["case1_forward"]
    assert forward and {"seconds", "func_seconds", "overhead_ratio", "nfe", "error"} <= set(forward[0])
    assert all(row["nfe"] > 0 and row["overhead_ratio"] >= 1.0 for row in forward)
    modes = {row["mode"] for row in result["case3_gradients"]}
    assert modes == {"direct", "adjoint", "seminorm", "adjoint-nocarry", "seminorm-nocarry", "checkpoint"}
    assert all(row["grad_rel_error"] < 1e-2 for row in result["case3_gradients"])
    assert {row["mode"] for row in result["case4_block"]} == {"forward", "adjoint", "seminorm"}
    memory = {(row["mode"], row["steps"]) for row in result["case5_memory"]}
    assert memory == {("direct", 2), ("adjoint", 2), ("checkpoint", 2)}
    errors = {row["mode"]: row["grad_rel_error"] for row in result["case3_gradients"]}
    assert abs(errors["checkpoint"] - errors["direct"]) <= 1e-6 * errors["direct"]  # the same gradient
    text = (tmp_path / "bench.md").read_text()
    for heading in ("Smoke run", "## Case 1-2", "## Case 3", "## Case 4", "## Case 5"):
        assert heading in text
    assert (tmp_path / "bench_memory.png").stat().st_size > 0
