"""The fixed-grid Adams and implicit Runge-Kutta methods: orders, stiffness, Newton errors, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import torch

from neuralode import NewtonConvergenceError, SolveStats, odeint, odeint_adjoint
from neuralode.solvers import ImplicitButcherTableau
from neuralode.solvers.adams import adams_weights

from .conftest import ADAMS_METHODS, IMPLICIT_METHODS, method_order
from .problems import LINEAR_Y0, linear_exact, linear_func
from .test_convergence import fitted_order

F64 = torch.float64
NEW_METHODS = ADAMS_METHODS + IMPLICIT_METHODS


def measured_order(method: str, options: dict | None = None) -> float:
    """Fitted slope of the error at t=2 of the linear problem against the step size."""
    f, y0 = linear_func(), torch.tensor(LINEAR_Y0)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    steps = [2.0**-k for k in range(3, 9)]
    errors = []
    for h in steps:
        ys = odeint(
            f, y0, t, method=method, rtol=1e-13, atol=1e-15, options={"step_size": h, **(options or {})}
        )
        errors.append(float(np.abs(ys[-1].numpy() - linear_exact(2.0)).max()))
    return fitted_order(steps, errors)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_new_method_converges_at_its_order(method):
    order = measured_order(method)
    assert abs(order - method_order(method)) < 0.3, f"{method}: measured {order:.2f}"


@pytest.mark.parametrize("max_order", [1, 2, 3, 5])
def test_adams_order_follows_max_order(max_order):
    for method in ADAMS_METHODS:
        assert abs(measured_order(method, {"max_order": max_order}) - max_order) < 0.3


def test_adams_weights_are_the_classical_coefficients_on_a_uniform_grid():
    np.testing.assert_allclose(adams_weights((0.0, -1.0, -2.0, -3.0)), np.array([55, -59, 37, -9]) / 24)
    np.testing.assert_allclose(adams_weights((1.0, 0.0, -1.0, -2.0)), np.array([9, 19, -5, 1]) / 24)


def test_adams_keeps_its_order_on_a_non_uniform_grid():
    f, y0 = linear_func(), torch.tensor(LINEAR_Y0)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    errors, steps = [], []
    for n in (32, 64, 128):
        s = np.linspace(0.0, 1.0, n + 1)
        grid = torch.tensor(2.0 * (s + 0.1 * np.sin(np.pi * s) ** 2 * 0.5), dtype=F64)  # smooth, uneven
        grid[-1] = 2.0
        ys = odeint(f, y0, t, method="implicit_adams", options={"grid_constructor": lambda *_, g=grid: g})
        errors.append(float(np.abs(ys[-1].numpy() - linear_exact(2.0)).max()))
        steps.append(2.0 / n)
    assert abs(fitted_order(steps, errors) - 4) < 0.3


def test_implicit_tableau_rejects_row_sum_mismatch():
    with pytest.raises(ValueError, match="row 0 of a sums"):
        ImplicitButcherTableau.from_lists("bad", c=[0.5], a=[[0.4]], b=[1.0], order=1, l_stable=False)


def test_implicit_tableau_rejects_a_claimed_order_it_does_not_have():
    with pytest.raises(ValueError, match="quadrature condition of order 2"):
        ImplicitButcherTableau.from_lists("bad", c=[1.0], a=[[1.0]], b=[1.0], order=2, l_stable=True)


# ----- a stiff problem: Van der Pol with mu = 1000 -----
MU, T_STIFF = 1000.0, 2.0


def vdp(t, y):
    return torch.stack([y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]])


def graded_grid(func, y0, t):
    """Steps from 1e-4 doubling to 0.1: the fast initial transient is resolved, then large steps."""
    g, h = [float(t[0])], 1e-4
    while g[-1] + h < float(t[-1]):
        g.append(g[-1] + h)
        h = min(2 * h, 0.1)
    return torch.tensor([*g, float(t[-1])], dtype=F64)


@pytest.fixture(scope="module")
def stiff_reference():
    sol = scipy.integrate.solve_ivp(
        lambda t, y: [y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]],
        (0.0, T_STIFF),
        [2.0, 0.0],
        method="Radau",
        rtol=1e-10,
        atol=1e-12,
    )
    stats = SolveStats()
    odeint(vdp, torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, T_STIFF], dtype=F64), rtol=1e-6,
           atol=1e-8, stats=stats)  # fmt: skip
    return sol.y[:, -1], stats.forward.n_steps


@pytest.mark.parametrize("method", IMPLICIT_METHODS)
def test_implicit_method_solves_stiff_van_der_pol_in_far_fewer_steps_than_dopri5(method, stiff_reference):
    ref, dopri5_steps = stiff_reference
    stats = SolveStats()
    y0, t = torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, T_STIFF], dtype=F64)
    options = {"grid_constructor": graded_grid}
    ys = odeint(vdp, y0, t, method=method, rtol=1e-8, atol=1e-10, options=options, stats=stats)
    assert dopri5_steps > 300  # the problem is stiff for an explicit method
    assert stats.forward.n_steps * 10 < dopri5_steps
    np.testing.assert_allclose(ys[-1].numpy(), ref, rtol=2e-3)


def test_newton_failure_raises_and_names_the_time():
    y0, t = torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.5, 1.0], dtype=F64)
    with pytest.raises(NewtonConvergenceError, match=r"did not converge in 1 iterations .* t=0\.5 ") as info:
        odeint(vdp, y0, t, method="radauIIA5", options={"step_size": 0.1, "max_iters": 1})
    assert info.value.t == 0.5


# ----- gradients -----
GRAD_METHODS = ["explicit_adams", "implicit_adams", "radauIIA5", "gl4", "trbdf2", "implicit_euler"]


@pytest.mark.parametrize("method", GRAD_METHODS)
def test_gradcheck_through_the_new_methods(method):
    w = torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 0.8], dtype=F64)

    def solve(y0, w):
        return odeint(lambda t, y: torch.tanh(y @ w.T), y0, t, method=method, rtol=1e-13, atol=1e-15,
                      options={"step_size": 0.1})  # fmt: skip

    assert torch.autograd.gradcheck(solve, (y0, w))


@pytest.mark.parametrize("method", GRAD_METHODS)
def test_adjoint_gradients_match_backprop_through_the_new_methods(method):
    lin = torch.nn.Linear(2, 2).double()
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    func = torch.nn.Sequential(lin, torch.nn.Tanh())
    func.forward = lambda t, y: torch.tanh(lin(y))

    grads = []
    for solve in (odeint, odeint_adjoint):
        ys = solve(func, y0, t, method=method, rtol=1e-12, atol=1e-14, options={"step_size": 0.01})
        grads.append(torch.autograd.grad(ys.square().sum(), (y0, *lin.parameters())))
    # Both are O(h^p) from the exact gradient: measured 1.9% apart for first-order implicit_euler.
    rtol = 5e-2 if method_order(method) == 1 else 1e-3
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-5)


def test_implicit_method_refuses_a_state_too_large_for_dense_newton():
    y0 = torch.zeros(64, 64, dtype=F64)  # 4096 entries, 3 stages: a 12288-row Newton matrix
    with pytest.raises(ValueError, match=r"dense Newton system of 3 x 4096 rows .* use an explicit method"):
        odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=F64), method="radauIIA5",
               options={"step_size": 0.5})  # fmt: skip


def test_jacobian_falls_back_to_rows_when_func_has_no_batching_rule():
    backward_calls = []

    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            backward_calls.append(1)
            return g * 3 * x**2 * (g.sum().item() ** 0)  # .item() on g cannot run under vmap

    y0, t = torch.tensor([0.5, 0.2], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    options = {"step_size": 0.1}
    ys = odeint(lambda t, y: -Cube.apply(y), y0, t, method="radauIIA5", options=options)
    expected = odeint(lambda t, y: -(y**3), y0, t, method="radauIIA5", options=options)
    torch.testing.assert_close(ys, expected)
    assert len(backward_calls) >= 2 * 10  # one backward per Jacobian row, every step
