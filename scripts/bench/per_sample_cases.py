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
    rows = _rows(summary, batch=batch, t_end=t_end, n_times=n_times)
    return rows + _gradient_rows(libs, cfg, mu, y0, t) + _compaction_rows(cfg)


def _rows(summary: dict, **extra) -> list[dict]:
    """round_robin's medians as result rows, each with its library, mode and the ``extra`` fields."""
    return [
        {"library": lib, "mode": mode, **extra, **{k: v for k, v in row.items() if k != "seconds_all"}}
        for (lib, mode), row in summary.items()
    ]


class _VdP(torch.nn.Module):
    """Van der Pol with one learnable mu per row (the gradient case's parameter)."""

    def __init__(self, mu: torch.Tensor) -> None:
        super().__init__()
        self.mu = torch.nn.Parameter(mu.clone())
        self.calls = 0

    def forward(self, tt, y):
        self.calls += 1
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, self.mu * (1 - x * x) * v - x], dim=1)


def _gradient_rows(libs: list[str], cfg: dict, mu, y0, t) -> list[dict]:
    """d sum(y(t_i)) / d mu by the adjoint: fwd+bwd time, NFE and relative 2-norm error against direct
    backprop through a per-sample dopri8 solve at 1e-11."""
    import neuralode as nd

    batch = y0.shape[0]
    ref_field = _VdP(mu)
    ys = nd.odeint(ref_field, y0, t, rtol=1e-11, atol=1e-11, method="dopri8", per_sample=True)
    (reference,) = torch.autograd.grad(ys.sum(), ref_field.mu)

    def job(make_solve):
        def run():
            field = _VdP(mu)
            solve = make_solve(field)
            start = time.perf_counter()
            ys = solve()
            forward_calls = field.calls
            (grad,) = torch.autograd.grad(ys.sum(), field.mu)
            seconds = time.perf_counter() - start
            error = float((grad - reference).norm() / reference.norm())
            return {"seconds": seconds, "nfe": field.calls, "nfe_forward": forward_calls, "grad_error": error}

        return run

    def neuralode_adjoint(per_sample):
        return lambda field: (
            lambda: nd.odeint_adjoint(field, y0, t, rtol=1e-6, atol=1e-6, per_sample=per_sample)
        )

    jobs = {
        ("neuralode", "adjoint, per_sample"): job(neuralode_adjoint(True)),
        ("neuralode", "direct, per_sample"): job(
            lambda field: lambda: nd.odeint(field, y0, t, rtol=1e-6, atol=1e-6, per_sample=True)
        ),
        ("neuralode", "adjoint, joint"): job(neuralode_adjoint(False)),
    }
    if "torchdiffeq" in libs:
        import torchdiffeq

        jobs[("torchdiffeq", "adjoint, joint")] = job(
            lambda field: (
                lambda: torchdiffeq.odeint_adjoint(field, y0, t, rtol=1e-6, atol=1e-6, method="dopri5")
            )
        )
    if "torchode" in libs:
        import torchode

        def torchode_autodiff(field):
            term = torchode.ODETerm(field)
            solver = torchode.AutoDiffAdjoint(
                torchode.Dopri5(term=term), torchode.IntegralController(atol=1e-6, rtol=1e-6, term=term)
            )
            problem = torchode.InitialValueProblem(y0=y0, t_eval=t.repeat(batch, 1))
            return lambda: solver.solve(problem).ys.transpose(0, 1)

        jobs[("torchode", "direct (autodiff), per_sample")] = job(torchode_autodiff)
    # torchode's BacksolveAdjoint is left out: it calls the field on one sample at a time (vmap), so a
    # field with one parameter per row (this mu) cannot be given to it as it is to the others; its
    # AutoDiffAdjoint (backprop through its solver, its default) is the row above.
    summary = round_robin(jobs, cfg["per_sample_repeats"])
    return _rows(summary, batch=batch, gradient=True)


class _SpeedMLP(torch.nn.Module):
    """A tanh-MLP field 2-width-2 whose row i runs at speed s_i (log-spaced over [0.1, 10]), so rows
    finish after very different numbers of steps; rows are independent, and with ``rows`` (compaction's
    ``with_rows``) each row keeps its own speed."""

    def __init__(self, width: int, batch: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.w1 = torch.randn(2, width, generator=generator, dtype=torch.float64)
        self.b1 = torch.randn(width, generator=generator, dtype=torch.float64)
        self.w2 = torch.randn(width, 2, generator=generator, dtype=torch.float64) / width**0.5
        self.speed = torch.logspace(-1, 1, batch, dtype=torch.float64)

    def forward(self, tt, y, rows=None):
        speed = self.speed if rows is None else self.speed[rows]
        return speed[:, None] * (torch.tanh(y @ self.w1 + self.b1) @ self.w2)


def _compaction_rows(cfg: dict) -> list[dict]:
    """Where compaction starts to pay: per_sample=True with and without ``compact`` on ``_SpeedMLP``
    fields of growing width (the cost of one row's evaluation), forward only, dopri5 at 1e-6."""
    import neuralode as nd

    batch = cfg["per_sample_batch"]
    y0 = torch.randn(batch, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0.0, cfg["per_sample_t_end"]], dtype=torch.float64)
    rows = []
    for width in cfg["per_sample_compaction_widths"]:
        field = _SpeedMLP(width, batch)

        def job(per_sample, field=field):
            def run():
                stats = nd.SolveStats()
                start = time.perf_counter()
                with torch.no_grad():
                    nd.odeint(field, y0, t, rtol=1e-6, atol=1e-6, per_sample=per_sample, stats=stats)
                seconds = time.perf_counter() - start
                steps = stats.forward.n_steps.double()
                # the share of lockstep row-evaluations a compacting solve skips (finished rows)
                idle = float(1.0 - steps.sum() / (steps.max() * batch))
                return {"seconds": seconds, "nfe": stats.forward.nfe, "idle_share": idle}

            return run

        summary = round_robin(
            {"plain": job(True), "compact": job(nd.PerSample(compact=True, with_rows=True))},
            cfg["per_sample_repeats"],
        )
        rows.append(
            {
                "library": "neuralode",
                "mode": "compaction",
                "batch": batch,
                "width": width,
                "t_end": cfg["per_sample_t_end"],
                "seconds_plain": summary["plain"]["seconds"],
                "seconds_compact": summary["compact"]["seconds"],
                "idle_share": summary["plain"]["idle_share"],
            }
        )
        ratio = summary["compact"]["seconds"] / summary["plain"]["seconds"]
        print(f"case 8 compaction width={width}: compact/plain {ratio:.2f}", flush=True)
    return rows


def _compaction_lines(rows: list[dict]) -> list[str]:
    """The compaction sweep's table and the width from which compaction is faster."""
    if not rows:
        return []
    faster = [r["seconds_compact"] < r["seconds_plain"] for r in rows]
    # the smallest width from which compaction is faster at every measured width
    from_index = next((i for i in range(len(rows)) if all(faster[i:])), None)
    crossover = (
        "compaction was slower at every measured width"
        if from_index is None
        else f"compaction is faster from width {rows[from_index]['width']} on (of the widths measured)"
    )
    out = [
        "",
        f"Compaction crossover: {rows[0]['batch']} rows of a tanh-MLP field 2-width-2 at speeds "
        "log-spaced over "
        "[0.1, 10] (rows finish after very different numbers of steps), t in [0, "
        f"{rows[0]['t_end']:g}], dopri5 1e-6, float64, forward only; per_sample=True without and with "
        "`PerSample(compact=True, with_rows=True)`. Idle share: the part of the lockstep row-evaluations "
        f"that belong to finished rows (what compaction skips). Result: {crossover}.",
        "",
        "| width | per_sample (ms) | compact (ms) | compact / per_sample | idle share |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['width']} | {r['seconds_plain'] * 1e3:.1f} | {r['seconds_compact'] * 1e3:.1f} | "
            f"{r['seconds_compact'] / r['seconds_plain']:.2f} | {r['idle_share']:.2f} |"
        )
    return out


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
    compaction_rows = [r for r in rows if r["mode"] == "compaction"]
    forward_rows = [r for r in rows if not r.get("gradient") and r["mode"] != "compaction"]
    gradient_rows = [r for r in rows if r.get("gradient")]
    for row in forward_rows:
        steps = "-" if row["sample_steps"] is None else f"{row['sample_steps']:.0f}"
        out.append(
            f"| {row['library']} | {row['mode']} | {row['batch']} | {row['seconds'] * 1e3:.1f} | "
            f"{row['seconds'] / base:.2f} | {steps} | {row['nfe']:.0f} | {row['error']:.1e} |"
        )
    if gradient_rows:
        grad_base = next(r["seconds"] for r in gradient_rows if r["mode"] == "adjoint, per_sample")
        # "direct": backprop through the solver's operations (memory grows with the steps)
        out += [
            "",
            "The same problem's gradient d sum(y(t_i)) / d mu (one mu per sample, a parameter of the "
            "field) by each library's adjoint, and by backprop through the solver (direct; torchode's "
            "AutoDiffAdjoint); error: relative 2-norm against backprop through a per-sample dopri8 solve "
            "at 1e-11. NFE: calls of func, forward and backward. torchode's BacksolveAdjoint calls the "
            "field one sample at a time (vmap), which a field with one mu per row does not allow: it is "
            "left out.",
            "",
            "| library | mode | fwd+bwd (ms) | vs neuralode per_sample | NFE fwd | NFE total | grad error |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in gradient_rows:
            out.append(
                f"| {row['library']} | {row['mode']} | {row['seconds'] * 1e3:.1f} | "
                f"{row['seconds'] / grad_base:.2f} | {row['nfe_forward']:.0f} | {row['nfe']:.0f} | "
                f"{row['grad_error']:.1e} |"
            )
    out += _compaction_lines(compaction_rows)
    return [*out, ""]
