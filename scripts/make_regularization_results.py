"""Write the regularised-neural-ODE results (issue 19): plain vs RNODE runs, NFE over training, the goals.

Reads finished runs (``result.json`` and ``epochs.csv``, TensorBoard for the per-iteration curves):
the MNIST ODE-Net ``runs/mnist/<profile>/odenet/<plain>`` and ``.../<regularized>`` and the CNF maximum
likelihood runs ``runs/cnf/<profile>/mle/<dataset>/cnf-64-auto/<plain>`` and ``.../<cnf-regularized>``,
and every other regularised CNF setting found beside them (a folder named by ``regularization*`` and
``seed`` overrides only, e.g. a Hydra sweep of the weights: the trade-off table, means over seeds),
and writes ``regularization.md``, ``regularization.csv`` and ``regularization.png`` to ``<out>``
(``results/`` for quick, ``results/<profile>/`` otherwise). A run that is missing is a row saying so and
the command that makes it; no number is written that a run did not measure. Prints the issue's goals
with the measured values and whether each is met.

    .venv/bin/python scripts/make_regularization_results.py --profile quick [--out results]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralode.analysis import read_training_series, running_mean  # noqa: E402
from neuralode.training import atomic_write_bytes, atomic_write_text, write_csv  # noqa: E402
from neuralode.training.reproducibility import git_commit  # noqa: E402

STEM = "regularization"
DATASETS = ("circles", "moons")
CNF_SETTING = "cnf-64-auto"  # configs/experiment/cnf_mle.yaml's CNF (size 64, the CNF's own trace)
MNIST_REGULARIZED = "regularization=rnode_mnist"
CNF_REGULARIZED = "regularization=rnode"
# The goals at the quick profile on CPU
NFE_RATIO_GOAL = 0.6  # regularised / plain forward NFE at the end of training, at most
ERROR_GOAL_PP = 0.2  # regularised - plain test error, at most (percentage points)
SPEEDUP_GOAL = 1.5  # plain / regularised CNF training wall time, at least
NLL_GOAL = 0.02  # |regularised - plain| held-out NLL, at most (nats)
COLUMNS = (
    "experiment", "dataset", "run", "status", "run_dir", "regularization", "test_error_pct", "test_nll",
    "epochs", "iterations", "nfe_forward_first", "nfe_forward_last", "nfe_backward_first",
    "nfe_backward_last", "nfe_per_iteration", "seconds_per_iteration", "train_wall_s", "train_cpu_s",
    "profile", "device", "seed", "date", "commit", "command", "setting",
)  # fmt: skip
SWEEP_RUN = "sweep"  # the run label of a CNF setting found beside the pair (see sweep_specs)
SEEDS_NOTE = (
    "The CNF pairs are trained once per seed (the seed draws the initial weights, the data and the "
    "evaluation sample). One seed is not enough for the goal's +- 0.02 nats: the plain circles run of "
    "seed 0 ended at 3.341 nats at commit 91e22feff6ef and at 3.368 at 35d9ea3b7931 (same config; "
    "55e99a3 between them reorders the field's arithmetic, not its value), and the plain runs of three "
    "seeds spread over some 0.03 nats; so the CNF goals are judged on the seeds' means, and each seed's "
    "ratio and NLL difference is named."
)
PAPER_NOTE = (
    "**Beside the paper.** Chen et al. (2018), Figure 3(d), plots the forward NFE of their MNIST ODE-Net "
    "against the training epoch and shows it growing as training goes on (a figure only, no table of "
    "numbers, so there is no paper column here); the plain run's curve in `regularization.png` is our "
    "counterpart of that panel (also drawn in `figure3.png`, panel (d)). Regularisation is not in the "
    "paper: RNODE is Finlay et al. (2020), 'How to train your neural ODE', which reports about 2.8x faster "
    "FFJORD training on MNIST and CIFAR-10 at equal bits/dim."
)


@dataclass(frozen=True)
class RunSpec:
    """One run this page reads: where it lives and the command that makes it."""

    experiment: str  # "mnist" or "cnf"
    dataset: str
    run: str  # "plain", "regularized" or SWEEP_RUN (a setting found beside the pair)
    path: Path
    command: str
    seed: int = 0
    setting: str = ""  # the folder name without its seed override: what the trade-off table groups by


def specs(
    runs: Path, profile: str, plain: str, regularized: str, cnf_regularized: str, seeds: Sequence[int] = (0,)
) -> list[RunSpec]:
    """The MNIST pair, then a CNF pair per dataset and seed (seed 0 is the folder named by the group
    alone, seed k the one a ``seed=k`` override adds to the name)."""
    mnist = runs / "mnist" / profile / "odenet"
    base = f"python -m experiments.mnist model=odenet profile={profile}"
    out = [
        RunSpec("mnist", "mnist", "plain", mnist / plain, base + _override(plain)),
        RunSpec("mnist", "mnist", "regularized", mnist / regularized, base + _override(regularized)),
    ]
    for dataset in DATASETS:
        folder = _cnf_folder(runs, profile, dataset)
        cmd = _cnf_command(dataset, profile)
        for seed in seeds:
            for run, setting in (("plain", plain), ("regularized", cnf_regularized)):
                name = _seeded(setting, seed)
                out.append(RunSpec("cnf", dataset, run, folder / name, cmd + _override(name), seed, setting))
    return out


def _cnf_folder(runs: Path, profile: str, dataset: str) -> Path:
    return runs / "cnf" / profile / "mle" / dataset / CNF_SETTING


def _cnf_command(dataset: str, profile: str) -> str:
    return f"python -m experiments.cnf task=mle target={dataset} flow=cnf size=64 profile={profile}"


def sweep_specs(runs: Path, profile: str, known: Sequence[str], seeds: Sequence[int]) -> list[RunSpec]:
    """The other regularised CNF settings beside the pair, per dataset: every folder whose name is
    ``regularization*`` and ``seed`` overrides only, sets the ``regularization`` group and is not one of
    ``known`` (the pair's settings), at ``seeds``; one spec per (setting, seed), sorted by setting."""
    out = []
    for dataset in DATASETS:
        folder = _cnf_folder(runs, profile, dataset)
        found: dict[str, set[int]] = {}
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            parsed = _setting_and_seed(path.name)
            if path.is_dir() and parsed and parsed[0] not in known and parsed[1] in seeds:
                found.setdefault(parsed[0], set()).add(parsed[1])
        for setting in sorted(found):
            for seed in sorted(found[setting]):
                name = _seeded(setting, seed)
                command = _cnf_command(dataset, profile) + _override(name)
                out.append(RunSpec("cnf", dataset, SWEEP_RUN, folder / name, command, seed, setting))
    return out


def _setting_and_seed(name: str) -> tuple[str, int] | None:
    """(the name without its ``seed=k`` override, k) for a folder named by regularisation overrides and
    a seed only, with the ``regularization`` group among them; None for any other folder."""
    overrides = name.split(",")
    keys = [item.partition("=")[0] for item in overrides]
    seeds = [item.partition("=")[2] for item in overrides if item.startswith("seed=")]
    allowed = all(
        key == "seed" or key == "regularization" or key.startswith("regularization.") for key in keys
    )
    if not allowed or "regularization" not in keys or len(seeds) > 1 or not all(s.isdigit() for s in seeds):
        return None
    return ",".join(item for item in overrides if not item.startswith("seed=")), int(seeds[0]) if seeds else 0


def _override(name: str) -> str:
    """The command-line overrides a run folder's name stands for (``default``: none)."""
    return "" if name == "default" else " " + name.replace(",", " ")


def _seeded(name: str, seed: int) -> str:
    """The folder Hydra names for the overrides ``name`` plus ``seed=<seed>`` (none for seed 0, the
    default; Hydra sorts the override strings)."""
    if seed == 0:
        return name
    overrides = [] if name == "default" else name.split(",")
    return ",".join(sorted([*overrides, f"seed={seed}"]))


def run_row(spec: RunSpec) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the run's row, its result.json): measured values, or a row saying the run is missing."""
    row: dict[str, Any] = {key: None for key in COLUMNS}
    row.update(experiment=spec.experiment, dataset=spec.dataset, run=spec.run, run_dir=str(spec.path),
               command=spec.command, seed=spec.seed, setting=spec.setting)  # fmt: skip
    path = spec.path / "result.json"
    if not path.exists():
        row["status"] = f"missing: run `{spec.command}`"
        return row, None
    result = json.loads(path.read_text())
    history, final = result["history"], result["final"]
    first, last = history[0], history[-1]
    regularization = (result.get("config") or {}).get("regularization") or {}
    done = len(history) == result["epochs"]
    row.update(
        status="ok" if done else f"unfinished: {len(history)}/{result['epochs']} epochs",
        regularization=_describe(regularization),
        test_error_pct=100 * final["test_error"] if "test_error" in final else None,
        test_nll=final.get("test_nll"),
        epochs=len(history),
        iterations=len(history) * result["batches_per_epoch"],
        nfe_forward_first=first["train_nfe_forward"], nfe_forward_last=last["train_nfe_forward"],
        nfe_backward_first=first["train_nfe_backward"], nfe_backward_last=last["train_nfe_backward"],
        nfe_per_iteration=fmean(r["train_nfe_forward"] + r["train_nfe_backward"] for r in history),
        seconds_per_iteration=result["mean_seconds_per_iteration"],
        train_wall_s=_total(history, "wall_s"), train_cpu_s=_total(history, "cpu_s"),
        **{key: result.get(key) for key in ("profile", "device", "seed", "date", "commit")},
    )  # fmt: skip
    return row, result


def _total(history: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The sum over epochs; None when some epoch did not record it (trained before the column existed)."""
    return sum(row[key] for row in history) if all(key in row for row in history) else None


def _describe(group: Mapping[str, Any]) -> str:
    """``none`` or the weights that are on, e.g. ``rnode_mnist (kinetic 0.0001, jacobian 2e-05)``."""
    weights = [f"{k} {group[k]:g}" for k in ("kinetic", "jacobian", "time_derivative") if group.get(k)]
    return f"{group.get('name', '?')} ({', '.join(weights)})" if weights else "none"


@dataclass(frozen=True)
class Goal:
    """One of the issue's goals: what was measured, and whether it is met (None: not computable)."""

    name: str
    measured: str
    met: bool | None

    def line(self) -> str:
        verdict = {True: "met", False: "not met", None: "not computable"}[self.met]
        return f"Goal ({self.name}): {self.measured}: {verdict}"


def _number(value: Any) -> float | None:
    """A row's value as a float (rows read back from the CSV hold strings; empty = not measured)."""
    return None if value in (None, "") else float(value)


def goals(rows: Sequence[Mapping[str, Any]]) -> list[Goal]:
    """The issue's goals from the rows (as written or read back from the CSV)."""
    by = {(r["experiment"], r["dataset"], r["run"]): r for r in rows}
    out = []
    plain, reg = by[("mnist", "mnist", "plain")], by[("mnist", "mnist", "regularized")]
    missing = _missing(plain, reg, "nfe_forward_last", "test_error_pct")
    if missing:
        out.append(Goal(f"MNIST ODE-Net, forward NFE <= {NFE_RATIO_GOAL}x plain", missing, None))
        out.append(Goal(f"MNIST ODE-Net, test error at most {ERROR_GOAL_PP} pp worse", missing, None))
    else:
        fwd_p, fwd_r = _number(plain["nfe_forward_last"]), _number(reg["nfe_forward_last"])
        ratio = fwd_r / fwd_p
        out.append(Goal(
            f"MNIST ODE-Net, forward NFE <= {NFE_RATIO_GOAL}x plain",
            f"last-epoch forward NFE per iteration, regularised / plain = {fwd_r:.1f} / {fwd_p:.1f} = "
            f"{ratio:.2f}x",
            ratio <= NFE_RATIO_GOAL,
        ))  # fmt: skip
        err_p, err_r = _number(plain["test_error_pct"]), _number(reg["test_error_pct"])
        diff = err_r - err_p
        out.append(Goal(
            f"MNIST ODE-Net, test error at most {ERROR_GOAL_PP} pp worse",
            f"test error regularised - plain = {err_r:.2f}% - {err_p:.2f}% = {diff:+.2f} pp",
            diff <= ERROR_GOAL_PP + 1e-9,
        ))  # fmt: skip
    for dataset in DATASETS:
        name = f"CNF {dataset}, >= {SPEEDUP_GOAL}x less training wall time at held-out NLL +- {NLL_GOAL}"
        pairs = _seed_pairs(rows, dataset)
        missing = next((m for pair in pairs if (m := _missing(*pair, "train_wall_s", "test_nll"))), "")
        if missing:
            out.append(Goal(name, missing, None))
            continue
        wall_p, wall_r = _means(pairs, "train_wall_s")
        nll_p, nll_r = _means(pairs, "test_nll")
        speedup, diff = wall_p / wall_r, nll_r - nll_p
        over = ""
        if len(pairs) > 1:
            seeds = ", ".join(str(pair[0]["seed"]) for pair in pairs)
            each = ", ".join(
                f"{_number(p['train_wall_s']) / _number(r['train_wall_s']):.2f}x at "
                f"{_number(r['test_nll']) - _number(p['test_nll']):+.3f}"
                for p, r in pairs
            )
            over = f"means over seeds {seeds} (per seed: {each} nats): "
        out.append(Goal(
            name,
            f"{over}training wall time plain / regularised = {wall_p:.4g} s / {wall_r:.4g} s = "
            f"{speedup:.2f}x; "
            f"held-out NLL regularised - plain = {nll_r:.3f} - {nll_p:.3f} = {diff:+.3f} nats",
            _cnf_goal_met(speedup, diff),
        ))  # fmt: skip
    return out


def _seed_pairs(rows: Sequence[Mapping[str, Any]], dataset: str) -> list[tuple[Mapping[str, Any], ...]]:
    """The (plain, regularised) CNF rows of ``dataset``, one pair per seed, in the order of the rows."""
    plain = [r for r in rows if (r["experiment"], r["dataset"], r["run"]) == ("cnf", dataset, "plain")]
    reg = [r for r in rows if (r["experiment"], r["dataset"], r["run"]) == ("cnf", dataset, "regularized")]
    return list(zip(plain, reg, strict=True))


def _missing(plain: Mapping[str, Any], reg: Mapping[str, Any], *keys: str) -> str:
    """Why a goal cannot be computed from this pair ('' when it can)."""
    for row in (plain, reg):
        if row["status"] != "ok":
            return f"the {row['run']} run is {row['status'].split(':')[0]} ({row['run_dir']})"
        for key in keys:
            if _number(row[key]) is None:
                return f"the {row['run']} run did not record {key} ({row['run_dir']}; retrain it)"
    return ""


@dataclass(frozen=True)
class TradeOff:
    """One regularised CNF setting against the plain runs of the same seeds (means over those seeds).

    wall ratio = plain / this training wall time (the goal's speed-up) = NFE ratio / cost ratio, where
    NFE ratio = plain / this NFE per iteration (forward + backward, mean over training) and cost ratio =
    this / plain wall time per evaluation: the speed-up the saved evaluations would give at no extra
    cost per evaluation, and what each evaluation costs more. The numbers are None when no seed has
    both runs finished."""

    dataset: str
    setting: str
    regularization: str
    seeds: tuple[int, ...]
    left_out: tuple[str, ...]  # why a seed of this setting is not in the means
    wall_s: float | None = None
    wall_ratio: float | None = None
    nfe: float | None = None
    nfe_ratio: float | None = None
    nll: float | None = None
    nll_diff: float | None = None

    @property
    def cost_ratio(self) -> float | None:
        return None if self.wall_ratio is None else self.nfe_ratio / self.wall_ratio

    @property
    def meets_goal(self) -> bool:
        return self.wall_ratio is not None and _cnf_goal_met(self.wall_ratio, self.nll_diff)


def _cnf_goal_met(speedup: float, nll_diff: float) -> bool:
    """The CNF goal: at least SPEEDUP_GOAL times less training wall time at NLL within +- NLL_GOAL."""
    return speedup >= SPEEDUP_GOAL and _in_nll_window(nll_diff)


def _in_nll_window(nll_diff: float) -> bool:
    return abs(nll_diff) <= NLL_GOAL + 1e-9


def _means(pairs: Sequence[tuple[Mapping[str, Any], ...]], key: str) -> tuple[float, float]:
    """(plain, regularised) means of ``key`` over the (plain, regularised) row pairs."""
    return fmean(_number(pair[0][key]) for pair in pairs), fmean(_number(pair[1][key]) for pair in pairs)


def trade_offs(rows: Sequence[Mapping[str, Any]]) -> list[TradeOff]:
    """Per dataset, the regularised pair's setting, then every sweep setting, against the plain runs:
    means over the seeds where the plain and this setting's runs both finished and recorded the numbers
    (any other seed is named in ``left_out``)."""
    out = []
    keys = ("train_wall_s", "nfe_per_iteration", "test_nll")
    for dataset in DATASETS:
        cnf = [r for r in rows if r["experiment"] == "cnf" and r["dataset"] == dataset]
        plain = {str(r["seed"]): r for r in cnf if r["run"] == "plain"}
        settings: dict[str, list[Mapping[str, Any]]] = {}
        for r in cnf:
            if r["run"] != "plain":
                settings.setdefault(r["setting"], []).append(r)
        for setting, runs in settings.items():
            pairs, left_out = [], []
            for r in runs:
                partner = plain.get(str(r["seed"]))
                why = "no plain run" if partner is None else _missing(partner, r, *keys).split(" (")[0]
                if why:
                    left_out.append(f"seed {r['seed']}: {why}")  # the reason without the run's folder
                else:
                    pairs.append((partner, r))
            described = next((str(r["regularization"]) for r in runs if r["regularization"]), setting)
            found = TradeOff(dataset, setting, described,
                             tuple(int(_number(r["seed"])) for _, r in pairs), tuple(left_out))  # fmt: skip
            if pairs:
                (wall_p, wall), (nfe_p, nfe), (nll_p, nll) = (_means(pairs, key) for key in keys)
                found = dataclasses.replace(
                    found, wall_s=wall, wall_ratio=wall_p / wall, nfe=nfe, nfe_ratio=nfe_p / nfe, nll=nll,
                    nll_diff=nll - nll_p,
                )  # fmt: skip
            out.append(found)
    return out


def _labels(found: Sequence[TradeOff]) -> dict[TradeOff, str]:
    """Each setting's description, with its overrides where two settings of a dataset share one."""
    counts = Counter((t.dataset, t.regularization) for t in found)
    return {
        t: t.regularization
        if counts[t.dataset, t.regularization] == 1
        else f"{t.regularization} (`{t.setting}`)"
        for t in found
    }


def trade_off_lines(found: Sequence[TradeOff], profile: str) -> list[str]:
    """The trade-off section: the settings' table and, per dataset, the best ratios in the NLL window."""
    if not found:
        return []
    label = _labels(found)
    lines = [
        "## Trade-off: regularisation weights, training time and held-out NLL (CNF)",
        "",
        "Every regularised CNF setting found beside the pair (the pair's own first), against the plain runs "
        "of the same seeds: times, NFE and NLL are means over those seeds, the ratios are of those means. "
        "The wall-time ratio (the goal's speed-up) is the NFE ratio divided by the cost ratio: the NFE "
        "ratio is the speed-up that the saved evaluations alone would give, the cost ratio what one "
        "evaluation of the regularised solve costs against a plain one (the penalties' extra states and "
        "their arithmetic; the wall time per evaluation includes the solver's own work).",
        "",
        "| dataset | regularisation | seeds | training wall time, s | plain / this | NFE per iteration "
        "(forward + backward, mean over training) | plain / this | cost per evaluation, this / plain | "
        "held-out NLL | this - plain | meets the goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in found:
        seeds = ", ".join(map(str, t.seeds)) or "none"
        seeds += f" ({'; '.join(t.left_out)}: left out)" if t.left_out else ""
        if t.wall_ratio is None:
            lines.append(f"| {t.dataset} | {label[t]} | {seeds} | - | - | - | - | - | - | - | - |")
            continue
        lines.append(
            f"| {t.dataset} | {label[t]} | {seeds} | {t.wall_s:.1f} | {t.wall_ratio:.2f}x | "
            f"{t.nfe:.1f} | {t.nfe_ratio:.2f}x | {t.cost_ratio:.2f}x | {t.nll:.3f} | {t.nll_diff:+.3f} | "
            f"{'yes' if t.meets_goal else 'no'} |"
        )
    lines.append("")
    for dataset in DATASETS:
        measured = [t for t in found if t.dataset == dataset and t.wall_ratio is not None]
        window = [t for t in measured if _in_nll_window(t.nll_diff)]
        if not measured:
            continue
        if not window:
            lines.append(f"- {dataset}: no setting ends within +- {NLL_GOAL} nats of the plain runs.")
            continue
        fastest = max(window, key=lambda t: t.wall_ratio)
        fewest = max(window, key=lambda t: t.nfe_ratio)
        lines.append(
            f"- {dataset}, within +- {NLL_GOAL} nats of the plain runs: the largest wall-time ratio is "
            f"{fastest.wall_ratio:.2f}x ({label[fastest]}), the largest NFE ratio "
            f"{fewest.nfe_ratio:.2f}x ({label[fewest]}); the goal asks for {SPEEDUP_GOAL}x."
        )
    lines += [
        "",
        f"Each run of these settings, with its command, is a row of `{STEM}.csv` (run `{SWEEP_RUN}`; "
        f"`setting` names the overrides, the `{profile}` profile throughout).",
        "",
    ]
    return lines


def provenance(results: Sequence[Mapping[str, Any]], profile: str) -> list[str]:
    """The header lines every results file carries (profile, device, epochs, seed, dates, commits)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    written = f"this file written {now} at commit {git_commit(ROOT)}"
    if not results:
        return [f"- Profile: `{profile}`; no finished run found; {written}"]

    def values(key: str) -> str:
        return ", ".join(sorted({str(r.get(key)) for r in results}))

    epochs = ", ".join(sorted({f"{r['experiment']} {r['epochs']}" for r in results}))
    dates = sorted(str(r.get("date")) for r in results)
    return [
        f"- Profile: `{profile}`; epochs: {epochs}; seed: {values('seed')}",
        f"- Device: {values('device')}",
        f"- Runs trained {dates[0]} to {dates[-1]} at commit {values('commit')}; {written}",
    ]


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pair(row: Mapping[str, Any], key: str) -> str:
    first, last = row[f"{key}_first"], row[f"{key}_last"]
    return "-" if first is None else f"{first:.1f} -> {last:.1f}"


def markdown(
    rows: Sequence[dict[str, Any]],
    found: Sequence[Goal],
    header: Sequence[str],
    profile: str,
    command: str | None = None,
    note: str | None = None,
    trade: Sequence[TradeOff] = (),
) -> str:
    made_by = command or f"make regularization PROFILE={profile}"
    seeded = _several_seeds(rows)
    rows = [row for row in rows if row["run"] != SWEEP_RUN]  # the sweep's runs: the trade-off table
    lines = [
        f"# Regularised neural ODEs (RNODE): NFE over training, plain vs regularised ({profile} profile)",
        "",
        f"Made by `{made_by}` (scripts/make_regularization_results.py, the last step of `make "
        f"regularization`, which trains the runs first) from runs/mnist/{profile}/odenet/ and "
        f"runs/cnf/{profile}/mle/.",
        *header,
        *([f"- Note: {note}"] if note else []),
        "",
        "Each pair shares everything (data, seed, model, solver, optimiser, budget) but the regularisation "
        "group: `none`, or RNODE's kinetic energy int ||f||^2 dt and Jacobian Frobenius norm "
        "int ||df/dz||_F^2 dt integrated along the same solve and added to the loss with the weights shown "
        "(0 = off). MNIST uses `configs/regularization/rnode_mnist.yaml` (the kinetic term alone; see that "
        "file), the CNF `rnode.yaml`, whose HyperPlanarField gives the Frobenius norm exactly in closed form "
        "with its trace (no autograd; elsewhere it is Hutchinson's estimate with the noise fixed within a "
        "solve).",
        *(["", SEEDS_NOTE] if seeded else []),
        "",
        "## Goals (issue 19, stated for the quick profile on CPU)",
        "",
        *[f"- {goal.line()}" for goal in found],
        "",
    ]
    if profile != "quick":
        lines += [f"The goals are stated for the quick profile; these are {profile}-profile runs.", ""]
    lines += [
        "| experiment | run | regularisation | test error / held-out NLL | forward NFE / iteration, first "
        "-> last epoch | backward NFE / iteration, first -> last epoch | seconds / iteration | training "
        "wall time, s | training CPU time, s | epochs (iterations) | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        label = "MNIST ODE-Net" if row["experiment"] == "mnist" else f"CNF, {row['dataset']}"
        run = _run_label(row, seeded)
        if row["status"].startswith("missing"):
            lines.append(f"| {label} | {run} | - | - | - | - | - | - | - | - | {row['status']} |")
            continue
        metric = (
            f"{row['test_error_pct']:.2f}%"
            if row["test_error_pct"] is not None
            else _cell(row["test_nll"], ".3f")
        )
        wall = _cell(row["train_wall_s"], ".1f") if row["train_wall_s"] is not None else "not recorded"
        cpu = _cell(row["train_cpu_s"], ".1f") if row["train_cpu_s"] is not None else "not recorded"
        lines.append(
            f"| {label} | {run} | {row['regularization']} | {metric} | {_pair(row, 'nfe_forward')} | "
            f"{_pair(row, 'nfe_backward')} | {row['seconds_per_iteration']:.3f} | {wall} | {cpu} | "
            f"{row['epochs']} ({row['iterations']}) | {row['status']} |"
        )
    lines += ["", "The runs (the command each folder's name stands for):", ""]
    for row in rows:
        label = "MNIST ODE-Net" if row["experiment"] == "mnist" else f"CNF, {row['dataset']}"
        lines.append(f"- {label}, {_run_label(row, seeded)}: `{row['command']}`")
    if all(r["status"].startswith("missing") for r in rows if r["experiment"] == "cnf"):
        lines += ["", "The CNF rows are not yet run: `make regularization` trains them (commands above)."]
    lines += [
        "",
        "NFE per iteration: the epoch's mean over its training steps (forward solve; backward = the "
        "adjoint's backward solve). Seconds / iteration: mean over training of forward, backward and update "
        "(batch preparation excluded). Training wall / CPU time: the sum over epochs of `wall_s` / `cpu_s` "
        "in `epochs.csv` (the iterations with their batch preparation, evaluation excluded; CPU time is "
        "the process's, all threads). Test error / NLL: the final epoch's, no checkpoint selection.",
        "",
        *trade_off_lines(trade, profile),
        PAPER_NOTE,
        "",
        "Figure: `regularization.png` (forward and backward NFE per iteration over training, plain vs "
        "regularised; MNIST beside the paper's Figure 3(d), then the CNF).",
        "",
    ]
    return "\n".join(lines)


def _several_seeds(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the page has CNF runs of a seed other than 0 (then each row names its seed)."""
    return any(row["seed"] not in (0, None) for row in rows)


def _run_label(row: Mapping[str, Any], seeded: bool) -> str:
    """``plain`` or ``regularized``, with the CNF run's seed when the page has several."""
    return f"{row['run']} (seed {row['seed']})" if seeded and row["experiment"] == "cnf" else row["run"]


def figure(specs_: Sequence[RunSpec], results: Mapping[RunSpec, Mapping[str, Any]], title: str) -> bytes:
    """Forward and backward NFE over training (per iteration when TensorBoard logged it, epoch means as
    markers), plain vs regularised: MNIST in the top row, the CNF runs in the bottom row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = {("mnist", "forward"): axes[0, 0], ("mnist", "backward"): axes[0, 1],
              ("cnf", "forward"): axes[1, 0], ("cnf", "backward"): axes[1, 1]}  # fmt: skip
    drawn: set[tuple[str, str]] = set()
    colors: dict[tuple[str, str, str], str] = {}  # one color per run, shared by its seeds
    for spec in specs_:
        key = (spec.experiment, spec.dataset, spec.run)
        first = key not in colors  # the run's first seed has the legend entry; the others share its color
        color = colors.setdefault(key, f"C{len(colors)}")
        if spec not in results:
            continue
        per_epoch = results[spec]["batches_per_epoch"]
        label = None
        if first:
            label = spec.run if spec.experiment == "mnist" else f"{spec.dataset}, {spec.run}"
        for direction in ("forward", "backward"):
            ax = panels[spec.experiment, direction]
            series = read_training_series(spec.path, f"train_nfe_{direction}", f"nfe/{direction}")
            if series["iteration"]:
                x = [step / per_epoch for step in series["iteration"]]
                ax.plot(x, series["iteration_value"], ".", color=color, alpha=0.15, markersize=2)
                ax.plot(x, running_mean(series["iteration_value"], 50), "-", color=color,
                        label=label and f"{label} (running mean of 50 iterations)")  # fmt: skip
            ax.plot(series["epoch"], series["epoch_value"], "o", color=color,
                    label=None if series["iteration"] else label)  # fmt: skip
            drawn.add((spec.experiment, direction))
    names = {"mnist": "MNIST ODE-Net", "cnf": "CNF, maximum likelihood"}
    for (experiment, direction), ax in panels.items():
        paper = " (cf. paper Fig. 3(d))" if (experiment, direction) == ("mnist", "forward") else ""
        ax.set(xlabel="training epoch", ylabel=f"{direction} NFE per iteration",
               title=f"{names[experiment]}: {direction} NFE over training{paper}")  # fmt: skip
        if (experiment, direction) in drawn:
            ax.plot([], [], "o", color="gray", label="dots: epoch mean (at the epoch's end)")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not yet run", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_results(
    runs: Path,
    out: Path,
    profile: str,
    plain: str,
    regularized: str,
    cnf_regularized: str,
    command: str | None = None,
    note: str | None = None,
    seeds: Sequence[int] = (0,),
) -> tuple[list[dict[str, Any]], list[Goal]]:
    """Read the runs, write the three files to ``out``; returns the rows and the goals."""
    all_specs = specs(runs, profile, plain, regularized, cnf_regularized, seeds)
    swept = sweep_specs(runs, profile, (plain, cnf_regularized), seeds)
    rows, results = [], {}
    for spec in [*all_specs, *swept]:
        row, result = run_row(spec)
        rows.append(row)
        if result is not None:
            results[spec] = result
    found = goals(rows)
    trade = trade_offs(rows)
    header = provenance([{**r, "experiment": s.experiment} for s, r in results.items()], profile)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / f"{STEM}.csv", rows)
    atomic_write_text(out / f"{STEM}.md", markdown(rows, found, header, profile, command, note, trade))
    title = f"Plain vs RNODE-regularised training ({profile} profile, commit {git_commit(ROOT)})"
    atomic_write_bytes(out / f"{STEM}.png", figure(all_specs, results, title))
    return rows, found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--runs", default=str(ROOT / "runs"), help="the folder holding mnist/ and cnf/")
    parser.add_argument("--out", default=None, help="default: results/ (quick), results/<profile>/ (others)")
    parser.add_argument("--plain", default="default", help="run folder name of the plain runs")
    parser.add_argument("--regularized", default=MNIST_REGULARIZED, help="the regularised MNIST run's")
    parser.add_argument("--cnf-regularized", default=CNF_REGULARIZED, help="the regularised CNF runs'")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="the CNF pairs' seeds (goals on their means; seed k adds seed=k)")  # fmt: skip
    parser.add_argument("--note", default=None, help="a line for the page (e.g. how the machine was shared)")
    args = parser.parse_args()
    # the command as run, without the note (the page shows it on its own line)
    shown = [a for i, a in enumerate(sys.argv[1:]) if a != "--note" and sys.argv[i] != "--note"]
    command = " ".join(["python scripts/make_regularization_results.py", *shown])
    out = Path(args.out) if args.out else ROOT / "results" / ("" if args.profile == "quick" else args.profile)
    rows, found = write_results(
        Path(args.runs),
        out,
        args.profile,
        args.plain,
        args.regularized,
        args.cnf_regularized,
        command,
        args.note,
        tuple(args.seeds),
    )
    for row in rows:
        if row["status"] != "ok":
            which = f" {row['setting']} seed {row['seed']}" if row["run"] == SWEEP_RUN else ""
            print(f"{row['experiment']} {row['dataset']} {row['run']}{which}: {row['status']}")
    for goal in found:
        print(goal.line())
    print(f"-> {out / STEM}.md, .csv, .png")


if __name__ == "__main__":
    main()
