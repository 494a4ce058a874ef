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
    "nfe_backward_last", "nfe_per_iteration", "seconds_per_iteration", "train_wall_s", "train_cpu_s",
    "profile", "device", "seed", "date", "commit", "command", "setting",
]  # fmt: skip
SWEPT = "regularization.kinetic=0,regularization=rnode"  # a weight sweep's folder: found beside the pair


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
    into folders named by the group (the plain one ``regularization=none``), one more regularised CNF
    setting in the folder Hydra names for its overrides, then the script."""
    root = tmp_path_factory.mktemp("regularization")
    data = write_fake_mnist(root / "data")
    subdir = "hydra.sweep.subdir='regularization=${regularization.name}'"
    odenet = root / "runs/mnist/smoke/odenet"
    _python(root, "-m", "experiments.mnist", "-m", "model=odenet", f"data_dir={data}", *MNIST,
            "regularization=none,rnode_mnist", f"hydra.sweep.dir='{odenet}'", subdir)  # fmt: skip
    cnf = root / "runs/cnf/smoke/mle/moons/cnf-64-auto"
    _python(root, "-m", "experiments.cnf", "-m", *CNF, "regularization=none,rnode",
            f"hydra.sweep.dir='{cnf}'", subdir)  # fmt: skip
    _python(root, "-m", "experiments.cnf", *CNF, *SWEPT.split(","), f"hydra.run.dir='{cnf / SWEPT}'")
    (cnf / "iterations=5,regularization=rnode").mkdir()  # another budget: not a setting of the sweep
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
    assert page.count("| CNF, moons |") == 2  # the sweep's run is in the trade-off table, not here


def test_a_setting_found_beside_the_pair_is_a_row_and_a_trade_off_line_from_its_numbers(made):
    out, _, rows = made
    swept = [r for r in rows if r["run"] == "sweep"]
    found = [(r["dataset"], r["setting"], r["status"], r["seed"]) for r in swept]
    assert found == [("moons", SWEPT, "ok", "0")]
    assert swept[0]["regularization"] == "rnode (jacobian 0.01)"
    assert swept[0]["command"].endswith("profile=smoke regularization.kinetic=0 regularization=rnode")
    plain = _by(rows)["cnf", "moons", "plain"]
    wall = float(plain["train_wall_s"]) / float(swept[0]["train_wall_s"])
    nfe = float(plain["nfe_per_iteration"]) / float(swept[0]["nfe_per_iteration"])
    diff = float(swept[0]["test_nll"]) - float(plain["test_nll"])
    page = (out / "regularization.md").read_text()
    line = next(x for x in page.splitlines() if x.startswith("| moons | rnode (jacobian 0.01) |"))
    assert f"| {wall:.2f}x |" in line and f"| {nfe:.2f}x |" in line and f"| {diff:+.3f} |" in line
    assert page.count("| moons | ") == 2 and "## Trade-off" in page  # the pair's setting, then the sweep's


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


def test_only_folders_named_by_regularisation_and_seed_overrides_are_settings():
    parse = _script()._setting_and_seed
    assert parse("regularization=rnode") == ("regularization=rnode", 0)
    assert parse("regularization.jacobian=0.02,regularization=rnode,seed=2") == (
        "regularization.jacobian=0.02,regularization=rnode",
        2,
    )
    for name in ("default", "seed=1", "iterations=2400,regularization=rnode", "regularization.kinetic=0",
                 "regularization=rnode,seed=x", "lr=0.1,regularization=rnode"):  # fmt: skip
        assert parse(name) is None, name


def _trade_rows():
    """Plain circles seeds 0, 1, 2 (seed 2 unfinished); setting A at seeds 0, 1, 2; setting B at seeds 0
    and 1 (1 unfinished); setting C at seed 0 without a recorded wall time; D at seed 1 only, unfinished."""

    def row(run, seed, wall, nfe, nll, setting="", status="ok"):
        return {**{c: "" for c in COLUMNS}, "experiment": "cnf", "dataset": "circles", "run": run,
                "status": status, "seed": seed, "train_wall_s": wall, "nfe_per_iteration": nfe,
                "test_nll": nll, "setting": setting, "regularization": setting,
                "run_dir": f"runs/{setting}"}  # fmt: skip

    return [
        row("plain", 0, 150.0, 200.0, 3.30, "default"),
        row("regularized", 0, 100.0, 100.0, 3.31, "A"),
        row("plain", 1, 210.0, 220.0, 3.40, "default"),
        row("regularized", 1, 100.0, 110.0, 3.41, "A"),
        row("plain", 2, "", "", "", "default", status="unfinished: 4/10 epochs"),
        row("regularized", 2, 90.0, 90.0, 3.35, "A"),
        row("sweep", 0, 50.0, 40.0, 3.50, "B"),
        row("sweep", 1, 60.0, 60.0, 3.60, "B", status="unfinished: 3/10 epochs"),
        row("sweep", 0, "", 40.0, 3.50, "C"),
        row("sweep", 1, "", "", "", "D", status="unfinished: 1/10 epochs"),
    ]


def test_trade_offs_are_means_over_the_seeds_both_runs_finished():
    """A: seeds 0, 1 (seed 2's plain run is unfinished): wall 180 / 100 = 1.80x, NFE 210 / 105 = 2.00x,
    so each evaluation costs 2.00 / 1.80 = 1.11x; NLL +0.010: the goal is met. B: seed 0 only:
    150 / 50 = 3.00x at +0.200: not. C: no wall time recorded, D: unfinished: named, not measured."""
    a, b, c, d = _script().trade_offs(_trade_rows())
    assert (a.setting, a.seeds) == ("A", (0, 1)) and a.left_out == ("seed 2: the plain run is unfinished",)
    assert a.wall_ratio == pytest.approx(1.8) and a.nfe_ratio == pytest.approx(2.0)
    assert a.cost_ratio == pytest.approx(2.0 / 1.8) and a.nll_diff == pytest.approx(0.01) and a.meets_goal
    assert (b.setting, b.seeds, b.left_out) == ("B", (0,), ("seed 1: the sweep run is unfinished",))
    assert b.wall_ratio == pytest.approx(3.0) and b.nll_diff == pytest.approx(0.2) and not b.meets_goal
    assert c.seeds == () and c.wall_ratio is None and "did not record train_wall_s" in c.left_out[0]
    assert d.seeds == () and d.cost_ratio is None and not d.meets_goal
    lines = "\n".join(_script().trade_off_lines([a, b, c, d], "quick"))
    assert "| circles | A | 0, 1 (seed 2: the plain run is unfinished: left out) | 100.0 | " in lines
    assert "| 1.80x | 105.0 | 2.00x | 1.11x | 3.360 | +0.010 | yes |" in lines
    assert "| circles | B | 0 (seed 1: the sweep run is unfinished: left out) | 50.0 |" in lines
    assert "| circles | D | none (seed 1: the sweep run is unfinished: left out) | - | - |" in lines
    assert "circles, within +- 0.02 nats of the plain runs: the largest wall-time ratio is 1.80x (A)" in lines


def test_settings_that_share_a_description_are_told_apart_by_their_overrides():
    rows = [r for r in _trade_rows() if r["setting"] in ("default", "A", "B")]
    rows = [{**r, "regularization": "rnode (jacobian 0.01)"} if r["run"] != "plain" else r for r in rows]
    lines = "\n".join(_script().trade_off_lines(_script().trade_offs(rows), "quick"))
    assert "| circles | rnode (jacobian 0.01) (`A`) |" in lines and "| rnode (jacobian 0.01) (`B`) |" in lines


@pytest.mark.parametrize("profile, sweeps", [("quick", True), ("smoke", False)])
def test_make_regularization_sweeps_the_weights_beside_the_pair_except_at_smoke(profile, sweeps):
    """The trade-off runs (kinetic alone; jacobian alone at three weights) at every seed, in folders the
    page finds; none at smoke, which the tests run."""
    env = {k: v for k, v in os.environ.items() if k not in ("CNF_SEEDS", "CNF_SWEEP", "CNF_SWEEP_JACOBIANS")}
    done = subprocess.run(["make", "-n", "regularization", f"PROFILE={profile}"], cwd=REPO, env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    cnf = [line for line in done.stdout.splitlines() if "experiments.cnf" in line]
    jacobian_only = [x for x in cnf if "regularization.kinetic=0 regularization.jacobian=0.01,0.02,0.03" in x]
    kinetic_only = [x for x in cnf if "regularization.jacobian=0" in x.split()]
    if not sweeps:
        assert not jacobian_only and not kinetic_only and len(cnf) == 2
        return
    for runs in (jacobian_only, kinetic_only):  # seed 0 (the folder without a seed), then seeds 1 and 2
        assert len(runs) == 2 and "seed=" not in runs[0] and runs[1].endswith(" seed=1,2")
