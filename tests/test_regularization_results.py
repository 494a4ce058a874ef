"""Issue 19's results page: plain and RNODE runs at the smoke profile (fake MNIST, a CNF on moons), then
scripts/make_regularization_results.py; its goal lines must follow from the numbers in its CSV."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_mnist import write_fake_mnist

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_regularization_results.py"
MNIST = [
    "profile=smoke",
    "++model.channels=8",
    "batch_size=32",
    "test_batch_size=32",
    "progress=false",
    "tensorboard=true",
    "profile.mnist.max_train_batches=1",
    "profile.mnist.max_test_batches=1",
]  # 2 epochs of 1 step
CNF = ["task=mle", "target=moons", "flow=cnf", "size=64", "profile=smoke", "progress=false",
       "tensorboard=false", "plot.gif_frames=0", "plot.grid=10", "plot.samples=64",
       "plot.snapshot_samples=16", "eval_samples=64"]  # fmt: skip
COLUMNS = [
    "experiment", "dataset", "run", "status", "run_dir", "regularization", "test_error_pct", "test_nll",
    "epochs", "iterations", "nfe_forward_first", "nfe_forward_last", "nfe_backward_first",
    "nfe_backward_last", "seconds_per_iteration", "train_wall_s", "train_cpu_s", "profile", "device",
    "seed", "date", "commit", "command",
]  # fmt: skip


def _script():
    spec = importlib.util.spec_from_file_location("make_regularization_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _python(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Both MNIST configs and both CNF ones (moons only: circles stays missing), each pair one multirun
    into folders named by the group (the plain one ``regularization=none``), then the script."""
    root = tmp_path_factory.mktemp("regularization")
    data = write_fake_mnist(root / "data")
    subdir = "hydra.sweep.subdir='regularization=${regularization.name}'"
    odenet = root / "runs/mnist/smoke/odenet"
    _python(root, "-m", "experiments.mnist", "-m", "model=odenet", f"data_dir={data}", *MNIST,
            "regularization=none,rnode_mnist", f"hydra.sweep.dir='{odenet}'", subdir)  # fmt: skip
    cnf = root / "runs/cnf/smoke/mle/moons/cnf-64-auto"
    _python(root, "-m", "experiments.cnf", "-m", *CNF, "regularization=none,rnode",
            f"hydra.sweep.dir='{cnf}'", subdir)  # fmt: skip
    out = root / "out"
    printed = _python(root, str(SCRIPT), "--profile", "smoke", "--runs", str(root / "runs"),
                      "--out", str(out), "--plain", "regularization=none")  # fmt: skip
    with (out / "regularization.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return out, printed, rows


def _by(rows):
    return {(r["experiment"], r["dataset"], r["run"]): r for r in rows}


def test_the_page_table_and_figure_are_written_with_every_run_measured_or_named_missing(made):
    out, _, rows = made
    assert list(rows[0]) == COLUMNS
    assert (out / "regularization.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by = _by(rows)
    for key in (("mnist", "mnist", "plain"), ("mnist", "mnist", "regularized"), ("cnf", "moons", "plain"),
                ("cnf", "moons", "regularized")):  # fmt: skip
        row = by[key]
        assert row["status"] == "ok", row
        for column in ("nfe_forward_first", "nfe_forward_last", "nfe_backward_last", "seconds_per_iteration",
                       "train_wall_s", "train_cpu_s"):  # fmt: skip
            assert float(row[column]) > 0, (key, column)
        assert row["profile"] == "smoke" and row["commit"] and row["device"]
    assert by["mnist", "mnist", "plain"]["regularization"] == "none"
    assert by["mnist", "mnist", "regularized"]["regularization"] == "rnode_mnist (kinetic 0.001)"
    assert (
        float(by["mnist", "mnist", "plain"]["test_error_pct"]) >= 0
        and by["cnf", "moons", "plain"]["test_nll"]
    )
    for run in ("plain", "regularized"):  # never run: no number, the command that makes it
        missing = by["cnf", "circles", run]
        assert missing["status"].startswith("missing: run `python -m experiments.cnf task=mle target=circles")
        assert all(missing[c] == "" for c in COLUMNS[6:18])
    page = (out / "regularization.md").read_text()
    assert "(smoke profile)" in page and "Figure 3(d)" in page and "seed: 0" in page
    assert page.count("| MNIST ODE-Net |") == 2 and "| CNF, circles | plain | - |" in page


def test_the_goal_lines_follow_from_the_csv_numbers(made):
    out, printed, rows = made
    by = _by(rows)
    plain, reg = by["mnist", "mnist", "plain"], by["mnist", "mnist", "regularized"]
    ratio = float(reg["nfe_forward_last"]) / float(plain["nfe_forward_last"])
    diff = float(reg["test_error_pct"]) - float(plain["test_error_pct"])
    page = (out / "regularization.md").read_text()
    expected = [
        f"forward NFE <= 0.6x plain): last-epoch forward NFE per iteration, regularised / plain = "
        f"{float(reg['nfe_forward_last']):.1f} / {float(plain['nfe_forward_last']):.1f} = {ratio:.2f}x: "
        + ("met" if ratio <= 0.6 else "not met"),
        f"= {diff:+.2f} pp: " + ("met" if diff <= 0.2 else "not met"),
        "Goal (CNF circles, >= 1.5x less training wall time at held-out NLL +- 0.02): the plain run is "
        "missing",
    ]
    cnf_plain, cnf_reg = by["cnf", "moons", "plain"], by["cnf", "moons", "regularized"]
    speedup = float(cnf_plain["train_wall_s"]) / float(cnf_reg["train_wall_s"])
    nll = float(cnf_reg["test_nll"]) - float(cnf_plain["test_nll"])
    met = speedup >= 1.5 and abs(nll) <= 0.02
    expected.append(f"= {speedup:.2f}x; held-out NLL regularised - plain = ")
    expected.append(f"= {nll:+.3f} nats: " + ("met" if met else "not met"))
    for text in expected:
        assert text in printed and text in page, text
    # the script's goals from the rows read back from its own CSV are the lines it printed
    lines = [goal.line() for goal in _script().goals(rows)]
    assert len(lines) == 4 and all(line in printed for line in lines)


def _rows(plain_nfe, reg_nfe, plain_error, reg_error):
    def row(experiment, dataset, run, **values):
        base = {c: "" for c in COLUMNS}
        return {**base, "experiment": experiment, "dataset": dataset, "run": run, "status": "ok", **values}

    return [
        row("mnist", "mnist", "plain", nfe_forward_last=plain_nfe, test_error_pct=plain_error),
        row("mnist", "mnist", "regularized", nfe_forward_last=reg_nfe, test_error_pct=reg_error),
        *[
            row("cnf", d, r, status="missing: run `x`")
            for d in ("circles", "moons")
            for r in ("plain", "regularized")
        ],
    ]


@pytest.mark.parametrize(
    "reg_nfe, reg_error, nfe_met, error_met",
    [(12.0, 1.2, True, True), (13.0, 1.2, False, True), (10.0, 1.25, True, False), (26.0, 0.5, False, True)],
)
def test_goal_verdicts_at_and_around_the_thresholds(reg_nfe, reg_error, nfe_met, error_met):
    """Plain: 20 forward NFE, 1.00% error. <= 0.6x the NFE and <= +0.2 pp are met; a missing pair is not
    computable."""
    nfe, error, circles, moons = _script().goals(_rows(20.0, reg_nfe, 1.0, reg_error))
    assert (nfe.met, error.met) == (nfe_met, error_met)
    assert circles.met is None and moons.met is None and "missing" in circles.measured
