"""odeint_dense: the solution anywhere in [t0, t1] from each adaptive method's own interpolant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import torch
import torchdiffeq
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from neuralode import odeint, odeint_dense

from .conftest import ADAPTIVE_METHODS, ALL_FIXED_METHODS, method_order

F64 = torch.float64
SETTINGS = settings(
    max_examples=25,
    phases=[Phase.explicit, Phase.generate],
)


def lotka_volterra(t, y):
    return torch.stack([1.5 * y[0] - y[0] * y[1], y[0] * y[1] - 3.0 * y[1]])


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
@pytest.mark.parametrize(("t0", "t1"), [(0.0, 2.0), (2.0, -0.5)], ids=["forward", "backward"])
def test_dense_output_matches_the_closed_form(method, t0, t1):
    y0 = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    dense = odeint_dense(lambda t, y: -y, y0, torch.tensor(t0, dtype=F64), torch.tensor(t1, dtype=F64),
                         method=method, rtol=1e-9, atol=1e-12)  # fmt: skip
    t_eval = torch.linspace(t0, t1, 23, dtype=F64)
    out = dense(t_eval)
    assert out.shape == (23, 3)
    exact = torch.exp(-(t_eval - t0))[:, None] * y0
    tol = 1e-5 if method == "fehlberg2" else 1e-7
    torch.testing.assert_close(out, exact, rtol=tol, atol=tol)
    one = dense(t_eval[7])  # a 0-dim time gives y's shape
    assert one.shape == (3,)
    torch.testing.assert_close(one, out[7], rtol=1e-14, atol=1e-14)


@SETTINGS
@given(
    method=st.sampled_from(ADAPTIVE_METHODS),
    backward=st.booleans(),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6, unique=True),
)
def test_dense_output_equals_odeint_at_the_same_times(method, backward, fractions):
    """Steps are not clamped to intermediate output times (only the last step ends exactly at the last
    one), so odeint(t_eval) ending at t1 takes the very steps odeint_dense stores and interpolates them
    the same way: equal to rounding."""
    t0, t1 = (3.0, 0.0) if backward else (0.0, 3.0)
    times = sorted({t0 + f * (t1 - t0) for f in fractions} - {t0} | {t1}, key=lambda v: abs(v - t0))
    if not times:
        return
    y0 = torch.tensor([1.0, 0.7], dtype=F64)
    rtol = 1e-5 if method_order(method) <= 2 else 1e-7  # equality is asked, not accuracy: fewer steps
    kwargs = {"method": method, "rtol": rtol, "atol": rtol / 100}
    dense = odeint_dense(lotka_volterra, y0, t0, t1, **kwargs)
    ys = odeint(lotka_volterra, y0, torch.tensor([t0, *times], dtype=F64), **kwargs)
    torch.testing.assert_close(dense(torch.tensor(times, dtype=F64)), ys[1:], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(("method", "scipy_method"), [("dopri5", "RK45"), ("dopri8", "DOP853")])
def test_dense_output_agrees_with_scipy_dense_output(method, scipy_method):
    y0 = [1.0, 0.7]
    rhs = lambda t, y: [1.5 * y[0] - y[0] * y[1], y[0] * y[1] - 3.0 * y[1]]  # noqa: E731
    ref = scipy.integrate.solve_ivp(rhs, (0.0, 4.0), y0, method=scipy_method, rtol=1e-12, atol=1e-12,
                                    dense_output=True)  # fmt: skip
    dense = odeint_dense(lotka_volterra, torch.tensor(y0, dtype=F64), 0.0, 4.0, method=method,
                         rtol=1e-9, atol=1e-11)  # fmt: skip
    t_eval = np.linspace(0.0, 4.0, 41)
    np.testing.assert_allclose(dense(torch.tensor(t_eval)).numpy(), ref.sol(t_eval).T, rtol=1e-6, atol=1e-7)


def test_dense_output_agrees_with_torchdiffeq_for_dopri5():
    torch.manual_seed(0)
    a = torch.randn(4, 4) * 0.5
    func = lambda t, y: torch.tanh(y @ a) - 0.1 * y  # noqa: E731
    y0, t0, t1 = torch.randn(3, 4), torch.tensor(0.0), torch.tensor(2.0)
    ours = odeint_dense(func, y0, t0, t1, rtol=1e-6, atol=1e-8)
    theirs = torchdiffeq.odeint_dense(func, y0, t0, t1, rtol=1e-6, atol=1e-8)
    for tau in torch.linspace(0.0, 1.99, 9):  # torchdiffeq's cannot evaluate at t1 itself
        torch.testing.assert_close(ours(tau), theirs(tau), rtol=1e-5, atol=1e-6)


def test_tuple_state_gives_a_tuple_per_time():
    y0 = (torch.tensor(1.0, dtype=F64), torch.ones(2, 3, dtype=F64))
    dense = odeint_dense(lambda t, y: (-y[0], -2 * y[1]), y0, 0.0, 1.0, method="tsit5")
    t_eval = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    a, b = dense(t_eval)
    assert a.shape == (3,) and b.shape == (3, 2, 3)
    torch.testing.assert_close(a, torch.exp(-t_eval), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(b, torch.exp(-2 * t_eval)[:, None, None].expand(3, 2, 3), rtol=1e-7, atol=1e-9)


def test_gradients_by_backprop_through_the_stored_steps_pass_gradcheck():
    def solve(y0, k, tau):
        dense = odeint_dense(lambda t, y: -k * y + torch.sin(t), y0, 0.0, 1.5, method="dopri5",
                             rtol=1e-10, atol=1e-12)  # fmt: skip
        return dense(tau)

    y0 = torch.tensor([0.3, -1.0], dtype=F64, requires_grad=True)
    k = torch.tensor(0.8, dtype=F64, requires_grad=True)
    tau = torch.tensor([0.2, 0.9, 1.4], dtype=F64, requires_grad=True)
    # dy/dtau is the interpolant's derivative, which matches f only to the tolerance: hence the atol
    assert torch.autograd.gradcheck(solve, (y0, k, tau), eps=1e-6, atol=1e-5)
    (d_y0,) = torch.autograd.grad(solve(y0, k, tau)[-1].sum(), y0)
    torch.testing.assert_close(d_y0, torch.full((2,), math.exp(-0.8 * 1.4), dtype=F64), rtol=1e-7, atol=0)


@pytest.mark.parametrize("t_eval", [-0.1, 1.5], ids=["before", "after"])
def test_time_outside_the_span_raises(t_eval):
    dense = odeint_dense(lambda t, y: -y, torch.ones(2), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"t_eval has 1 time\(s\) outside \[t0, t1\]"):
        dense(torch.tensor([0.5, t_eval]))


@pytest.mark.parametrize("method", [*ALL_FIXED_METHODS, "scipy_solver"])
def test_methods_without_their_own_interpolant_are_refused(method):
    with pytest.raises(ValueError, match="odeint_dense needs an adaptive Runge-Kutta method"):
        odeint_dense(lambda t, y: -y, torch.ones(2), 0.0, 1.0, method=method, options=None)


def test_equal_t0_and_t1_is_refused():
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        odeint_dense(lambda t, y: -y, torch.ones(2), 1.0, 1.0)
