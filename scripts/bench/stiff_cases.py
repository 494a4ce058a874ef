"""Case 9 (issue 22): stiff problems, neuralode's adaptive ESDIRK methods against SciPy's stiff solvers.

Robertson's kinetics to t = 1e5 (atol 1e-10) and Van der Pol at mu = 1000 over about two periods
(t in [0, 3000], atol 1e-9), rtol = 1e-6, float64, one state (no batch): steps, NFE, Newton
iterations, LU factorisations, wall time (median of repeats, round-robin) and error for kvaerno5 and
kvaerno3; SciPy's Radau, BDF and LSODA called directly (``solve_ivp`` with a NumPy field and its
analytic Jacobian: SciPy at its fastest) and through neuralode's ``scipy_solver`` (kvaerno5's torch
field, autograd Jacobian: the issue's comparison); dopri5 with a ``max_num_steps`` cap (the row says
when it hit the cap).

Error: max over components at the last time of |y - ref| / (atol + |ref|), a relative error floored at
the problem's atol, so that every tolerance of the sweep is judged on the same scale; ref is SciPy's
Radau at rtol 1e-12 (Robertson: 1e-11) with the analytic Jacobian. Steps: neuralode counts attempted steps
(accepted + rejected), SciPy reports accepted steps only, so the comparison is conservative for us.

kvaerno5 and the SciPy rows are timed over repeats; kvaerno3 and dopri5 (slow, read by no target) once.
Equal error: kvaerno5 and Radau are swept over rtol (atol scaled with it); Radau's steps at
kvaerno5's error are read off Radau's sweep by log-log interpolation (and the other way round).
The 100,000-state matrix-free problem is case 11 (large_stiff.py), with its own table.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from . import stiff_problems
from .harness import Timed, round_robin
from .stiff_problems import log_interpolate, reference, scaled_error

F64 = torch.float64
VIA_WRAPPER = "neuralode scipy_solver"  # SciPy's solver on kvaerno5's torch field (autograd Jacobian)


def robertson(t, y):
    """Robertson's chemical kinetics (torch), state (..., 3)."""
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], -1)


def van_der_pol(t, y):
    """Van der Pol with mu = 1000 (torch), state (..., 2)."""
    return torch.stack([y[..., 1], 1000.0 * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)


TORCH_FIELDS = {"robertson": robertson, "van der pol mu=1000": van_der_pol}
# each problem's NumPy side (stiff_problems.py) with its torch field as "func"
PROBLEMS = {
    name: {**numpy_side, "func": TORCH_FIELDS[name]} for name, numpy_side in stiff_problems.PROBLEMS.items()
}


def _neuralode_job(problem: dict, t_end: float, method: str, rtol: float, atol: float, options=None):
    """A run of odeint: seconds and the counts; the state at t_end for the error."""
    import neuralode as nd

    field = Timed(_Field(problem["func"]))
    y0 = torch.tensor(problem["y0"], dtype=F64)
    t = torch.tensor([0.0, t_end], dtype=F64)

    def run() -> dict:
        field.reset()
        stats = nd.SolveStats()
        start = time.perf_counter()
        failed = ""
        try:
            with torch.no_grad():
                ys = nd.odeint(
                    field, y0, t, method=method, rtol=rtol, atol=atol, options=options, stats=stats
                )
            y_end = ys[-1].numpy()
        except nd.MaxStepsExceededError as error:
            cap = (options or {}).get("max_num_steps")
            failed, y_end = f"hit max_num_steps={cap} at t={error.t:.3g} (of {t_end:g})", None
        seconds = time.perf_counter() - start
        c = stats.forward
        steps = c.n_steps if not failed else (options or {}).get("max_num_steps")  # not recorded on failure
        return {"seconds": seconds, "steps": steps, "rejected": c.n_rejected, "nfe": field.calls,
                "newton": c.n_newton_iters, "lu": c.n_factorizations, "y_end": y_end,
                "failed": failed}  # fmt: skip

    return run


class _Field(torch.nn.Module):
    """A plain function as a module (Timed wraps modules)."""

    def __init__(self, func: Callable) -> None:
        super().__init__()
        self.func = func

    def forward(self, t, y):
        return self.func(t, y)


def _scipy_job(problem: dict, t_end: float, solver: str, rtol: float, atol: float):
    """solve_ivp with the NumPy field and the analytic Jacobian (Radau, BDF, LSODA)."""
    from scipy.integrate import solve_ivp

    def run() -> dict:
        start = time.perf_counter()
        sol = solve_ivp(problem["np"], (0.0, t_end), problem["y0"], method=solver, jac=problem["jac"],
                        rtol=rtol, atol=atol)  # fmt: skip
        seconds = time.perf_counter() - start
        # int(): LSODA reports NumPy integers, which bench.json would write as strings
        return {"seconds": seconds, "steps": len(sol.t) - 1, "rejected": None, "nfe": int(sol.nfev),
                "newton": None, "lu": int(sol.nlu), "njev": int(sol.njev), "y_end": sol.y[:, -1],
                "failed": "" if sol.success else sol.message}  # fmt: skip

    return run


def _jobs(problem: dict, t_end: float, rtol: float, atol: float) -> dict:
    """The runs timed over repeats."""
    return {
        ("kvaerno5", "neuralode"): _neuralode_job(problem, t_end, "kvaerno5", rtol, atol),
        ("Radau", "scipy"): _scipy_job(problem, t_end, "Radau", rtol, atol),
        ("BDF", "scipy"): _scipy_job(problem, t_end, "BDF", rtol, atol),
        ("LSODA", "scipy"): _scipy_job(problem, t_end, "LSODA", rtol, atol),
        **{
            (solver, VIA_WRAPPER): _neuralode_job(
                problem, t_end, "scipy_solver", rtol, atol, {"solver": solver}
            )
            for solver in ("Radau", "BDF", "LSODA")
        },
    }


def _single_jobs(problem: dict, t_end: float, rtol: float, atol: float, dopri5_cap: int) -> dict:
    """The slow runs timed once (kvaerno3's many steps, dopri5 up to its cap): no target reads them."""
    return {
        ("kvaerno3", "neuralode"): _neuralode_job(problem, t_end, "kvaerno3", rtol, atol),
        ("dopri5", "neuralode"): _neuralode_job(
            problem, t_end, "dopri5", rtol, atol, {"max_num_steps": dopri5_cap}
        ),
    }


def _row(name: str, t_end: float, rtol: float, atol: float, key, summary: dict, ref) -> dict:
    method, via = key
    y_end = summary.pop("y_end")
    return {"problem": name, "t_end": t_end, "rtol": rtol, "atol": atol, "method": method, "via": via,
            **{k: v for k, v in summary.items() if k != "seconds_all"},
            "error": None if y_end is None else scaled_error(y_end, ref, atol)}  # fmt: skip


def case_stiff(cfg: dict) -> tuple[list[dict], list[dict]]:
    """Case 9's rows: every method at rtol = cfg's stiff_rtol, and the rtol sweep of kvaerno5 and Radau."""
    rows, sweep = [], []
    for name, t_end in cfg["stiff_t_end"].items():
        problem = PROBLEMS[name]
        ref = reference(problem, t_end)
        rtol, atol = cfg["stiff_rtol"], problem["atol"]
        summary = round_robin(_jobs(problem, t_end, rtol, atol), cfg["stiff_repeats"])
        once = round_robin(_single_jobs(problem, t_end, rtol, atol, cfg["stiff_dopri5_cap"]), 1, warmup=0)
        for key, values in {**summary, **once}.items():
            rows.append(_row(name, t_end, rtol, atol, key, values, ref))
            r = rows[-1]
            print(f"case 9 {name} {r['method']} ({r['via']}): steps {r['steps']} error "
                  f"{r['error']} {r['seconds']:.3f} s {r['failed']}", flush=True)  # fmt: skip
            if key in (("kvaerno5", "neuralode"), ("Radau", "scipy")):  # the sweep's point at rtol
                sweep.append({"problem": name, "method": key[0], **{k: r[k] for k in
                              ("rtol", "seconds", "steps", "nfe", "error")}})  # fmt: skip
        for sweep_rtol in cfg["stiff_sweep_rtols"]:
            if sweep_rtol == rtol:
                continue
            sweep_atol = atol * sweep_rtol / rtol
            for key, job in (
                (
                    ("kvaerno5", "neuralode"),
                    _neuralode_job(problem, t_end, "kvaerno5", sweep_rtol, sweep_atol),
                ),
                (("Radau", "scipy"), _scipy_job(problem, t_end, "Radau", sweep_rtol, sweep_atol)),
            ):
                values = job()
                values["error"] = scaled_error(values.pop("y_end"), ref, atol)
                sweep.append({"problem": name, "method": key[0], "rtol": sweep_rtol, **values})
    sweep.sort(key=lambda r: (r["problem"], r["method"] != "kvaerno5", -r["rtol"]))
    return rows, sweep


def steps_at_equal_error(sweep: list[dict], problem: str) -> dict | None:
    """kvaerno5's steps at the error of Radau's run at the sweep's reference rtol (its first point
    not looser than 1e-6, else the last), against Radau's steps there; where Radau's error is outside
    kvaerno5's sweep, the kvaerno5 point with the fewest steps among those at or below that error."""
    ours = [
        (r["error"], r["steps"], r["rtol"])
        for r in sweep
        if r["problem"] == problem and r["method"] == "kvaerno5"
    ]
    radau = [r for r in sweep if r["problem"] == problem and r["method"] == "Radau"]
    if not ours or not radau:
        return None
    peer = next((r for r in radau if r["rtol"] <= 1e-6), radau[-1])
    steps = log_interpolate([(e, s) for e, s, _ in ours], peer["error"])
    how = "interpolated"
    if steps is None:
        below = [(s, q) for e, s, q in ours if e <= peer["error"]]
        if not below:
            return {"radau_rtol": peer["rtol"], "radau_error": peer["error"], "radau_steps": peer["steps"],
                    "steps": None, "how": "kvaerno5 never reached Radau's error in the sweep"}  # fmt: skip
        steps, q = min(below)
        how = f"kvaerno5 at rtol {q:g} (error at or below Radau's)"
    return {"radau_rtol": peer["rtol"], "radau_error": peer["error"], "radau_steps": peer["steps"],
            "steps": steps, "how": how}  # fmt: skip


def stiff_target_rows(result: dict, targets: dict) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) rows of issue 22 for case 9: fewer steps than Radau at equal error,
    and kvaerno5's wall time within ``wall_ratio`` of each SciPy solver's."""
    rows_out: list[tuple[str, str, bool | None]] = []
    goal = targets.get("stiff")
    rows, sweep = result.get("case9_stiff", []), result.get("case9_sweep", [])
    if not goal or not rows:
        return rows_out
    for problem in dict.fromkeys(r["problem"] for r in rows):
        equal = steps_at_equal_error(sweep, problem)
        if equal is not None:
            if equal["steps"] is None:
                rows_out.append((f"case 9 (issue 22), {problem}: kvaerno5 fewer steps than SciPy Radau at "
                                 "equal error", equal["how"], False))  # fmt: skip
            else:
                rows_out.append((
                    f"case 9 (issue 22), {problem}: kvaerno5 fewer steps than SciPy Radau at equal error",
                    f"{equal['steps']:.0f} vs {equal['radau_steps']} steps at Radau's error "
                    f"{equal['radau_error']:.1e} (rtol {equal['radau_rtol']:g}; {equal['how']})",
                    equal["steps"] < equal["radau_steps"],
                ))  # fmt: skip
        ours = next((r for r in rows if r["problem"] == problem and r["method"] == "kvaerno5"), None)
        for via, judged, what in (
            (VIA_WRAPPER, ("Radau", "BDF"), "Radau and BDF (NumPy code) through scipy_solver, on the "
             "same torch field: the issue's comparison"),
            ("scipy", ("Radau", "BDF", "LSODA"), "Radau, BDF (NumPy) and LSODA (Fortran) called directly "
             "with a NumPy field and analytic Jacobian: stricter"),
        ):  # fmt: skip
            peers = [r for r in rows if r["problem"] == problem and r["via"] == via]
            if ours and peers:
                rows_out.append(_wall_row(problem, ours, peers, goal["wall_ratio"], judged, what))
    return rows_out


def _wall_row(
    problem: str, ours: dict, peers: list[dict], limit: float, judged: tuple[str, ...], what: str
) -> tuple[str, str, bool]:
    """kvaerno5's wall time over each peer's, met when within ``limit`` of every ``judged`` one; the
    others (LSODA through the wrapper) are reported, and those it beats named."""
    ratios = {p["method"]: ours["seconds"] / p["seconds"] for p in peers}
    text = ", ".join(f"{m} {v:.1f}x" for m, v in ratios.items())
    beaten = [m for m, v in ratios.items() if v < 1.0]
    return (
        f"case 9 (issue 22), {problem}: kvaerno5 wall time within {limit:g}x of SciPy's {what}",
        f"kvaerno5 time / SciPy time: {text}; faster than: {', '.join(beaten) or 'none'}",
        all(v <= limit for m, v in ratios.items() if m in judged),
    )


def cell(value, fmt: str) -> str:
    """A table cell: the value in ``fmt``, or "-" where it was not measured (None)."""
    return "-" if value is None else format(value, fmt)


def stiff_lines(rows: list[dict], sweep: list[dict]) -> list[str]:
    """Case 9's tables: every method at the benchmark's rtol per problem, then the rtol sweep."""
    if not rows:
        return []

    out = [
        "## Case 9: stiff problems (issue 22)",
        "",
        "float64, one state, forward only. Error: max over components at t_end of |y - ref| / (atol + "
        "|ref|), ref SciPy Radau at rtol 1e-11 (Robertson) / 1e-12 (Van der Pol) with the analytic "
        "Jacobian. `scipy` rows: `solve_ivp` with a NumPy field and analytic Jacobian (NFE excludes "
        "Jacobian calls; steps are accepted steps only, Newton iterations are not reported); "
        "`neuralode scipy_solver`: SciPy's solver through neuralode (kvaerno5's torch field, autograd "
        "Jacobian); "
        "neuralode rows count attempted steps and every call of the field (Jacobians included). Time: "
        "median over interleaved repeats (kvaerno3 and dopri5: one run).",
        "",
        "| problem | t_end | method | via | rtol / atol | steps (rejected) | NFE | Newton iters | LU | "
        "time (ms) | error | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rejected = "" if r.get("rejected") is None else f" ({r['rejected']:.0f})"
        out.append(
            f"| {r['problem']} | {r['t_end']:g} | {r['method']} | {r['via']} | {r['rtol']:g} / "
            f"{r['atol']:g} | {r['steps']:.0f}{rejected} | {r['nfe']:.0f} | {cell(r.get('newton'), '.0f')} | "
            f"{cell(r.get('lu'), '.0f')} | {r['seconds'] * 1e3:.1f} | {cell(r['error'], '.1e')} | "
            f"{r.get('failed') or ''} |"
        )
    if sweep:
        out += [
            "",
            "### Steps against error (rtol sweep, atol scaled with rtol)",
            "",
            "| problem | method | rtol | steps | NFE | time (ms) | error | other's steps at this error |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sweep:
            other = "Radau" if r["method"] == "kvaerno5" else "kvaerno5"
            points = [
                (s["error"], s["steps"])
                for s in sweep
                if s["problem"] == r["problem"] and s["method"] == other
            ]
            at = log_interpolate(points, r["error"])
            out.append(
                f"| {r['problem']} | {r['method']} | {r['rtol']:g} | {r['steps']:.0f} | {r['nfe']:.0f} | "
                f"{r['seconds'] * 1e3:.1f} | {r['error']:.1e} | "
                f"{'outside its sweep' if at is None else f'{other} {at:.0f}'} |"
            )
    return [*out, ""]
