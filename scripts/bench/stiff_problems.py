"""Case 9's stiff problems on the NumPy side, with no torch: SciPy's fields and analytic Jacobians, the
initial states and tolerances, the reference solve, the error measure and the equal-error interpolation.
Shared by the benchmark (stiff_cases.py, which adds the torch fields) and by the cross-check against
diffrax (diffrax_kvaerno.py), which runs in an environment with JAX and without torch."""

from __future__ import annotations

import itertools
import math

import numpy as np


def _robertson_np(t, y):
    return np.array([-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                     3e7 * y[1] ** 2])  # fmt: skip


def _robertson_jac(t, y):
    return np.array([[-0.04, 1e4 * y[2], 1e4 * y[1]],
                     [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
                     [0.0, 6e7 * y[1], 0.0]])  # fmt: skip


def _vdp_np(t, y):
    return np.array([y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]])


def _vdp_jac(t, y):
    return np.array([[0.0, 1.0], [-2000.0 * y[0] * y[1] - 1.0, 1000.0 * (1 - y[0] ** 2)]])


PROBLEMS = {
    "robertson": {"np": _robertson_np, "jac": _robertson_jac, "y0": [1.0, 0.0, 0.0],
                  "atol": 1e-10, "ref_rtol": 1e-11, "ref_atol": 1e-16},
    "van der pol mu=1000": {"np": _vdp_np, "jac": _vdp_jac, "y0": [2.0, 0.0],
                            "atol": 1e-9, "ref_rtol": 1e-12, "ref_atol": 1e-14},
}  # fmt: skip


def scaled_error(y: np.ndarray, ref: np.ndarray, atol: float) -> float:
    """max |y - ref| / (atol + |ref|): the relative error, floored at atol."""
    return float(np.max(np.abs(y - ref) / (atol + np.abs(ref))))


def reference(problem: dict, t_end: float) -> np.ndarray:
    from scipy.integrate import solve_ivp

    sol = solve_ivp(problem["np"], (0.0, t_end), problem["y0"], method="Radau", jac=problem["jac"],
                    rtol=problem["ref_rtol"], atol=problem["ref_atol"])  # fmt: skip
    if not sol.success:
        raise RuntimeError(f"reference solve failed: {sol.message}")
    return sol.y[:, -1]


def log_interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """y at x, log-log linear between the (x, y) points sorted by x (None outside their range)."""
    points = sorted(p for p in points if p[0] > 0 and p[1] > 0)
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= x <= x1:
            if x1 == x0:
                return y0
            w = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.exp(math.log(y0) + w * (math.log(y1) - math.log(y0)))
    return None
