"""Case 8 (issue 21): per-sample solving of 256 Van der Pol oscillators, mu log-spaced over [0.1, 10],
y0 = (2, 0), t in [0, 10] at 50 output times, dopri5 rtol=atol=1e-6, float64, forward only.

Rows: neuralode per_sample=True (and with compaction), neuralode and torchdiffeq joint (one step size
for the batch), torchode (per sample by design). Steps are summed over samples ("sample-steps": a
joint step counts once per sample); NFE is func calls (each on the whole batch, or on the running rows
with compaction); the error is the maximum over samples and times against SciPy DOP853 at 1e-12.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .harness import round_robin


def _problem(batch: int, t_end: float, n_times: int):
    mu = torch.logspace(-1, 1, batch, dtype=torch.float64)
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64).repeat(batch, 1)
    t = torch.linspace(0.0, t_end, n_times, dtype=torch.float64)
    return mu, y0, t


def _reference(mu: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    from scipy.integrate import solve_ivp

    out = []
    for m in mu.tolist():
        sol = solve_ivp(
            lambda _, y, m=m: [y[1], m * (1 - y[0] ** 2) * y[1] - y[0]], (float(t[0]), float(t[-1])),
            [2.0, 0.0], method="DOP853", rtol=1e-12, atol=1e-12, t_eval=t.numpy(),
        )  # fmt: skip
        out.append(sol.y.T)
    return np.stack(out)  # (B, T, 2)


def case_per_sample(libs: list[str], cfg: dict) -> list[dict]:
    """Time, steps, NFE and error of every library's per-sample (or joint) solve of the batch."""
    import neuralode as nd

    batch, t_end, n_times = cfg["per_sample_batch"], cfg["per_sample_t_end"], cfg["per_sample_times"]
    mu, y0, t = _problem(batch, t_end, n_times)
    reference = _reference(mu, t)
    calls = {"n": 0}

    def field(tt, y):
        calls["n"] += 1
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], dim=1)

    def field_rows(tt, y, rows):
        calls["n"] += 1
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, mu[rows] * (1 - x * x) * v - x], dim=1)

    def timed(solve):
        def job():
            calls["n"] = 0
            start = time.perf_counter()
            ys, sample_steps = solve()  # ys (B, T, 2)
            seconds = time.perf_counter() - start
            error = float(np.abs(ys.detach().numpy() - reference).max())
            return {"seconds": seconds, "sample_steps": sample_steps, "nfe": calls["n"], "error": error}

        return job

    def neuralode_mode(per_sample, func):
        def solve():
            stats = nd.SolveStats()
            ys = nd.odeint(func, y0, t, rtol=1e-6, atol=1e-6, per_sample=per_sample, stats=stats)
            steps = stats.forward.n_steps
            return ys.transpose(0, 1), int(steps.sum()) if per_sample else steps * batch

        return solve

    jobs = {
        ("neuralode", "per_sample"): timed(neuralode_mode(True, field)),
        ("neuralode", "per_sample, compact"): timed(
            neuralode_mode(nd.PerSample(compact=True, with_rows=True), field_rows)
        ),
        ("neuralode", "joint"): timed(neuralode_mode(False, field)),
    }
    if "torchdiffeq" in libs:
        import torchdiffeq

        def torchdiffeq_joint():
            ys = torchdiffeq.odeint(field, y0, t, rtol=1e-6, atol=1e-6, method="dopri5")
            return ys.transpose(0, 1), None  # torchdiffeq does not report its steps

        jobs[("torchdiffeq", "joint")] = timed(torchdiffeq_joint)
    if "torchode" in libs:
        import torchode

        term = torchode.ODETerm(field)
        solver = torchode.AutoDiffAdjoint(
            torchode.Dopri5(term=term), torchode.IntegralController(atol=1e-6, rtol=1e-6, term=term)
        )
        t_eval = t.repeat(batch, 1)

        def torchode_per_sample():
            sol = solver.solve(torchode.InitialValueProblem(y0=y0, t_eval=t_eval))
            return sol.ys, int(sol.stats["n_steps"].sum())

        jobs[("torchode", "per_sample")] = timed(torchode_per_sample)
    summary = round_robin(jobs, cfg["per_sample_repeats"])
    return [
        {
            "library": lib,
            "mode": mode,
            "batch": batch,
            "t_end": t_end,
            "n_times": n_times,
            **{k: v for k, v in row.items() if k != "seconds_all"},
        }
        for (lib, mode), row in summary.items()
    ]


def per_sample_lines(rows: list[dict]) -> list[str]:
    """Case 8's table, with times relative to neuralode's per-sample row."""
    if not rows:
        return []
    base = next(r["seconds"] for r in rows if r["library"] == "neuralode" and r["mode"] == "per_sample")
    out = [
        f"## Case 8: per-sample solving, {rows[0]['batch']} Van der Pol oscillators (issue 21)",
        "",
        f"mu log-spaced over [0.1, 10], y0 = (2, 0), t in [0, {rows[0]['t_end']:g}] at {rows[0]['n_times']} "
        "times, dopri5 rtol=atol=1e-6, "
        "float64, forward only. Sample-steps: attempted steps summed over samples (a joint step counts "
        "once per sample; torchdiffeq does not report steps). NFE: calls of func. Error: max over "
        "samples and times against SciPy DOP853 at 1e-12.",
        "",
        "| library | mode | batch | time (ms) | vs neuralode per_sample | sample-steps | NFE | max error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        steps = "-" if row["sample_steps"] is None else f"{row['sample_steps']:.0f}"
        out.append(
            f"| {row['library']} | {row['mode']} | {row['batch']} | {row['seconds'] * 1e3:.1f} | "
            f"{row['seconds'] / base:.2f} | {steps} | {row['nfe']:.0f} | {row['error']:.1e} |"
        )
    return [*out, ""]
