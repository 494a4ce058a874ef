"""Solve statistics: NFE equals the number of func calls, step counts add up, and each call's
statistics replace (never accumulate onto) the previous ones.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuralode import (
    Adjoint,
    Direct,
    ODEBlock,
    PassCounts,
    SolverConfig,
    SolveStats,
    odeint,
    odeint_adjoint,
)

from .conftest import ALL_FIXED_METHODS, IMPLICIT_METHODS, METHODS

ALL_METHODS = sorted(m for m in METHODS if m != "scipy_solver")
FIXED_METHODS = ALL_FIXED_METHODS
F64 = torch.float64
TOL = {"rtol": 1e-5, "atol": 1e-7}


def is_fixed(method: str) -> bool:
    return method in ALL_FIXED_METHODS


def options_for(method: str) -> dict | None:
    return {"step_size": 0.05} if is_fixed(method) else None


class CountingField(nn.Module):
    """dy/dt = W y + sin(t) b (a damped rotation with forcing), counting its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=F64))
        self.bias = nn.Parameter(torch.tensor([0.3, -0.2], dtype=F64))
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return y @ self.weight.T + torch.sin(t) * self.bias


def y0_(requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor([1.0, 0.5], dtype=F64, requires_grad=requires_grad)


def t_(requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor([0.0, 0.3, 1.0], dtype=F64, requires_grad=requires_grad)


def assert_step_counts_consistent(counts: PassCounts, method: str) -> None:
    assert counts.n_steps == counts.n_accepted + counts.n_rejected
    assert counts.n_accepted > 0
    if is_fixed(method):
        assert counts.n_rejected == 0


@pytest.mark.parametrize("method", ALL_METHODS)
def test_odeint_forward_nfe_equals_func_calls(method):
    f, stats = CountingField(), SolveStats()
    odeint(f, y0_(), t_(), method=method, options=options_for(method), stats=stats, **TOL)
    assert f.calls > 0
    assert stats.forward.nfe == f.calls
    assert stats.nfe_forward == f.calls
    assert stats.backward == PassCounts()  # odeint never runs a backward solve


@pytest.mark.parametrize("method", ALL_METHODS)
def test_odeint_step_counts_add_up(method):
    stats = SolveStats()
    odeint(CountingField(), y0_(), t_(), method=method, options=options_for(method), stats=stats, **TOL)
    assert_step_counts_consistent(stats.forward, method)


def test_adaptive_rejected_steps_are_counted():
    # A first step far too large for rtol=1e-8 must be rejected at least once.
    f, stats = CountingField(), SolveStats()
    odeint(f, y0_(), t_(), method="dopri5", options={"first_step": 1.0}, stats=stats, rtol=1e-8, atol=1e-10)
    assert stats.forward.n_rejected > 0
    assert stats.forward.n_steps == stats.forward.n_accepted + stats.forward.n_rejected
    assert stats.forward.nfe == f.calls


@pytest.mark.parametrize("method", ALL_METHODS)
def test_odeint_with_t_requiring_grad_counts_the_extra_evaluations(method):
    f_plain, plain = CountingField(), SolveStats()
    odeint(f_plain, y0_(True), t_(), method=method, options=options_for(method), stats=plain, **TOL)
    f, stats = CountingField(), SolveStats()
    t = t_(requires_grad=True)
    ys = odeint(f, y0_(True), t, method=method, options=options_for(method), stats=stats, **TOL)
    assert stats.forward.nfe == f.calls
    # Documented cost of dL/dt: one extra evaluation per output time, in the backward pass (only when
    # dL/dt is asked for), counted there; the forward solve is the plain one.
    assert stats.forward == plain.forward
    calls = f.calls
    ys.sum().backward()
    assert f.calls == calls + len(t)
    assert stats.backward.nfe == len(t) and stats.backward.n_steps == 0
    assert t.grad is not None


@pytest.mark.parametrize("t_requires_grad", [False, True], ids=["t-const", "t-grad"])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_adjoint_forward_and_backward_nfe_equal_func_calls(method, t_requires_grad):
    f, stats = CountingField(), SolveStats()
    t = t_(t_requires_grad)
    ys = odeint_adjoint(f, y0_(True), t, method=method, options=options_for(method), stats=stats, **TOL)
    forward_calls = f.calls
    assert forward_calls > 0
    assert stats.forward.nfe == forward_calls
    assert stats.backward == PassCounts()  # nothing yet
    assert_step_counts_consistent(stats.forward, method)

    (ys**2).sum().backward()
    backward_calls = f.calls - forward_calls
    assert backward_calls > 0
    assert stats.backward.nfe == backward_calls
    assert stats.nfe_backward == backward_calls
    assert stats.forward.nfe == forward_calls  # backward leaves the forward counts alone
    assert_step_counts_consistent(stats.backward, method)
    assert (t.grad is not None) == t_requires_grad


@pytest.mark.parametrize("method", ALL_METHODS)
def test_adjoint_backward_with_t_grad_counts_the_extra_evaluations(method):
    # dL/dt_i = <dL/dy_i, f(t_i, y_i)> costs one evaluation at each output time
    # (dL/dt_0 = -<dL/dy0, f(t_0, y0)>).
    results = {}
    for t_requires_grad in (False, True):
        f, stats = CountingField(), SolveStats()
        t = t_(t_requires_grad)
        ys = odeint_adjoint(f, y0_(True), t, method=method, options=options_for(method), stats=stats, **TOL)
        calls = f.calls
        ys.sum().backward()
        assert stats.backward.nfe == f.calls - calls
        results[t_requires_grad] = stats.backward
    if is_fixed(method):  # same grid either way, so exactly the extra evaluations
        assert results[True].n_steps == results[False].n_steps
        if method not in IMPLICIT_METHODS and method != "implicit_adams":  # iteration counts vary
            assert results[True].nfe == results[False].nfe + len(t)


@pytest.mark.parametrize(("step", "intervals"), [(0.1, 10), (0.3, 4), (0.25, 4), (1.0, 1), (2.0, 1)])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reversed"])
@pytest.mark.parametrize("method", FIXED_METHODS)
def test_fixed_grid_steps_equal_number_of_grid_intervals(method, step, intervals, reverse):
    f, stats = CountingField(), SolveStats()
    t = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=F64)
    odeint(f, y0_(), t, method=method, options={"step_size": step}, stats=stats)
    assert stats.forward.n_steps == intervals
    assert stats.forward.n_accepted == intervals
    assert stats.forward.n_rejected == 0
    assert stats.forward.nfe == f.calls


@pytest.mark.parametrize("method", FIXED_METHODS)
def test_fixed_grid_adjoint_backward_steps_equal_number_of_grid_intervals(method):
    f, stats = CountingField(), SolveStats()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ys = odeint_adjoint(f, y0_(True), t, method=method, options={"step_size": 0.1}, stats=stats)
    ys.sum().backward()
    assert stats.forward.n_steps == 10
    assert stats.backward.n_steps == 10  # the adjoint reuses the forward options
    assert stats.backward.n_rejected == 0


@pytest.mark.parametrize("method", FIXED_METHODS)
def test_grid_constructor_steps_equal_number_of_grid_intervals(method):
    grid = torch.tensor([0.0, 0.05, 0.1, 0.3, 0.35, 0.7, 1.0], dtype=F64)
    f, stats = CountingField(), SolveStats()
    odeint(f, y0_(), t_(), method=method, options={"grid_constructor": lambda func, y0, t: grid}, stats=stats)
    assert stats.forward.n_steps == len(grid) - 1
    assert stats.forward.nfe == f.calls


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_single_output_time_does_no_evaluations(method):
    f, stats = CountingField(), SolveStats()
    stats.forward = PassCounts(nfe=99, n_steps=9, n_accepted=9)
    ys = odeint(
        f, y0_(), torch.tensor([0.5], dtype=F64), method=method, options=options_for(method), stats=stats
    )
    assert ys.shape == (1, 2)
    assert f.calls == 0
    assert stats.forward == PassCounts()


# ---------------------------------------------------------------------------------------------
# ODEBlock


@pytest.mark.parametrize("adjoint", [True, False], ids=["adjoint", "backprop"])
def test_ode_block_nfe_properties_equal_stats_and_func_calls(adjoint):
    f = CountingField()
    solver = SolverConfig("dopri5", rtol=1e-6, atol=1e-8, gradient=Adjoint() if adjoint else Direct())
    block = ODEBlock(f, solver=solver)
    out = block(torch.randn(4, 2, dtype=F64, requires_grad=True))
    forward_calls = f.calls
    assert forward_calls > 0
    assert block.nfe_forward == block.last_stats.forward.nfe == forward_calls
    assert block.nfe_backward == 0

    out.pow(2).sum().backward()
    backward_calls = f.calls - forward_calls
    if adjoint:
        assert backward_calls > 0
    else:
        assert backward_calls == 0  # backpropagation through the solver never calls func
    assert block.nfe_backward == block.last_stats.backward.nfe == backward_calls
    assert block.nfe_forward == forward_calls


@pytest.mark.parametrize("adjoint", [True, False], ids=["adjoint", "backprop"])
def test_ode_block_second_forward_replaces_the_counts(adjoint):
    f = CountingField()
    solver = SolverConfig("dopri5", rtol=1e-6, atol=1e-8, gradient=Adjoint() if adjoint else Direct())
    block = ODEBlock(f, solver=solver)
    block(torch.randn(4, 2, dtype=F64, requires_grad=True)).sum().backward()
    first_forward, first_backward = block.nfe_forward, block.nfe_backward
    assert first_forward > 0

    before = f.calls
    out = block(torch.randn(4, 2, dtype=F64, requires_grad=True) * 3)
    second_forward = f.calls - before
    assert block.nfe_forward == second_forward  # not first_forward + second_forward
    assert block.nfe_backward == 0  # the new call has not run backward yet

    before = f.calls
    out.sum().backward()
    second_backward = f.calls - before
    assert block.nfe_backward == second_backward  # not first_backward + second_backward
    assert block.nfe_forward == second_forward
    assert (second_backward > 0) == adjoint and (first_backward > 0) == adjoint


# ---------------------------------------------------------------------------------------------
# A SolveStats reused across calls


def test_reused_solve_stats_reflects_only_the_last_odeint_call():
    stats = SolveStats()
    f_long, f_short = CountingField(), CountingField()
    odeint(f_long, y0_(), torch.tensor([0.0, 5.0], dtype=F64), stats=stats, **TOL)
    long_counts = stats.forward
    odeint(f_short, y0_(), torch.tensor([0.0, 0.5], dtype=F64), stats=stats, **TOL)
    assert long_counts.nfe == f_long.calls
    assert stats.forward.nfe == f_short.calls
    assert stats.forward.nfe < long_counts.nfe
    assert stats.forward.n_steps == stats.forward.n_accepted + stats.forward.n_rejected


def test_reused_solve_stats_reflects_only_the_last_adjoint_call():
    stats = SolveStats()
    f = CountingField()
    odeint_adjoint(f, y0_(True), torch.tensor([0.0, 5.0], dtype=F64), stats=stats, **TOL).sum().backward()
    first_backward = stats.backward.nfe
    assert first_backward > 0

    before = f.calls
    ys = odeint_adjoint(f, y0_(True), torch.tensor([0.0, 0.5], dtype=F64), stats=stats, **TOL)
    assert stats.forward.nfe == f.calls - before
    before = f.calls
    ys.sum().backward()
    assert stats.backward.nfe == f.calls - before
    assert stats.backward.nfe < first_backward


def test_reused_solve_stats_clears_backward_counts_of_an_earlier_call():
    # SolveStats holds "forward and backward statistics of the last call it was passed to": after
    # a forward-only call, the backward counts of an earlier adjoint call must not remain.
    stats = SolveStats()
    f = CountingField()
    odeint_adjoint(f, y0_(True), t_(), stats=stats, **TOL).sum().backward()
    assert stats.backward.nfe > 0
    odeint(f, y0_(), t_(), stats=stats, **TOL)
    assert stats.backward == PassCounts()


# ---------------------------------------------------------------------------------------------
# seminorm adjoint


class MLPField(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).to(F64)

    def forward(self, t, y):
        return self.net(y)


def adjoint_gradients(adjoint_options):
    torch.manual_seed(0)
    f = MLPField()
    y0 = torch.randn(16, 2, dtype=F64, requires_grad=True)
    stats = SolveStats()
    ys = odeint_adjoint(
        f, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-6, atol=1e-6,
        adjoint_options=adjoint_options, stats=stats,
    )  # fmt: skip
    (ys[-1] ** 2).sum().backward()
    return [y0.grad, *(p.grad for p in f.parameters())], stats


def test_seminorm_adjoint_gives_default_gradients_with_no_more_backward_evaluations():
    grads_default, stats_default = adjoint_gradients(None)
    grads_semi, stats_semi = adjoint_gradients({"norm": "seminorm"})
    assert stats_semi.forward == stats_default.forward  # the forward solve is unaffected
    for g_semi, g_default in zip(grads_semi, grads_default, strict=True):
        assert torch.isfinite(g_semi).all()
        rel = (g_semi - g_default).norm() / g_default.norm()
        assert rel < 1e-5
    assert stats_semi.backward.nfe <= stats_default.backward.nfe
