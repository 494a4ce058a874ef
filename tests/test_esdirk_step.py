"""ESDIRK step (simplified Newton): convergence order of kvaerno3/5 and of their error estimates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from neuralode.solvers.esdirk import esdirk_step, newton_fraction
from neuralode.solvers.esdirk_tableaux import KVAERNO3, KVAERNO5


def _logistic(t, y, perturb=0.0):
    return y * (1 - y)


def _exact(t):
    return 1 / (1 + 3 * math.exp(-t))  # y(0) = 1/4


@pytest.mark.parametrize("tab", [KVAERNO3, KVAERNO5], ids=lambda t: t.name)
def test_global_order_and_estimate(tab) -> None:
    y0 = torch.tensor([0.25], dtype=torch.float64)
    errs, ests = [], []
    ns = [64, 128, 256] if tab.order == 3 else [8, 16, 32]  # kvaerno3's error changes sign near n=16
    for n in ns:
        dt, y, est = 2.0 / n, y0, 0.0
        for k in range(n):
            r = esdirk_step(_logistic, tab, k * dt, y, dt, scale=1e-14, max_iters=30)
            assert r.converged
            y, est = r.y1, max(est, float(r.error.abs().max()))
        errs.append(abs(float(y[0]) - _exact(2.0)))
        ests.append(est)
    order = np.polyfit(np.log(ns), -np.log(errs), 1)[0]
    est_order = np.polyfit(np.log(ns), -np.log(ests), 1)[0]  # local error of the order-(p-1) pair
    assert abs(order - tab.order) < 0.4, order
    assert abs(est_order - tab.order) < 0.5, est_order  # local error of a p-1 method: dt^p
    print(tab.name, "global order", order, "estimate order", est_order)


def test_stiff_linear_is_damped() -> None:
    # y' = -1e6 (y - cos t): L-stability gives y1 ~ cos(t1) in one big step, no oscillation
    def f(t, y, perturb=0.0):
        return -1e6 * (y - math.cos(t))

    r = esdirk_step(f, KVAERNO5, 0.0, torch.tensor([5.0], dtype=torch.float64), 1.0, scale=1e-10)
    assert r.converged
    assert abs(float(r.y1[0]) - math.cos(1.0)) < 1e-4  # order reduction (stage order 2) allowed


def test_newton_failure_is_reported() -> None:
    def f(t, y, perturb=0.0):
        return torch.exp(20 * y)

    r = esdirk_step(f, KVAERNO3, 0.0, torch.tensor([1.0], dtype=torch.float64), 10.0, scale=1e-8, max_iters=3)
    assert not r.converged and torch.isnan(r.y1).all()


def test_gradient_through_step_gradcheck() -> None:
    mat = torch.tensor([[-100.0, 1.0], [0.0, -0.5]], dtype=torch.float64)

    def run(y0):
        def f(t, y, perturb=0.0):
            return mat @ y

        return esdirk_step(f, KVAERNO3, 0.0, y0, 0.1, scale=1e-12, max_iters=20).y1

    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (y0,))


@given(st.floats(min_value=1e-14, max_value=1.0))
def test_newton_fraction(rtol: float) -> None:
    """Newton's tolerance fraction: 1e-2 down to rtol 1e-4, sqrt(rtol) below it, never under 10 eps / rtol
    (round-off), and the tensor form equal to the float one (joint and per-sample solves agree)."""
    eps = torch.finfo(torch.float64).eps
    got = newton_fraction(rtol, eps)
    if rtol >= 1e-4:
        assert got == 1e-2
    elif rtol >= 1e-9:
        assert got == pytest.approx(math.sqrt(rtol), rel=1e-15)
    assert min(1e-2, 10 * eps / rtol) <= got <= 1e-2
    assert float(newton_fraction(torch.tensor([rtol], dtype=torch.float64), eps)[0]) == got
