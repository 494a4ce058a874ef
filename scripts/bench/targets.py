"""The issue's targets (targets.yaml) next to one run's ratios: the first table of bench.md. The
numbers live in the YAML file so that a new issue's goals change data, not code."""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from .adjoint_cases import paired_log_ratio
from .bare_loop import BARE
from .large_stiff import large_stiff_target_rows
from .stiff_cases import stiff_target_rows
from .stiff_training import training_target_rows

TARGETS_FILE = Path(__file__).with_name("targets.yaml")


def load_targets(path: Path = TARGETS_FILE) -> dict:
    """The targets as a dict (see targets.yaml for what each number means)."""
    return yaml.safe_load(path.read_text())


def _pick(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def summary_lines(result: dict, targets: dict | None = None) -> list[str]:
    """The issue's targets next to this run's ratios (peer median / neuralode median)."""
    targets = load_targets() if targets is None else targets
    lines = ["| target | measured | met |", "|---|---|---|"]

    def add(target: str, measured: str, met: bool | None) -> None:
        lines.append(f"| {target} | {measured} | {'-' if met is None else ('yes' if met else 'no')} |")

    forward = result["case1_forward"]
    for goal_row in targets["forward"]:
        batch, goal, overhead_goal = goal_row["batch"], goal_row["speedup"], goal_row["overhead"]
        for dtype in ("float32", "float64"):
            ours = _pick(forward, batch=batch, dtype=dtype, library="neuralode")
            peer = _pick(forward, batch=batch, dtype=dtype, library="torchdiffeq")
            if ours and peer:
                r = peer["seconds"] / ours["seconds"]
                add(
                    f"case 1, batch {batch} {dtype}: >= {goal}x torchdiffeq, NFE <= its NFE",
                    f"{r:.2f}x, NFE {ours['nfe']:.0f} vs {peer['nfe']:.0f}",
                    r >= goal and ours["nfe"] <= peer["nfe"],
                )
            if ours:
                bare = _pick(forward, batch=batch, dtype=dtype, library=BARE)
                floor = "" if bare is None else f" (the bare loop's floor: {bare['overhead_ratio']:.2f})"
                add(
                    f"case 2, batch {batch} {dtype}: overhead <= {overhead_goal}",
                    f"{ours['overhead_ratio']:.2f}{floor}",
                    ours["overhead_ratio"] <= overhead_goal,
                )
    gradients = result["case3_gradients"]
    for dtype in ("float32", "float64"):
        for mode in ("adjoint", "seminorm"):
            ours = _pick(gradients, dtype=dtype, library="neuralode", mode=mode)
            peers = [
                _pick(gradients, dtype=dtype, library=lib, mode=mode) for lib in ("torchdiffeq", "torchode")
            ]
            peers = [p for p in peers if p]
            if ours and peers:
                ratios = ", ".join(f"{p['library']} {p['seconds'] / ours['seconds']:.2f}x" for p in peers)
                add(
                    f"case 3, {dtype} {mode}: faster than the peers",
                    ratios,
                    all(p["seconds"] > ours["seconds"] for p in peers),
                )
    same_gradient = targets["checkpoint_gradient"]
    for dtype in ("float32", "float64"):
        direct = _pick(gradients, dtype=dtype, library="neuralode", mode="direct")
        ours = _pick(gradients, dtype=dtype, library="neuralode", mode="checkpoint")
        if direct and ours:
            e_d, e_c = direct["grad_rel_error"], ours["grad_rel_error"]
            add(
                f"case 3, {dtype} checkpoint: gradient error equals direct backprop's",
                f"{e_c:.2e} vs {e_d:.2e}, time {ours['seconds'] / direct['seconds']:.2f}x direct",
                abs(e_c - e_d) <= same_gradient["rel"] * e_d + same_gradient["abs"][dtype],
            )
    block, block_goal = result["case4_block"], targets["block"]["speedup"]
    for mode in ("adjoint", "seminorm"):
        ours = _pick(block, library="neuralode", mode=mode)
        tdq = _pick(block, library="torchdiffeq", mode=mode)
        tode = _pick(block, library="torchode", mode="adjoint")
        if ours and tdq:
            r = tdq["seconds"] / ours["seconds"]
            extra = f", torchode (adjoint) {tode['seconds'] / ours['seconds']:.2f}x" if tode else ""
            add(
                f"case 4, {mode}: >= {block_goal}x torchdiffeq, faster than torchode",
                f"torchdiffeq {r:.2f}x{extra}",
                r >= block_goal and (tode is None or tode["seconds"] > ours["seconds"]),
            )
    for row in _memory_rows(result["case5_memory"], targets["memory"]):
        add(*row)
    adjoint = result.get("case7_adjoint", [])
    for problem in targets.get("adjoint_one_interval", {}).get("problems", []):
        ours = _pick(adjoint, problem=problem, library="neuralode", mode="adjoint")
        peer = _pick(adjoint, problem=problem, library="torchode", mode="adjoint")
        if ours and peer:
            add(
                f"case 7 (issue 18), {problem}: default adjoint faster than torchode at <= its "
                "gradient error",
                f"{peer['seconds'] / ours['seconds']:.2f}x, error {ours['grad_rel_error']:.1e} vs "
                f"{peer['grad_rel_error']:.1e}, NFE bwd {ours['nfe_backward']:.0f} vs "
                f"{peer['nfe_backward']:.0f}",
                peer["seconds"] > ours["seconds"] and ours["grad_rel_error"] <= peer["grad_rel_error"],
            )
    paired = paired_log_ratio(result.get("case7_instances", []), "neuralode", "adjoint")
    if paired is not None:
        mean, se, n = paired
        add(
            f"case 7 (issue 18), block over {n} random instances: default adjoint's gradient error not "
            "above torchode's (paired log-ratio <= 2 standard errors)",
            f"error ratio {math.exp(mean):.2f} (x/ {math.exp(se):.2f})",
            mean <= 2 * se,
        )
    for row in stiff_target_rows(result, targets):
        add(*row)
    for row in training_target_rows(result.get("case10_training", []), targets):
        add(*row)
    for row in large_stiff_target_rows(result):
        add(*row)
    for row in result.get("case6_compile", []):
        if row["what"].startswith("dopri5"):
            r = row["compiled_seconds"] / row["eager_seconds"]
            add(
                f"optional: torch.compile helps on CPU (batch {row['batch']}; kept only if it does)",
                f"compiled field: {r:.2f}x the eager solve's time" + (" (not kept)" if r >= 1 else ""),
                None,
            )
    heading = f"## Against the targets of {_issues_named(lines[2:], targets['issue'])}"
    closing = "Ratios are from this one run; on a shared machine they move between runs."
    return [heading, "", *lines, "", closing, ""]


def _issues_named(rows: list[str], default_issue: int) -> str:
    """'issue 22' or 'issues 8, 18 and 22': the issues whose targets the rows check (a row without an
    '(issue N)' label is the YAML file's own issue)."""
    issues = {int(n) for row in rows for n in re.findall(r"\(issue (\d+)\)", row)}
    if not rows or any("(issue " not in row for row in rows):
        issues.add(default_issue)
    names = [str(n) for n in sorted(issues)]
    if len(names) == 1:
        return f"issue {names[0]}"
    return f"issues {', '.join(names[:-1])} and {names[-1]}"


def _memory_rows(memory: list[dict], goals: dict) -> list[tuple[str, str, bool | None]]:
    """Case 5's (target, measured, met) rows: the adjoint's flatness, direct backprop's growth."""
    rows = []

    def points(lib: str, mode: str) -> list[tuple[int, float]]:
        return sorted((r["steps"], r["peak_mb"]) for r in memory if r["library"] == lib and r["mode"] == mode)

    ours, peer = points("neuralode", "adjoint"), points("torchdiffeq", "adjoint")
    if len(ours) >= 2:
        spread = max(m for _, m in ours) - min(m for _, m in ours)
        no_higher = not peer or ours[-1][1] <= peer[-1][1] + goals["adjoint_margin_mb"]
        rows.append(
            (
                "case 5: adjoint peak flat over steps (a few MB), no higher than torchdiffeq's",
                f"spread {spread:.0f} MiB over {ours[0][0]}-{ours[-1][0]} steps; at {ours[-1][0]} steps "
                f"{ours[-1][1]:.0f} vs torchdiffeq {peer[-1][1]:.0f} MiB"
                if peer
                else f"spread {spread:.0f} MiB",
                spread <= goals["adjoint_spread_mb"] and no_higher,
            )
        )
    direct = points("neuralode", "direct")
    if len(direct) >= 2:
        slope = (direct[-1][1] - direct[0][1]) / (direct[-1][0] - direct[0][0])
        rows.append(
            (
                f"case 5: direct backprop grows (about {goals['direct_growth_mb_per_step']} MB per step)",
                f"{slope:.0f} MiB per rk4 step",
                None,
            )
        )
    return rows
