"""The solver method table: order, measured order, and steps on a stiff problem against dopri5.

Measured order: fitted slope of log(error) against log(step) for y' = M y (a damped rotation coupled
to a decaying mode, exact solution expm(M t) y0) on [0, 2], steps 2^-3..2^-8, errors within
(2e-13, 5e-2). Stiff problem: Van der Pol with mu = 1000 on [0, 10] from (2, 0); the fixed-grid
methods use a graded grid (1e-4 doubling to 0.1, 109 steps), dopri5 and SciPy rtol=1e-6,
atol=1e-8; error is the largest relative error at t=10 against SciPy's Radau at rtol=1e-10.

    python scripts/method_table.py [--out results/method_table.md]
"""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy.integrate
import scipy.linalg
import torch

from neuralode import SOLVERS, SolveStats, odeint
from neuralode.solvers import ALIASES, AdamsSolver, ImplicitRKSolver

F64 = torch.float64
M = np.array([[-0.5, 3.0, 0.0], [-3.0, -0.5, 1.0], [0.0, -1.0, -1.0]])
Y0 = np.array([1.0, 0.0, 0.5])
MU, T_STIFF = 1000.0, 10.0
NEW_METHODS = [
    m for m, cls in SOLVERS.items() if issubclass(cls, AdamsSolver | ImplicitRKSolver) and m not in ALIASES
]


def measured_order(method: str) -> float:
    m = torch.tensor(M)
    exact = scipy.linalg.expm(M * 2.0) @ Y0
    steps = [2.0**-k for k in range(3, 9)]
    errors = []
    for h in steps:
        t = torch.tensor([0.0, 2.0], dtype=F64)
        ys = odeint(lambda t, y: y @ m.T, torch.tensor(Y0), t, method=method, rtol=1e-13, atol=1e-15,
                    options={"step_size": h})  # fmt: skip
        errors.append(float(np.abs(ys[-1].numpy() - exact).max()))
    points = [(h, e) for h, e in zip(steps, errors) if 2e-13 < e < 5e-2][-3:]
    return float(np.polyfit(np.log([p[0] for p in points]), np.log([p[1] for p in points]), 1)[0])


def vdp(t, y):
    return torch.stack([y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]])


def graded_grid(func, y0, t):
    g, h = [float(t[0])], 1e-4
    while g[-1] + h < float(t[-1]):
        g.append(g[-1] + h)
        h = min(2 * h, 0.1)
    return torch.tensor([*g, float(t[-1])], dtype=F64)


def stiff_run(
    method: str, options: dict | None, rtol: float, atol: float, ref: np.ndarray
) -> tuple[str, str, str]:
    stats = SolveStats()
    start = time.perf_counter()
    try:
        ys = odeint(vdp, torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, T_STIFF], dtype=F64),
                    method=method, rtol=rtol, atol=atol, options=options, stats=stats)  # fmt: skip
    except Exception as err:  # report the failure in the table
        return "fails", type(err).__name__, "-"
    seconds = time.perf_counter() - start
    err = float(np.max(np.abs(ys[-1].numpy() - ref) / np.abs(ref)))
    if not math.isfinite(err):
        return "diverges", "-", "-"
    return f"{stats.forward.n_steps} ({stats.forward.nfe} f)", f"{err:.1e}", f"{seconds:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ref = scipy.integrate.solve_ivp(
        lambda t, y: [y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, T_STIFF), [2.0, 0.0], method="Radau",
        rtol=1e-10, atol=1e-12,
    ).y[:, -1]  # fmt: skip
    rows = [
        "| method | order | implicit | L-stable | measured order | stiff VdP steps (f evals) "
        "| rel. error vs Radau | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    steps, err, sec = stiff_run("dopri5", None, 1e-6, 1e-8, ref)
    rows.append(f"| dopri5 (reference) | 5 | no | no | - | {steps} | {err} | {sec} |")
    for name in NEW_METHODS:
        cls = SOLVERS[name]
        implicit = issubclass(cls, ImplicitRKSolver)
        order = cls.tableau.order if implicit else 4
        l_stable = ("yes" if cls.tableau.l_stable else "no (A-stable)") if implicit else "no"
        kind = (
            "yes (Newton)" if implicit else ("corrector (fixed point)" if name == "implicit_adams" else "no")
        )
        steps, err, sec = stiff_run(name, {"grid_constructor": graded_grid}, 1e-8, 1e-10, ref)
        measured = measured_order(name)
        rows.append(f"| {name} | {order} | {kind} | {l_stable} | {measured:.2f} | {steps} | {err} | {sec} |")
    for solver in ("Radau", "BDF", "LSODA"):
        steps, err, sec = stiff_run("scipy_solver", {"solver": solver}, 1e-6, 1e-8, ref)
        rows.append(f"| scipy_solver {solver} | - | yes | - | - | {steps} | {err} | {sec} |")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    note = (
        f"Made by `python scripts/method_table.py` at commit {commit or 'unknown'} on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC ({platform.machine()}, 1 thread). "
        "Fixed-grid implicit methods count the Jacobian's evaluation of f (its rows come from one "
        "batched backward pass)."
    )
    caption = "\n\n".join(__doc__.strip().split("\n\n")[:2])
    text = "\n".join([caption, "", *rows, "", note, ""])
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
