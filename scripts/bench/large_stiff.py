"""Case 11 (issue 22): a stiff reaction-diffusion system of up to 100,000 states, matrix-free.

u_t = c u_xx + u (1 - w), w_t = -k (w - u^2) on n grid points with reflecting ends (c = 100 per grid
spacing squared, k = 1e4: the fast species w relaxes onto u^2, so explicit methods are held to
dt ~ 3/k), u(0) a Gaussian of width 0.15 of the domain, w(0) = u(0)^2, t in [0, 2], float64, 2n states.

Every run is a fresh subprocess (``--large-stiff-point``), so that its peak memory is its own.
Rows: kvaerno5 with linear_solver='krylov' at every size (steps, NFE, Newton iterations, GMRES products,
time, peak RSS above the RSS before the solve, and the N x N matrix a dense Newton would need); at
the largest size also SciPy's BDF with the analytic sparse Jacobian (sparse LU: SciPy at its fastest
on this problem) and dopri5 up to a step cap. Error: max |y - ref| / (atol + |ref|) at t = 2 against
SciPy's Radau at rtol 1e-10 with the sparse Jacobian.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuralode.training.monitor import current_rss_mb, peak_rss_mb, reset_peak_rss

from .config import ROOT
from .harness import Timed
from .stiff_cases import cell
from .stiff_problems import scaled_error

F64 = torch.float64
K, C, T_END = 1e4, 100.0, 2.0


class ReactionDiffusion(torch.nn.Module):
    """The case's field on a flat state (u, w) of 2n entries (torch)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, t, y):
        u, w = y[: self.n], y[self.n :]
        lap = torch.cat([2 * (u[1:2] - u[:1]), u[2:] - 2 * u[1:-1] + u[:-2], 2 * (u[-2:-1] - u[-1:])])
        return torch.cat([C * lap + u * (1 - w), -K * (w - u * u)])


def initial_state(n: int) -> np.ndarray:
    x = np.linspace(0.0, 1.0, n)
    u = np.exp(-(((x - 0.5) / 0.15) ** 2))
    return np.concatenate([u, u * u])


def _scipy_problem(n: int):
    """The NumPy field and its analytic sparse Jacobian (CSC)."""
    import scipy.sparse as sp

    lower, upper = np.ones(n - 1), np.ones(n - 1)
    upper[0] = lower[-1] = 2.0
    laplacian = sp.diags([lower, -2.0 * np.ones(n), upper], [-1, 0, 1])

    def field(t, y):
        u, w = y[:n], y[n:]
        lap = np.empty_like(u)
        lap[1:-1] = u[2:] - 2 * u[1:-1] + u[:-2]
        lap[0], lap[-1] = 2 * (u[1] - u[0]), 2 * (u[-2] - u[-1])
        return np.concatenate([C * lap + u * (1 - w), -K * (w - u * u)])

    def jacobian(t, y):
        u, w = y[:n], y[n:]
        return sp.bmat([[C * laplacian + sp.diags(1 - w), sp.diags(-u)],
                        [sp.diags(2 * K * u), sp.diags(-K * np.ones(n))]], format="csc")  # fmt: skip

    return field, jacobian


def _scipy(n: int, method: str, rtol: float, atol: float) -> dict:
    from scipy.integrate import solve_ivp

    field, jacobian = _scipy_problem(n)
    reset_peak_rss()
    before = current_rss_mb()
    start = time.perf_counter()
    sol = solve_ivp(field, (0.0, T_END), initial_state(n), method=method, jac=jacobian, rtol=rtol, atol=atol)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "steps": len(sol.t) - 1, "nfe": sol.nfev, "newton": None, "krylov": None,
            "lu": sol.nlu, "peak_mb": peak_rss_mb() - before, "y_end": sol.y[:, -1],
            "failed": "" if sol.success else sol.message}  # fmt: skip


def _neuralode(n: int, method: str, rtol: float, atol: float, options: dict) -> dict:
    import neuralode as nd

    field = Timed(ReactionDiffusion(n))
    y0 = torch.from_numpy(initial_state(n))
    t = torch.tensor([0.0, T_END], dtype=F64)
    stats = nd.SolveStats()
    reset_peak_rss()
    before = current_rss_mb()
    start = time.perf_counter()
    failed, y_end = "", None
    try:
        with torch.no_grad():
            ys = nd.odeint(field, y0, t, method=method, rtol=rtol, atol=atol, options=options, stats=stats)
        y_end = ys[-1].numpy()
    except nd.MaxStepsExceededError as error:
        failed = f"hit max_num_steps={options.get('max_num_steps')} at t={error.t:.3g} (of {T_END:g})"
    seconds = time.perf_counter() - start
    c = stats.forward
    return {"seconds": seconds, "steps": c.n_steps if not failed else options.get("max_num_steps"),
            "nfe": field.calls, "newton": c.n_newton_iters, "krylov": c.n_krylov_iters,
            "lu": c.n_factorizations, "peak_mb": peak_rss_mb() - before, "y_end": y_end,
            "failed": failed}  # fmt: skip


KRYLOV = {"linear_solver": "krylov"}
RUNS = {  # method: (how it is run, run(n, rtol, atol, dopri5's step cap))
    "kvaerno5": ("neuralode, krylov", lambda n, rtol, atol, _: _neuralode(n, "kvaerno5", rtol, atol, KRYLOV)),
    "BDF": ("scipy, sparse LU", lambda n, rtol, atol, cap: _scipy(n, "BDF", rtol, atol)),
    "dopri5": ("neuralode",
               lambda n, rtol, atol, cap: _neuralode(n, "dopri5", rtol, atol, {"max_num_steps": cap})),
    "Radau": ("scipy, sparse LU", lambda n, rtol, atol, cap: _scipy(n, "Radau", rtol, atol)),
}  # fmt: skip


def large_stiff_point(method: str, states: int, rtol: float, atol: float, cap: int, out: str) -> dict:
    """One run in this (fresh) process, after a small warm-up solve so that one-off allocations are not
    counted; the state at T_END goes to the .npy file ``out``, the rest is returned."""
    RUNS[method][1](50, rtol, atol, cap)
    run = RUNS[method][1](states // 2, rtol, atol, cap)
    y_end = run.pop("y_end")
    np.save(out, np.full(states, np.nan) if y_end is None else y_end)
    return {**run, "has_y_end": y_end is not None}


def _point(method: str, states: int, rtol: float, atol: float, cap: int, threads: int) -> tuple[dict, Any]:
    """:func:`large_stiff_point` in a fresh subprocess (``--large-stiff-point``), so that its peak RSS is
    its own and not an earlier run's."""
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "y_end.npy")
        command = [sys.executable, "-m", __package__, "--threads", str(threads), "--large-stiff-point",
                   method, str(states), repr(rtol), repr(atol), str(cap), out]  # fmt: skip
        done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        run = json.loads(done.stdout.strip().splitlines()[-1])
        y_end = np.load(out) if run.pop("has_y_end") else None
    return run, y_end


def case_large_stiff(cfg: dict, threads: int = 1) -> list[dict]:
    """Case 11's rows, each run in its own subprocess: kvaerno5 (Krylov) at every size; SciPy BDF and
    dopri5 (capped) at the largest; the reference (Radau at rtol 1e-10) per size."""
    settings = cfg["large_stiff"]
    rtol, atol, cap = settings["rtol"], settings["atol"], settings["dopri5_cap"]
    sizes = settings["states"]
    rows = []
    for states in sizes:
        _, reference = _point("Radau", states, 1e-10, 1e-12, cap, threads)
        methods = ["kvaerno5", "BDF", "dopri5"] if states == sizes[-1] else ["kvaerno5"]
        for method in methods:
            run, y_end = _point(method, states, rtol, atol, cap, threads)
            error = None if y_end is None else scaled_error(y_end, reference, atol)
            rows.append({"states": states, "method": method, "via": RUNS[method][0], "rtol": rtol,
                         "atol": atol, **run, "dense_matrix_gb": states**2 * 8 / 2**30,
                         "error": error})  # fmt: skip
            r = rows[-1]
            print(f"case 11 {states} {method} ({r['via']}): steps {r['steps']} {r['seconds']:.2f} s peak "
                  f"{r['peak_mb']:.0f} MB error {r['error']} {r['failed']}", flush=True)  # fmt: skip
    return rows


def large_stiff_target_rows(result: dict) -> list[tuple[str, str, bool | None]]:
    """Issue 22's 'memory O(N)' line: kvaerno5's peak memory per state stays flat over the sizes (the
    largest size's MB per state at most 1.5x the smallest's) and far under a dense N x N matrix."""
    ours = [r for r in result.get("case11_large_stiff", []) if r["method"] == "kvaerno5" and not r["failed"]]
    if len(ours) < 2:
        return []
    small, large = ours[0], ours[-1]
    per_state = [max(r["peak_mb"], 0.0) / r["states"] for r in (small, large)]
    flat = per_state[1] <= 1.5 * per_state[0] + 1e-4  # + 0.1 KB per state of allocator noise
    measured = (f"{small['states']:,} states: {small['peak_mb']:.0f} MB; {large['states']:,} states: "
                f"{large['peak_mb']:.0f} MB (a dense Newton matrix: {large['dense_matrix_gb']:.0f} GB); "
                f"error {large['error']:.1e} at rtol {large['rtol']:g}")  # fmt: skip
    return [(f"case 11 (issue 22): {large['states']:,}-state stiff reaction-diffusion solved by kvaerno5 "
             "with memory O(N)", measured, flat and large["error"] is not None)]  # fmt: skip


def large_stiff_lines(rows: list[dict]) -> list[str]:
    """Case 11's table."""
    if not rows:
        return []

    out = [
        "## Case 11: a stiff reaction-diffusion system, matrix-free (issue 22)",
        "",
        f"u_t = {C:g} u_xx + u (1 - w), w_t = -{K:g} (w - u^2), reflecting ends, t in [0, {T_END:g}], "
        "float64, forward only, one run each. kvaerno5 uses Newton-Krylov (GMRES, Jacobian-vector "
        "products by differences: no matrix). SciPy's BDF gets the analytic sparse Jacobian (sparse LU). "
        "Peak: RSS above the RSS before the solve. Error: max |y - ref| / (atol + |ref|) at t_end, ref "
        "SciPy Radau at rtol 1e-10 with the sparse Jacobian.",
        "",
        "| states | method | via | rtol / atol | steps | NFE | Newton iters | GMRES products | LU | "
        "time (s) | peak (MB) | dense N x N (GB) | error | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['states']:,} | {r['method']} | {r['via']} | {r['rtol']:g} / {r['atol']:g} | "
            f"{cell(r['steps'], '.0f')} | {r['nfe']:.0f} | {cell(r['newton'], '.0f')} | "
            f"{cell(r['krylov'], '.0f')} | {cell(r['lu'], '.0f')} | {r['seconds']:.2f} | "
            f"{r['peak_mb']:.0f} | {r['dense_matrix_gb']:.3g} | {cell(r['error'], '.1e')} | {r['failed']} |"
        )
    return [*out, ""]
