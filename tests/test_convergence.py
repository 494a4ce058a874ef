"""Empirical convergence orders of every registered method, against closed-form solutions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralode import SOLVERS, odeint
from neuralode.solvers.runge_kutta import DeviceTableau, dense_eval, dense_stages, rk_step

from .conftest import EXPLICIT_ADAPTIVE_METHODS, FIXED_METHODS
from .problems import LINEAR_Y0, linear_exact, linear_func

T_END = 2.0
STEPS = [2.0**-k for k in range(1, 11)]


def fitted_order(steps: list[float], errors: list[float]) -> float:
    """Slope of log(error) against log(step) over the smallest steps still above round-off."""
    points = [(h, e) for h, e in zip(steps, errors) if 2e-13 < e < 5e-2][-3:]
    assert len(points) >= 3, f"too few points in the asymptotic window: {errors}"
    h, e = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(h, e, 1)[0])


def fixed_step_error(tableau, h: float, weights: str = "b") -> float:
    dtab = DeviceTableau(tableau, torch.float64, torch.device("cpu"))
    if weights == "embedded":  # step with the embedded lower-order weights b - b_err
        dtab.b, dtab.fsal = dtab.b - dtab.b_err, False
    f = linear_func()
    y, t = torch.tensor(LINEAR_Y0), 0.0
    with torch.no_grad():
        for _ in range(round(T_END / h)):
            _, y = rk_step(f, dtab, t, h, y, f(t, y), None)
            t += h
    return float(np.abs(y.numpy() - linear_exact(T_END)).max())


@pytest.mark.parametrize("method", EXPLICIT_ADAPTIVE_METHODS + FIXED_METHODS)
def test_solution_converges_at_the_method_order(method):
    tableau = SOLVERS[method].tableau
    order = fitted_order(STEPS, [fixed_step_error(tableau, h) for h in STEPS])
    assert abs(order - tableau.order) < 0.3, f"{method}: measured {order:.2f}, expected {tableau.order}"


# fehlberg2's embedded first-order solution has an error constant of ~1/512, so its first-order
# behaviour only shows below the step sizes where round-off takes over; dopri8's b_err is the
# 5th-order estimate of DOP853 (its 3rd-order one is b_err_secondary).
EMBEDDED_EXPECTED = {"dopri8": 5}


@pytest.mark.parametrize("method", [m for m in EXPLICIT_ADAPTIVE_METHODS if m != "fehlberg2"])
def test_embedded_solution_converges_at_its_order(method):
    tableau = SOLVERS[method].tableau
    order = fitted_order(STEPS, [fixed_step_error(tableau, h, "embedded") for h in STEPS])
    expected = EMBEDDED_EXPECTED.get(method, tableau.embedded_order)
    assert abs(order - expected) < 0.3, f"{method}: measured {order:.2f}, expected {expected}"


def dense_local_error(tableau, h: float, theta: float, t0: float = 0.2) -> float:
    """Error of the interpolant inside one step started from the exact solution."""
    dtab = DeviceTableau(tableau, torch.float64, torch.device("cpu"))
    f = linear_func()
    y = torch.tensor(linear_exact(t0))
    with torch.no_grad():
        K, y1 = rk_step(f, dtab, t0, h, y, f(t0, y), None)
        f1 = K[-1] if dtab.fsal else f(t0 + h, y1)
        ext = dense_stages(f, dtab, t0, h, y, K, f1, None)
        value = dense_eval(dtab, y, ext, h, [theta])[0]
    return float(np.abs(value.numpy() - linear_exact(t0 + theta * h)).max())


@pytest.mark.parametrize("method", EXPLICIT_ADAPTIVE_METHODS)
@pytest.mark.parametrize("theta", [0.37, 0.81])
def test_dense_output_has_the_interpolant_order(method, theta):
    """Local error of dense output is O(h^(q+1)) for an interpolant of order q (dopri8: q=7)."""
    tableau = SOLVERS[method].tableau
    order = fitted_order(STEPS, [dense_local_error(tableau, h, theta) for h in STEPS])
    expected = tableau.dense.order + 1
    assert abs(order - expected) < 0.3, f"{method}: measured {order:.2f}, expected {expected}"


@pytest.mark.parametrize("method", FIXED_METHODS)
def test_fixed_grid_odeint_converges_through_the_public_api(method):
    f = linear_func()
    t = torch.tensor([0.0, T_END], dtype=torch.float64)
    y0 = torch.tensor(LINEAR_Y0)
    steps = [2.0**-k for k in range(3, 9)]
    errors = []
    for h in steps:
        ys = odeint(f, y0, t, method=method, options={"step_size": h})
        errors.append(float(np.abs(ys[-1].numpy() - linear_exact(T_END)).max()))
    order = fitted_order(steps, errors)
    assert abs(order - SOLVERS[method].tableau.order) < 0.3


def test_cubic_interpolation_beats_linear_between_grid_points():
    f = linear_func()
    y0 = torch.tensor(LINEAR_Y0)
    t = torch.tensor([0.0, 0.33, 0.71, 1.0], dtype=torch.float64)
    exact = np.stack([linear_exact(float(s)) for s in t])
    errs = {}
    for interp in ("linear", "cubic"):
        ys = odeint(f, y0, t, method="rk4", options={"step_size": 0.1, "interp": interp})
        errs[interp] = np.abs(ys.numpy() - exact).max()
    assert errs["cubic"] < errs["linear"] / 10
