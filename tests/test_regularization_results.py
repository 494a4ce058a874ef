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


def test_seed_folders_are_the_ones_hydra_names():
    """Seed 0 is the group's own folder; seed k adds ``seed=k``, sorted among the overrides as Hydra's
    override_dirname sorts them (whole strings)."""
    seeded = _script()._seeded
    assert seeded("default", 0) == "default" and seeded("regularization=rnode", 0) == "regularization=rnode"
    assert seeded("default", 2) == "seed=2"
    assert seeded("regularization=rnode", 1) == "regularization=rnode,seed=1"
    assert (
        seeded("regularization.jacobian=0.02,regularization=rnode", 3)
        == "regularization.jacobian=0.02,regularization=rnode,seed=3"
    )
    names = ("default", "regularization=rnode_mnist", "regularization=rnode")
    specs = _script().specs(Path("runs"), "quick", *names, seeds=(0, 1))
    cnf = [(s.dataset, s.run, s.seed, s.path.name) for s in specs if s.experiment == "cnf"]
    assert cnf[:4] == [
        ("circles", "plain", 0, "default"),
        ("circles", "regularized", 0, "regularization=rnode"),
        ("circles", "plain", 1, "seed=1"),
        ("circles", "regularized", 1, "regularization=rnode,seed=1"),
    ]
    assert all(s.command.endswith(" seed=1") for s in specs if s.seed == 1)


def _cnf_rows(pairs):
    """MNIST rows that are missing, then circles rows from (seed, plain wall, plain NLL, reg wall, reg NLL)
    and moons rows that are missing."""

    def row(experiment, dataset, run, **values):
        return {**{c: "" for c in COLUMNS}, "experiment": experiment, "dataset": dataset, "run": run,
                "status": "ok", **values}  # fmt: skip

    rows = [row("mnist", "mnist", r, status="missing: run `x`") for r in ("plain", "regularized")]
    for seed, wall_p, nll_p, wall_r, nll_r in pairs:
        rows.append(row("cnf", "circles", "plain", seed=seed, train_wall_s=wall_p, test_nll=nll_p))
        rows.append(row("cnf", "circles", "regularized", seed=seed, train_wall_s=wall_r, test_nll=nll_r))
    rows += [row("cnf", "moons", r, status="missing: run `x`") for r in ("plain", "regularized")]
    return rows


def test_the_cnf_goal_over_seeds_is_on_the_means_and_names_each_seed():
    """Two seeds: wall 150/100 and 210/100 s (1.5x, 2.1x), NLL differences +0.03 and -0.02: the means are
    180 / 100 = 1.80x at +0.005 nats, met though one seed alone misses the NLL band; a missing seed makes
    the goal not computable."""
    _, _, circles, _ = _script().goals(
        _cnf_rows([(0, 150.0, 3.30, 100.0, 3.33), (1, 210.0, 3.40, 100.0, 3.38)])
    )
    assert circles.met is True
    assert "means over seeds 0, 1 (per seed: 1.50x at +0.030, 2.10x at -0.020 nats)" in circles.measured
    assert "= 180 s / 100 s = 1.80x" in circles.measured and "= +0.005 nats" in circles.measured
    _, _, slow, _ = _script().goals(_cnf_rows([(0, 140.0, 3.30, 100.0, 3.30), (1, 150.0, 3.40, 100.0, 3.40)]))
    assert slow.met is False and "1.45x" in slow.measured
    rows = _cnf_rows([(0, 150.0, 3.30, 100.0, 3.33), (1, 210.0, 3.40, 100.0, 3.38)])
    rows[4] = {**rows[4], "status": "missing: run `y`", "run_dir": "runs/x"}
    _, _, gone, _ = _script().goals(rows)
    assert gone.met is None and "missing" in gone.measured
