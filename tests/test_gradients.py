"""Gradients: gradcheck in float64, adjoint against backprop-through-solver, forward-mode JVPs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from neuralode import SolveStats, odeint, odeint_adjoint
from tests.problems import Oscillator


class MLPField(nn.Module):
    """A small time-dependent tanh MLP vector field."""

    def __init__(self, dim: int = 2, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t, y):
        return self.net(torch.cat([y, t.expand(*y.shape[:-1], 1)], dim=-1))


def make_problem(batch: int = 3, dim: int = 2):
    func = MLPField(dim).double()
    y0 = torch.randn(batch, dim, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.1], dtype=torch.float64, requires_grad=True)
    return func, y0, t


def loss_of(ys):
    return (ys**2).sum() + ys[1].sin().sum()


TIGHT = {"rtol": 1e-11, "atol": 1e-12}


def functional(func: nn.Module):
    """(y0, *params) -> solution, with func's parameters as explicit inputs (for gradcheck)."""
    names = [name for name, _ in func.named_parameters()]

    def field_with(params):
        return lambda t, y: torch.func.functional_call(func, dict(zip(names, params)), (t, y))

    return names, field_with


@pytest.mark.parametrize(
    ("method", "options"), [("dopri5", None), ("tsit5", None), ("rk4", {"step_size": 0.05})]
)
def test_odeint_passes_gradcheck_for_y0_and_parameters(method, options):
    func, y0, _ = make_problem(batch=2)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    _, field_with = functional(func)

    def fn(y0, *params):
        return odeint(field_with(params), y0, t, method=method, options=options, **TIGHT)

    params = [p.detach().clone().requires_grad_(True) for p in func.parameters()]
    assert torch.autograd.gradcheck(fn, (y0, *params))


@pytest.mark.parametrize("method", ["dopri5", "dopri8"])
def test_odeint_adjoint_passes_gradcheck_for_y0_and_parameters(method):
    func, y0, _ = make_problem(batch=2)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    _, field_with = functional(func)

    def fn(y0, *params):
        return odeint_adjoint(field_with(params), y0, t, method=method, adjoint_params=params, **TIGHT)

    params = [p.detach().clone().requires_grad_(True) for p in func.parameters()]
    assert torch.autograd.gradcheck(fn, (y0, *params))


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dopri8", "bosh3"])
@pytest.mark.parametrize("norm", [None, "seminorm"])
def test_adjoint_matches_direct_backprop_for_y0_parameters_and_t(method, norm):
    func, y0, t = make_problem()
    params = tuple(func.parameters())
    direct = torch.autograd.grad(loss_of(odeint(func, y0, t, method=method, **TIGHT)), (y0, t, *params))
    adjoint_options = None if norm is None else {"norm": norm}
    ys = odeint_adjoint(func, y0, t, method=method, adjoint_options=adjoint_options, **TIGHT)
    adjoint = torch.autograd.grad(loss_of(ys), (y0, t, *params))
    for name, d, a in zip(["y0", "t", *[f"param{i}" for i in range(len(params))]], direct, adjoint):
        rel = float((d - a).norm() / d.norm())
        assert rel < 1e-6, f"{name}: relative difference {rel:.2e}"


def test_gradient_with_respect_to_t_matches_closed_form():
    """y' = a y, y = y0 exp(a (t - t0)): dy(t1)/dt1 = a y(t1) and dy(t1)/dt0 = -a y(t1)."""
    a = -0.7

    class Decay(nn.Module):
        def forward(self, t, y):
            return a * y

    for solve in (odeint, odeint_adjoint):
        t = torch.tensor([0.2, 1.5], dtype=torch.float64, requires_grad=True)
        y0 = torch.tensor([2.0], dtype=torch.float64)
        y1 = solve(Decay(), y0, t, **TIGHT)[-1, 0]
        (g,) = torch.autograd.grad(y1, t)
        expected = a * 2.0 * math.exp(a * 1.3)
        assert abs(float(g[1]) - expected) < 1e-9 and abs(float(g[0]) + expected) < 1e-9, solve.__name__


def test_unused_parameter_gets_a_zero_gradient_from_the_adjoint():
    func = MLPField().double()
    unused = nn.Parameter(torch.ones(3, dtype=torch.float64))
    func.register_parameter("unused", unused)
    y0 = torch.randn(2, 2, dtype=torch.float64)
    ys = odeint_adjoint(func, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=1e-6, atol=1e-8)
    ys.sum().backward()
    assert unused.grad is not None and torch.equal(unused.grad, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("solve", [odeint, odeint_adjoint])
def test_forward_mode_jvp_agrees_with_reverse_mode(solve):
    """<dL/dy0, v> from reverse mode equals the forward-mode directional derivative (torch.func.jvp)."""
    func, y0, _ = make_problem()
    t = torch.tensor([0.0, 0.7, 1.2], dtype=torch.float64)
    v = torch.randn_like(y0)

    def loss_from(y):
        return loss_of(odeint(func, y, t, **TIGHT))

    _, forward_mode = torch.func.jvp(loss_from, (y0.detach(),), (v,))
    (grad,) = torch.autograd.grad(loss_of(solve(func, y0, t, **TIGHT)), (y0,))
    reverse_mode = (grad * v).sum()
    assert abs(float(forward_mode) - float(reverse_mode)) < 1e-7 * max(1.0, abs(float(reverse_mode)))


def test_adjoint_with_tuple_state_matches_direct():
    func = Oscillator()
    x0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([0.0, 0.2], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 4, dtype=torch.float64)
    grads = []
    for solve in (odeint, odeint_adjoint):
        x, v = solve(func, (x0, v0), t, **TIGHT)
        grads.append(torch.autograd.grad((x**2).sum() + v.sum(), (x0, v0, func.k)))
    for d, a in zip(*grads):
        assert float((d - a).norm() / d.norm()) < 1e-6


def test_adjoint_backwards_in_time_matches_direct():
    func, y0, _ = make_problem()
    t = torch.tensor([1.0, 0.3, -0.5], dtype=torch.float64)
    params = tuple(func.parameters())
    d = torch.autograd.grad(loss_of(odeint(func, y0, t, **TIGHT)), (y0, *params))
    a = torch.autograd.grad(loss_of(odeint_adjoint(func, y0, t, **TIGHT)), (y0, *params))
    for x, y in zip(d, a):
        assert float((x - y).norm() / x.norm()) < 1e-6


def test_fixed_grid_adjoint_gradient_converges_to_direct():
    func, y0, _ = make_problem()
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    (d,) = torch.autograd.grad(loss_of(odeint(func, y0, t, **TIGHT)), (y0,))
    errs = []
    for h in (0.1, 0.05):
        ys = odeint_adjoint(func, y0, t, method="rk4", options={"step_size": h})
        (a,) = torch.autograd.grad(loss_of(ys), (y0,))
        errs.append(float((a - d).norm() / d.norm()))
    assert errs[1] < errs[0] / 8  # fourth order: halving h divides the error by ~16


# ----- the adjoint with fixed grids: the reversed grid, perturb -----


def test_adjoint_calls_grid_constructor_once_with_the_reversed_times():
    calls = []

    def constructor(func, y0, t):
        calls.append((t.tolist(), tuple(y0.shape)))
        return torch.linspace(float(t[0]), float(t[-1]), 21, dtype=torch.float64)

    f = torch.nn.Linear(2, 2).double()
    field = torch.nn.Module()
    field.lin = f
    field.forward = lambda t, y: torch.tanh(f(y))
    y0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.33, 1.0], dtype=torch.float64)
    stats = SolveStats()
    ys = odeint_adjoint(field, y0, t, method="rk4", options={"grid_constructor": constructor}, stats=stats)
    ys.sum().backward()
    # called with the user's final state, not the adjoint's augmented one
    assert calls == [([0.0, 0.33, 1.0], (1, 2)), ([1.0, 0.33, 0.0], (1, 2))]
    assert stats.forward.n_steps == 20
    assert stats.backward.n_steps == 20 + 1  # the same 20 steps, one of them cut at the output time 0.33


@pytest.mark.parametrize("method", ["rk4", "explicit_adams", "radauIIA3"])
def test_perturb_never_evaluates_func_at_a_grid_point_forwards_or_backwards(method):
    seen = []
    w = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = w

        def forward(self, t, y):
            seen.append(float(t))
            return -self.w * y * torch.sign(torch.cos(3 * t))

    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    options = {"step_size": 0.25, "perturb": True, "interp": "cubic"}
    ys = odeint_adjoint(Field(), y0, t, method=method, options=options)
    ys.sum().backward()
    grid = {0.0, 0.25, 0.5, 0.75, 1.0}
    assert seen and not grid.intersection(seen)
    assert t.grad is not None


@pytest.mark.parametrize("seminorm", [False, True])
def test_adjoint_carries_step_size_across_intervals(seminorm):
    """The backward pass starts each output interval from the step the previous one ended with: fewer
    backward evaluations than re-selecting the initial step per interval, same gradients to tolerance."""
    torch.manual_seed(0)
    func = MLPField(hidden=32).double()
    y0 = torch.randn(16, 2, dtype=torch.float64)
    t = torch.linspace(0.0, 3.0, 10, dtype=torch.float64)
    weights = torch.randn(10, 16, 2, dtype=torch.float64)
    results = {}
    for carry in (False, True):
        options = {"carry_step_size": carry, **({"norm": "seminorm"} if seminorm else {})}
        func.zero_grad()
        stats = SolveStats()
        ys = odeint_adjoint(func, y0, t, rtol=1e-7, atol=1e-7, adjoint_options=options, stats=stats)
        (ys * weights).sum().backward()
        results[carry] = (stats.nfe_backward, torch.cat([p.grad.flatten() for p in func.parameters()]))
    (nfe_off, grad_off), (nfe_on, grad_on) = results[False], results[True]
    assert nfe_on < nfe_off
    assert (grad_on - grad_off).norm() <= 1e-5 * grad_off.norm()
