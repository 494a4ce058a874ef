"""The benchmark (the scripts/bench/ package, ``python -m scripts.bench``): its pieces, and its smoke
mode end to end. No timings are asserted; only the structure of what it writes and the bookkeeping it
relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import neuralode
from scripts.bench.bare_loop import bare_dopri5
from scripts.bench.harness import Timed, round_robin
from scripts.bench.problems import make_block_field, make_mlp, mlp_problem
from scripts.bench.report import time_at_error, write_markdown
from scripts.bench.targets import load_targets, summary_lines

ROOT = Path(__file__).resolve().parents[1]


def test_round_robin_interleaves_and_takes_medians():
    order = []

    def job(name, values):
        it = iter(values)

        def run():
            order.append(name)
            return {"seconds": next(it), "label": name}

        return run

    result = round_robin({"a": job("a", [9, 1, 2, 3]), "b": job("b", [9, 5, 7, 6])}, repeats=3, warmup=1)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rounds rotating the start
    assert result["a"]["seconds"] == 2 and result["b"]["seconds"] == 6  # medians, warm-up excluded
    assert result["a"]["seconds_all"] == [1, 2, 3] and result["a"]["label"] == "a"


def test_timed_counts_calls_and_time():
    field = Timed(make_mlp(torch.float64))
    y = torch.zeros(3, 2, dtype=torch.float64)
    for _ in range(4):
        field(torch.tensor(0.0), y)
    assert field.calls == 4 and field.seconds > 0
    field.reset()
    assert field.calls == 0 and field.seconds == 0


def test_timed_flat_state_layouts():
    """torchode's batched (batch, features) state and its adjoint's single (features,) sample."""
    field = Timed(make_block_field(8), flat_shape=(8, 4, 4))
    y = torch.randn(3, 8 * 4 * 4)
    batched = field(torch.zeros(3), y)
    single = field(torch.tensor(0.0), y[0])
    assert batched.shape == (3, 128) and single.shape == (128,)
    torch.testing.assert_close(single, batched[0], rtol=1e-5, atol=1e-5)


def test_time_at_error_interpolates_log_log():
    rows = [{"library": "x", "error": 1e-2, "seconds": 1.0}, {"library": "x", "error": 1e-4, "seconds": 4.0}]
    assert time_at_error(rows, "x", 1e-3) == pytest.approx(2.0)
    assert time_at_error(rows, "x", 1e-6) is None
    assert time_at_error(rows, "y", 1e-3) is None


def test_targets_come_from_the_data_file():
    """The thresholds of the targets table are targets.yaml's numbers (all read as numbers, not strings),
    and changing one changes the verdict."""
    targets = load_targets()
    assert targets["issue"] == 8
    numbers = [
        *(v for row in targets["forward"] for v in row.values()),
        targets["checkpoint_gradient"]["rel"],
        *targets["checkpoint_gradient"]["abs"].values(),
        targets["block"]["speedup"],
        *targets["memory"].values(),
    ]
    assert all(isinstance(v, int | float) and v > 0 for v in numbers)
    row = {"batch": 512, "dtype": "float32", "nfe": 10, "overhead_ratio": 1.3}
    forward = [
        {**row, "library": "neuralode", "seconds": 1.0},
        {**row, "library": "torchdiffeq", "seconds": 2.2},
    ]
    result = {"case1_forward": forward, "case3_gradients": [], "case4_block": [], "case5_memory": []}
    speed = "| case 1, batch 512 float32: >= {}x torchdiffeq, NFE <= its NFE | 2.20x, NFE 10 vs 10 | {} |"
    lines = summary_lines(result, targets)
    assert lines[0] == "## Against the targets of issue 8"
    assert speed.format("2.0", "yes") in lines
    assert "| case 2, batch 512 float32: overhead <= 1.35 | 1.30 | yes |" in lines
    stricter = {**targets, "forward": [{"batch": 512, "speedup": 3.0, "overhead": 1.2}]}
    lines = summary_lines(result, stricter)
    assert speed.format("3.0", "no") in lines
    assert "| case 2, batch 512 float32: overhead <= 1.2 | 1.30 | no |" in lines
    bare = {**row, "library": "bare loop (floor)", "seconds": 0.9, "overhead_ratio": 1.25}
    lines = summary_lines({**result, "case1_forward": [*forward, bare]}, targets)
    floor = "| case 2, batch 512 float32: overhead <= 1.35 | 1.30 (the bare loop's floor: 1.25) | yes |"
    assert floor in lines


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bare_loop_takes_neuralodes_steps_to_its_answer(batch, dtype):
    """Case 2's floor row is only a floor if it is the same algorithm: the same evaluations, the same
    answer (to rounding: float32 sums in another order, no more), on the benchmark's problem."""
    y0, t = mlp_problem(batch, dtype, 10)
    bare, ours = Timed(make_mlp(dtype)), Timed(make_mlp(dtype))
    with torch.no_grad():
        ys_bare = bare_dopri5(bare, y0, t, 1e-6, 1e-6)
        ys = neuralode.odeint(ours, y0, t, rtol=1e-6, atol=1e-6, method="dopri5")
    assert bare.calls == ours.calls > 10
    assert ys_bare.shape == ys.shape
    torch.testing.assert_close(ys_bare, ys, rtol=0, atol=20 * torch.finfo(dtype).eps)


def test_summary_heading_names_the_issues_of_its_rows():
    """The stiff bench's table checks only issue 22's targets and must not be headed 'issue 8'; the
    full bench's checks issues 8 (unlabelled rows), 18 and 22."""
    from scripts.bench.targets import _issues_named

    stiff = ["| case 9 (issue 22), robertson: ... | 1.6x | yes |", "| case 11 (issue 22): ... | yes |"]
    assert _issues_named(stiff, 8) == "issue 22"
    full = ["| case 1, batch 512 float32: ... | 2.2x | yes |", "| case 7 (issue 18), mlp: ... | 1.6x | yes |"]
    assert _issues_named([*full, *stiff], 8) == "issues 8, 18 and 22"
    assert _issues_named([], 8) == "issue 8"


def test_smoke_run_writes_results(tmp_path):
    """``--quick --libraries neuralode`` needs no optional peers; the files have every case asked for
    (the stiff cases 9-11 have their own smoke tests below, which would repeat them here)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "scripts.bench",
        "--quick",
        "--libraries",
        "neuralode",
        "--cases",
        *("1", "3", "4", "5", "7", "8"),
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
    nfe = {(r["library"], r["batch"], r["dtype"]): r["nfe"] for r in forward}
    bare = [key for key in nfe if key[0] == "bare loop (floor)"]
    assert bare and all(nfe[key] == nfe[("neuralode", *key[1:])] for key in bare)
    modes = {row["mode"] for row in result["case3_gradients"]}
    assert modes == {"direct", "adjoint", "seminorm", "adjoint-nocarry", "seminorm-nocarry", "checkpoint"}
    assert all(row["grad_rel_error"] < 1e-2 for row in result["case3_gradients"])
    assert {row["mode"] for row in result["case4_block"]} == {"forward", "adjoint", "seminorm"}
    memory = {(row["mode"], row["steps"]) for row in result["case5_memory"]}
    assert memory == {("direct", 2), ("adjoint", 2), ("checkpoint", 2)}
    errors = {row["mode"]: row["grad_rel_error"] for row in result["case3_gradients"]}
    assert abs(errors["checkpoint"] - errors["direct"]) <= 1e-6 * errors["direct"]  # the same gradient
    per_sample = {
        row["mode"]: row
        for row in result["case8_per_sample"]
        if not row.get("gradient") and row["mode"] != "compaction"
    }
    assert set(per_sample) == {"per_sample", "per_sample, compact", "joint"}
    instances = result["case7_instances"]
    assert sorted({row["seed"] for row in instances}) == [0, 1]
    assert all(0 < row["grad_rel_error"] < 1e-2 and row["nfe_backward"] > 0 for row in instances)
    compaction = [row for row in result["case8_per_sample"] if row["mode"] == "compaction"]
    assert [row["width"] for row in compaction] == [4, 64]
    assert all(0.0 <= row["idle_share"] < 1.0 and row["seconds_compact"] > 0 for row in compaction)
    adjoint = {row["mode"]: row for row in result["case8_per_sample"] if row.get("gradient")}
    assert {"adjoint, per_sample", "direct, per_sample", "adjoint, joint"} <= set(adjoint)
    assert all(row["grad_error"] < 1e-2 for row in adjoint.values())
    assert per_sample["per_sample"]["sample_steps"] < per_sample["joint"]["sample_steps"]
    assert all(row["error"] < 1e-3 for row in per_sample.values())
    text = (tmp_path / "bench.md").read_text()
    headings = (
        "Smoke run",
        "## Case 1-2",
        "## Case 3",
        "## Case 4",
        "## Case 5",
        "## Case 8",
        "Compaction",
        "random instances",
    )
    for heading in headings:
        assert heading in text
    assert (tmp_path / "bench_memory.png").stat().st_size > 0


def test_steps_at_equal_error_interpolates_and_falls_back():
    """kvaerno5's steps at Radau's error: log-log between its sweep points, else its cheapest point at or
    below that error, else none; the target row compares them with Radau's steps."""
    from scripts.bench.stiff_cases import steps_at_equal_error, stiff_target_rows

    def point(method, rtol, steps, error):
        return {"problem": "p", "method": method, "rtol": rtol, "steps": steps, "error": error}

    radau = [point("Radau", 1e-5, 50, 1e-6), point("Radau", 1e-6, 80, 1e-7)]
    ours = [point("kvaerno5", 1e-6, 40, 1e-6), point("kvaerno5", 1e-7, 160, 1e-8)]
    equal = steps_at_equal_error(radau + ours, "p")
    assert equal["radau_steps"] == 80 and equal["steps"] == pytest.approx(80.0)  # halfway in log error
    tighter = [point("kvaerno5", 1e-8, 60, 1e-9), point("kvaerno5", 1e-9, 90, 1e-10)]
    assert steps_at_equal_error(radau + tighter, "p")["steps"] == 60
    assert steps_at_equal_error([*radau, point("kvaerno5", 1e-6, 10, 1e-3)], "p")["steps"] is None
    rows = [
        {"problem": "p", "method": "kvaerno5", "via": "neuralode", "seconds": 3.0},
        {"problem": "p", "method": "Radau", "via": "scipy", "seconds": 2.0},
        {"problem": "p", "method": "LSODA", "via": "scipy", "seconds": 1.0},
        {"problem": "p", "method": "Radau", "via": "neuralode scipy_solver", "seconds": 6.0},
        {"problem": "p", "method": "BDF", "via": "neuralode scipy_solver", "seconds": 2.0},
    ]
    result = {"case9_stiff": rows, "case9_sweep": radau + tighter}
    (steps_row, wrapped_row, direct_row) = stiff_target_rows(result, {"stiff": {"wall_ratio": 2.0}})
    assert steps_row[2] is True and "60 vs 80 steps" in steps_row[1]
    assert "through scipy_solver" in wrapped_row[0] and "directly" in direct_row[0]
    assert wrapped_row[2] is True and "Radau 0.5x, BDF 1.5x; faster than: Radau" in wrapped_row[1]
    assert direct_row[2] is False and "Radau 1.5x, LSODA 3.0x" in direct_row[1]
    assert stiff_target_rows(result, {"stiff": {"wall_ratio": 3.0}})[2][2] is True
    rows.append({"problem": "p", "method": "LSODA", "via": "neuralode scipy_solver", "seconds": 0.5})
    assert stiff_target_rows(result, {"stiff": {"wall_ratio": 2.0}})[1][2] is True  # LSODA: reported only
    rows[-2]["seconds"] = 1.0  # BDF through the wrapper 3x faster than kvaerno5: not within 2x
    assert stiff_target_rows(result, {"stiff": {"wall_ratio": 2.0}})[1][2] is False


def test_large_stiff_case_rows_and_its_memory_target():
    """Case 11 at smoke sizes: kvaerno5 (Krylov) at each size, no LU, within a small error; BDF and the
    capped dopri5 at the largest; the O(N) line is met for flat memory per state and not for growth."""
    from scripts.bench.config import config
    from scripts.bench.large_stiff import case_large_stiff, large_stiff_lines, large_stiff_target_rows

    rows = case_large_stiff(config(quick=True))
    assert [(r["states"], r["method"]) for r in rows] == [(400, "kvaerno5"), (800, "kvaerno5"), (800, "BDF"),
                                                          (800, "dopri5")]  # fmt: skip
    for r in rows[:2]:
        assert r["lu"] == 0 and r["krylov"] >= r["newton"] >= r["steps"] > 0 and 0 <= r["error"] < 1e-3
    assert "max_num_steps" in rows[-1]["failed"] and rows[-1]["error"] is None
    assert "| 800 | BDF | scipy, sparse LU |" in "\n".join(large_stiff_lines(rows))

    def run(states, peak_mb):
        return {"states": states, "method": "kvaerno5", "failed": "", "peak_mb": peak_mb, "error": 1e-6,
                "rtol": 1e-6, "dense_matrix_gb": states**2 * 8 / 2**30}  # fmt: skip

    (flat,) = large_stiff_target_rows({"case11_large_stiff": [run(25_000, 20.0), run(100_000, 80.0)]})
    assert flat[2] is True and "100,000 states: 80 MB" in flat[1]
    (grows,) = large_stiff_target_rows({"case11_large_stiff": [run(25_000, 20.0), run(100_000, 800.0)]})
    assert grows[2] is False


def test_stiff_smoke_run(tmp_path):
    """``--quick --cases 9 10``: every stiff row and sweep point is there with finite numbers, the
    dopri5 row says it hit its cap, and the issue-22 target lines are computed."""
    command = [
        sys.executable,
        "-m",
        "scripts.bench",
        "--quick",
        "--cases",
        "9",
        "10",
        "--out-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    rows = result["case9_stiff"]
    methods = {(r["problem"], r["method"], r["via"]) for r in rows}
    for problem in ("robertson", "van der pol mu=1000"):
        for method, via in (("kvaerno5", "neuralode"), ("kvaerno3", "neuralode"), ("Radau", "scipy"),
                            ("BDF", "scipy"), ("LSODA", "scipy"), ("Radau", "neuralode scipy_solver"),
                            ("BDF", "neuralode scipy_solver"), ("LSODA", "neuralode scipy_solver"),
                            ("dopri5", "neuralode")):  # fmt: skip
            assert (problem, method, via) in methods
    for r in rows:
        assert r["seconds"] > 0 and r["nfe"] > 0 and r["steps"] > 0
        if r["method"] == "dopri5":
            assert r["error"] is None and "max_num_steps" in r["failed"]  # the smoke cap is 200 steps
        else:
            assert 0 <= r["error"] < 1e-3 and not r["failed"]
        if r["method"].startswith("kvaerno"):
            assert r["newton"] >= r["steps"] and 0 < r["lu"] <= r["steps"]
    sweep = result["case9_sweep"]
    assert len(sweep) == 2 * 2 * 2 and all(r["steps"] > 0 and r["error"] >= 0 for r in sweep)
    training = {r["method"]: r for r in result["case10_training"]}
    assert set(training) == {"dopri5", "kvaerno5"}
    assert training["dopri5"]["initial_loss"] == pytest.approx(training["kvaerno5"]["initial_loss"], rel=1e-3)
    for r in training.values():
        assert r["nfe_forward"] > 0 and r["seconds_per_iteration"] > 0
        assert 0 < r["final_loss"] < float("inf") and all(0 < k < float("inf") for k in r["rates"])
    text = (tmp_path / "bench.md").read_text()
    for line in ("## Case 9", "### Steps against error", "## Case 10",
                 "fewer steps than SciPy Radau at equal error", "wall time within 2x of SciPy's",
                 "evaluations per iteration"):  # fmt: skip
        assert line in text
    target_lines = [x for x in text.splitlines() if "(issue 22)" in x and x.startswith("| case")]
    assert len(target_lines) == 7 and all(x.endswith(("| yes |", "| no |")) for x in target_lines)
    assert text.startswith("# ") and "## Against the targets of issue 22\n" in text
    for r in rows:  # counts are ints in bench.json (LSODA's were NumPy integers, written as strings)
        assert all(isinstance(r[k], int) for k in ("steps", "nfe", "lu") if r.get(k) is not None)
    write_markdown(result, tmp_path / "again.md")  # the page can be rebuilt from bench.json alone
    assert (tmp_path / "again.md").read_text() == text


def test_diffrax_cross_check_needs_no_torch_and_reads_equal_error_steps(tmp_path):
    """``make bench-diffrax`` runs in an environment without torch: its module and the stiff problems it
    shares with case 9 must import with torch unavailable. Its summary interpolates each method's steps
    at Radau's error as case 9 does, and takes neuralode's rows from a case-9 bench.json."""
    blocked = "import sys; sys.modules['torch'] = None; import scripts.bench.diffrax_kvaerno"
    done = subprocess.run([sys.executable, "-c", blocked], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    from scripts.bench.diffrax_kvaerno import markdown, ours_from, summary

    bench = {
        "meta": {"commit": "abc", "date": "today"},
        "config": {"stiff_t_end": {"robertson": 1.0}, "stiff_sweep_rtols": [1e-5, 1e-6], "stiff_rtol": 1e-6},
        "case9_sweep": [
            {"problem": "robertson", "method": m, "rtol": r, "steps": s, "error": e}
            for m, r, s, e in [
                ("kvaerno5", 1e-5, 100, 1e-6),
                ("kvaerno5", 1e-6, 200, 1e-8),
                ("Radau", 1e-6, 9, 1),
            ]
        ],
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    ours, meta = ours_from(tmp_path / "bench.json")
    assert [r["steps"] for r in ours] == [100, 200] and meta["commit"] == "abc"
    assert meta["config"]["stiff_sweep_rtols"] == [1e-5, 1e-6]  # the cross-check repeats case 9's sweep
    radau = {"problem": "robertson", "method": "Radau (SciPy)", "rtol": 1e-6, "steps": 150, "error": 1e-7,
             "result": "ok"}  # fmt: skip
    vdp = {**radau, "problem": "van der pol mu=1000"}
    table = summary([radau, vdp, *ours], 1e-6)
    row = next(r for r in table if r["problem"] == "robertson")
    assert row["radau_steps"] == 150 and row["steps"] == pytest.approx(100 * 2**0.5)  # log-log midpoint
    assert next(r for r in table if r["problem"] != "robertson")["steps"] is None  # no kvaerno5 rows there
    page = markdown([radau, vdp, *ours], table, {"date": "d", "commit": "c", "machine": "m", "versions": {}},
                    meta, "bench.json", 1e-6)  # fmt: skip
    assert "| robertson | neuralode kvaerno5 | 1.0e-07 | 150 | 141 | 0.94x |" in page
