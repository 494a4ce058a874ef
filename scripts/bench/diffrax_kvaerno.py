"""Case 9's equal-error step count for diffrax's Kvaerno5, the reference implementation of the method.

Issue 22 asks kvaerno5 for fewer steps than SciPy's Radau at equal error on Robertson and Van der Pol
(mu = 1000). This runs diffrax's Kvaerno5 (JAX, float64) on the same problems with the same tolerances,
error measure and interpolation as case 9 (stiff_problems.py), under diffrax's default I controller and
the PI controller its documentation suggests for stiff problems, beside SciPy's Radau; neuralode's
kvaerno5 comes from case 9's results (``--ours``, a bench.json), measured there, not here. Steps are
attempted steps (accepted + rejected) for both kvaerno5 implementations, accepted steps for Radau.

It needs JAX and diffrax and no torch: ``make bench-diffrax`` builds its own environment (.venv-diffrax,
requirements/diffrax.txt) and writes results/bench_stiff/diffrax_kvaerno5.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

import numpy as np

from .stiff_problems import PROBLEMS, log_interpolate, reference, scaled_error

ROOT = Path(__file__).resolve().parents[2]
CONTROLLERS = {
    "I (diffrax's default)": {"pcoeff": 0.0, "icoeff": 1.0},
    "PI 0.3/0.4 (diffrax's advice for stiff problems)": {"pcoeff": 0.3, "icoeff": 0.4},
}


def jax_fields():
    """The two fields in JAX, the same arithmetic as stiff_problems' NumPy ones."""
    import jax.numpy as jnp

    def robertson(t, y, args):
        return jnp.stack([-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                          3e7 * y[1] ** 2])  # fmt: skip

    def van_der_pol(t, y, args):
        return jnp.stack([y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]])

    return {"robertson": robertson, "van der pol mu=1000": van_der_pol}


def diffrax_run(field, y0: list[float], t_end: float, rtol: float, atol: float, coefficients: dict) -> dict:
    """One Kvaerno5 solve: attempted and accepted steps and the state at t_end (no time: each tolerance's
    first call includes JAX's compilation)."""
    import diffrax
    import jax.numpy as jnp

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Kvaerno5(), t0=0.0, t1=t_end, dt0=None, y0=jnp.array(y0),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, **coefficients),
        max_steps=500_000, throw=False,
    )  # fmt: skip
    ok = sol.result == diffrax.RESULTS.successful
    return {
        "steps": int(sol.stats["num_steps"]),
        "accepted": int(sol.stats["num_accepted_steps"]),
        "y_end": np.asarray(sol.ys[-1]) if ok else None,
        "result": "ok" if ok else str(sol.result),
    }


def radau_run(problem: dict, t_end: float, rtol: float, atol: float) -> dict:
    from scipy.integrate import solve_ivp

    sol = solve_ivp(problem["np"], (0.0, t_end), problem["y0"], method="Radau", jac=problem["jac"],
                    rtol=rtol, atol=atol)  # fmt: skip
    return {"steps": len(sol.t) - 1, "y_end": sol.y[:, -1], "result": "ok" if sol.success else sol.message}


def measure(t_end: dict[str, float], rtols: list[float], reference_rtol: float) -> list[dict]:
    """Radau and both Kvaerno5 controllers over ``rtols`` (atol scaled with rtol from the problem's atol at
    ``reference_rtol``), to the end times ``t_end`` of case 9's run."""
    import jax

    jax.config.update("jax_enable_x64", True)
    fields, rows = jax_fields(), []
    for name, problem in PROBLEMS.items():
        end, atol0 = t_end[name], problem["atol"]
        ref = reference(problem, end)
        for rtol in rtols:
            atol = atol0 * rtol / reference_rtol
            radau = radau_run(problem, end, rtol, atol)
            error = scaled_error(radau["y_end"], ref, atol0)
            rows.append({"problem": name, "method": "Radau (SciPy)", "rtol": rtol, "steps": radau["steps"],
                         "error": error, "result": radau["result"]})  # fmt: skip
            for controller, coefficients in CONTROLLERS.items():
                run = diffrax_run(fields[name], problem["y0"], end, rtol, atol, coefficients)
                error = float("nan") if run["y_end"] is None else scaled_error(run["y_end"], ref, atol0)
                rows.append({"problem": name, "method": f"diffrax Kvaerno5, {controller}", "rtol": rtol,
                             "steps": run["steps"], "accepted": run["accepted"], "error": error,
                             "result": run["result"]})  # fmt: skip
                print(
                    f"{name} {controller} rtol {rtol:g}: {run['steps']} steps, error {error:.2e}", flush=True
                )
    return rows


def ours_from(bench_json: Path) -> tuple[list[dict], dict]:
    """neuralode kvaerno5's sweep rows and the run's meta from a case-9 bench.json (whose ``config``
    gives the end times, the sweep and the reference rtol that this cross-check repeats)."""
    result = json.loads(bench_json.read_text())
    rows = [
        {"problem": r["problem"], "method": "neuralode kvaerno5", "rtol": r["rtol"], "steps": r["steps"],
         "error": r["error"], "result": "ok"}
        for r in result["case9_sweep"] if r["method"] == "kvaerno5"
    ]  # fmt: skip
    return rows, {**result["meta"], "config": result["config"]}


def summary(rows: list[dict], reference_rtol: float) -> list[dict]:
    """Per problem and method: steps at the error of Radau's run at ``reference_rtol`` (as case 9: its
    first point not looser than that, else its tightest), against Radau's; a problem without Radau rows
    is left out."""
    out = []
    for name in PROBLEMS:
        sweep = sorted((r for r in rows if r["problem"] == name and r["method"].startswith("Radau")),
                       key=lambda r: -r["rtol"])  # fmt: skip
        if not sweep:
            continue
        radau = next((r for r in sweep if r["rtol"] <= reference_rtol), sweep[-1])
        for method in dict.fromkeys(r["method"] for r in rows if not r["method"].startswith("Radau")):
            points = [
                (r["error"], r["steps"]) for r in rows if r["problem"] == name and r["method"] == method
            ]
            steps = log_interpolate(points, radau["error"])  # a failed run's NaN error is dropped there
            out.append({"problem": name, "method": method, "radau_error": radau["error"],
                        "radau_steps": radau["steps"], "steps": steps})  # fmt: skip
    return out


def _git_commit() -> str:
    """HEAD, "-dirty" if the tree is. (neuralode.training has one, but importing neuralode needs torch.)"""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout
        return done.stdout.strip() + ("-dirty" if dirty.strip() else "")
    except OSError:
        return "unknown"


def markdown(
    rows: list[dict], table: list[dict], meta: dict, ours_meta: dict, ours_path: str, reference_rtol: float
) -> str:
    lines = [
        "# Case 9 cross-check: diffrax's Kvaerno5 at SciPy Radau's error (`make bench-diffrax`)",
        "",
        f"Made by `python -m scripts.bench.diffrax_kvaerno --ours {ours_path}` "
        "(scripts/bench/diffrax_kvaerno.py).",
        f"- date: {meta['date']}; commit: {meta['commit']}",
        f"- machine: {meta['machine']}; JAX on the CPU, float64, one process",
        f"- versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
        f"- neuralode kvaerno5: case 9's sweep in `{ours_path}` (commit {ours_meta.get('commit', '?')}, "
        f"{ours_meta.get('date', '?')}), measured there, not rerun here",
        "",
        "Problems, tolerances and error as in case 9: Robertson to t = 1e5 (atol 1e-10 at rtol 1e-6) and "
        "Van der Pol mu = 1000 to t = 3000 (atol 1e-9), atol scaled with rtol; error = max |y - ref| / "
        "(atol + |ref|) at t_end against SciPy's Radau at rtol 1e-11 / 1e-12. Steps: attempted (accepted + "
        "rejected) for both kvaerno5 implementations, accepted for Radau. Equal error: each method's steps "
        "interpolated "
        f"(log-log over its rtol sweep) at the error of Radau's run at rtol {reference_rtol:g}.",
        "",
        "## Steps at Radau's error",
        "",
        "| problem | method | Radau's error | Radau's steps | method's steps there | / Radau |",
        "|---|---|---|---|---|---|",
    ]
    for r in table:
        steps = "outside its sweep" if r["steps"] is None else f"{r['steps']:.0f}"
        times = "-" if r["steps"] is None else f"{r['steps'] / r['radau_steps']:.2f}x"
        lines.append(f"| {r['problem']} | {r['method']} | {r['radau_error']:.1e} | {r['radau_steps']} | "
                     f"{steps} | {times} |")  # fmt: skip
    lines += [
        "",
        "## The sweeps",
        "",
        "| problem | method | rtol | steps | error | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["problem"], r["method"], -r["rtol"])):
        lines.append(f"| {r['problem']} | {r['method']} | {r['rtol']:g} | {r['steps']} | {r['error']:.1e} | "
                     f"{r['result']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", default="results/bench_stiff/bench.json", help="case 9's bench.json")
    parser.add_argument("--out-dir", default="results/bench_stiff")
    parser.add_argument("--rtols", nargs="+", type=float, default=None, help="default: case 9's sweep")
    args = parser.parse_args()
    ours, ours_meta = ours_from(ROOT / args.ours)
    config = ours_meta["config"]  # case 9's settings in the run whose rows are compared
    rtols = args.rtols or config["stiff_sweep_rtols"]
    commit = _git_commit()  # before the run: what it wrote must not make its own commit look dirty
    measured = measure(config["stiff_t_end"], rtols, config["stiff_rtol"])
    rows = measured + [r for r in ours if r["rtol"] in rtols]
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, {platform.system()} "
        f"{platform.release()}",
        "versions": {name: version(name) for name in ("jax", "jaxlib", "diffrax", "scipy", "numpy")},
    }
    table = summary(rows, config["stiff_rtol"])
    out = ROOT / args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "ours": {"path": args.ours, "meta": ours_meta}, "rows": rows, "summary": table}
    for path, text in (
        (out / "diffrax_kvaerno5.json", json.dumps(payload, indent=1, default=float)),
        (
            out / "diffrax_kvaerno5.md",
            markdown(rows, table, meta, ours_meta, args.ours, config["stiff_rtol"]),
        ),
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")  # atomic, as neuralode.training's (which needs torch)
        tmp.write_text(text)
        os.replace(tmp, path)
    print(f"wrote {out / 'diffrax_kvaerno5.md'}")


if __name__ == "__main__":
    main()
