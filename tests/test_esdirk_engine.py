"""kvaerno3/kvaerno5 on the shared adaptive engine: options, Newton statistics, stops, callbacks, events,
Newton failure as a rejection, gradients (direct and adjoint) against finite differences."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from neuralode import SolveStats, odeint, odeint_adjoint, odeint_checkpoint, odeint_event
from neuralode.errors import StepSizeUnderflowError
from neuralode.solvers import SOLVERS
from neuralode.solvers.controllers import PIController
from neuralode.solvers.esdirk import SMALL_SYSTEM

from .conftest import ESDIRK_METHODS

F64 = torch.float64
STIFF = torch.tensor([[-1000.0, 1.0], [0.0, -1.0]], dtype=F64)  # eigenvalues -1000 and -1
# The adjoint's backward solve re-integrates the state backwards, where a fast decaying mode grows
# as exp(|lambda| t): its gradients need intervals with |lambda| dt small (here exp(5) per interval).
MILD = torch.tensor([[-100.0, 1.0], [0.0, -1.0]], dtype=F64)
GRAD_TIMES = [0.0, 0.05, 0.1]


def stiff_linear(t, y):
    return STIFF @ y


def stiff_exact(t: float, y0: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_exp(STIFF * t) @ y0


# ----- options -----
@pytest.mark.parametrize("method", ESDIRK_METHODS)
def test_the_pi_controller_is_the_default_and_integral_can_be_chosen(method):
    cls = SOLVERS[method]
    assert isinstance(cls(cls.options_class.parse(None, method)).controller(), PIController)
    integral = cls(cls.options_class.parse({"controller": "integral"}, method)).controller()
    assert not isinstance(integral, PIController)
    assert SOLVERS["dopri5"].options_class.parse(None, "dopri5").controller == "integral"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"linear_solver": "lu"}, r"options\['linear_solver'\] must be one of \('auto', 'dense', 'krylov'\)"),
        (
            {"jvp": "exact"},
            r"options\['jvp'\] must be one of \('auto', 'forward', 'backward', 'differences'\)",
        ),
        ({"krylov_restart": 0}, r"options\['krylov_restart'\] must be an int in \[1, 1000\]"),
        ({"max_iters": 0}, r"options\['max_iters'\] must be an int in \[1, 10000\]"),
        ({"max_iters": 2.5}, r"options\['max_iters'\]"),
        ({"step_size": 0.1}, r"unknown key\(s\) 'step_size' for method='kvaerno5'"),
    ],
)
def test_bad_options_name_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        odeint(stiff_linear, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="kvaerno5",
               options=options)  # fmt: skip


@pytest.mark.parametrize("linear_solver", ["dense", "auto", "krylov"])
def test_dense_and_auto_linear_solvers_agree(linear_solver):
    y0, t = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64)
    ys = odeint(stiff_linear, y0, t, method="kvaerno5", rtol=1e-8, atol=1e-10,
                options={"linear_solver": linear_solver})  # fmt: skip
    torch.testing.assert_close(ys[-1], stiff_exact(2.0, y0), rtol=1e-6, atol=1e-9)


def test_a_dense_newton_matrix_beyond_the_limit_is_refused_before_any_evaluation():
    calls = []

    def func(t, y):
        calls.append(t)
        return -y

    with pytest.raises(
        ValueError,
        match=r"linear_solver'\]='dense' .* N = 6001 entries.*use options\['linear_solver'\]='krylov'",
    ):
        odeint(func, torch.ones(6001, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="kvaerno3",
               options={"linear_solver": "dense"})  # fmt: skip
    assert calls == []


def test_odeint_checkpoint_refuses_jump_t_with_the_esdirk_methods():
    """odeint_checkpoint replays kvaerno3/5 (tests/test_esdirk_checkpoint.py), but not steps ending on a
    jump, as for the explicit methods."""
    lin = nn.Linear(2, 2).double()
    with pytest.raises(ValueError, match=r"options\['jump_t'\] is not supported by odeint_checkpoint"):
        odeint_checkpoint(lambda t, y: lin(y), torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                          method="kvaerno5", options={"jump_t": torch.tensor([0.5])},
                          adjoint_params=tuple(lin.parameters()))  # fmt: skip


# ----- stiffness, statistics, Jacobian reuse -----
@pytest.mark.parametrize("copies", [1, SMALL_SYSTEM // 2 + 1], ids=["small", "large"])
@pytest.mark.parametrize("method", ESDIRK_METHODS)
def test_stiff_linear_in_few_steps_with_newton_counts(method, copies):
    """``copies`` independent copies of the 2-state problem: up to SMALL_SYSTEM entries the LU is rebuilt
    at every change of dt, above it reused while dt moves by at most 20% (newton_reuse)."""
    y0, t = torch.tensor([1.0, 2.0], dtype=F64).repeat(copies), torch.tensor([0.0, 20.0], dtype=F64)

    def field(t, y):
        return stiff_linear(t, y.view(copies, 2).T).T.reshape(-1)

    stats, explicit = SolveStats(), SolveStats()
    ys = odeint(field, y0, t, method=method, rtol=1e-5, atol=1e-8, stats=stats)
    torch.testing.assert_close(ys[-1], stiff_exact(20.0, y0[:2]).repeat(copies), rtol=1e-4, atol=1e-8)
    odeint(field, y0, t, method="dopri5", rtol=1e-5, atol=1e-8, stats=explicit)
    counts = stats.forward
    # dopri5 is held to steps of ~3e-3 by stability (measured 6,069; kvaerno3 482, kvaerno5 72)
    assert counts.n_accepted < explicit.forward.n_accepted / 10
    implicit_stages = SOLVERS[method].tableau.num_stages - 1
    assert counts.n_newton_iters >= implicit_stages * counts.n_accepted
    # f is linear: the first Jacobian is exact and Newton contracts at once, so it is never renewed; the
    # LU is refactorised at every step whose dt differs from the last (small), or only when dt moves by
    # more than 20% (large: the step grows from ~1e-6 to ~1)
    if copies == 1:
        assert 1 <= counts.n_factorizations <= counts.n_steps
        assert counts.n_factorizations > counts.n_steps / 2
    else:
        assert 1 <= counts.n_factorizations < counts.n_steps / 2
    assert counts.nfe == counts.n_newton_iters + 3  # f(t0, y0), the initial-step probe, one Jacobian
    assert explicit.forward.n_newton_iters == explicit.forward.n_factorizations == 0


def test_a_func_without_autograd_graph_gets_a_difference_jacobian():
    """A func that detaches (as the adjoint's augmented dynamics do): forward differences stand in for
    the autograd Jacobian, so the stiff problem still takes the same few steps (a zero Jacobian would
    leave Newton as a fixed-point iteration, stable only for steps under ~1e-3)."""
    y0, t = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 10.0], dtype=F64)
    graph, detached = SolveStats(), SolveStats()
    expected = odeint(stiff_linear, y0, t, method="kvaerno5", rtol=1e-6, atol=1e-9, stats=graph)
    ys = odeint(lambda t, y: stiff_linear(t, y).detach(), y0, t, method="kvaerno5", rtol=1e-6, atol=1e-9,
                stats=detached)  # fmt: skip
    torch.testing.assert_close(ys, expected, rtol=1e-6, atol=1e-9)
    assert detached.forward.n_accepted <= 1.2 * graph.forward.n_accepted


class Cubic(nn.Module):
    """dy/dt = -100 y^3, y(0) = 1: y(t) = 1 / sqrt(1 + 200 t); records attempted and rejected steps."""

    def __init__(self) -> None:
        super().__init__()
        self.attempted, self.rejected = [], []
        self.callback_step = lambda t0, y0, dt: self.attempted.append(float(dt))
        self.callback_reject_step = lambda t0, y0, dt: self.rejected.append(float(dt))

    def forward(self, t, y):
        return -100.0 * y**3


def test_newton_failure_rejects_and_retries_four_times_shorter():
    """From a first step of 1 the Jacobian at y = 1 (-300) is far from the one at the stages (~-3), so
    3 iterations cannot converge: each failure is a rejection and a retry exactly 4x shorter (the error
    control could shrink by at most 2x here: dfactor=0.5), never an exception."""
    f, stats = Cubic(), SolveStats()
    ys = odeint(f, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="kvaerno5",
                rtol=1e-6, atol=1e-9, stats=stats,
                options={"max_iters": 3, "first_step": 1.0, "dfactor": 0.5})  # fmt: skip
    assert float(ys[-1, 0]) == pytest.approx(1 / math.sqrt(201), rel=1e-5)
    assert f.attempted[:3] == [1.0, 0.25, 0.0625] and f.rejected[:2] == [1.0, 0.25]
    assert stats.forward.n_rejected == len(f.rejected) >= 2


def test_step_size_underflow_names_the_time():
    # y' = y^2 from y(0) = 1 blows up at t = 1: steps shrink towards it until they no longer change t
    with pytest.raises(StepSizeUnderflowError) as info:
        odeint(lambda t, y: y**2, torch.ones(1, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64),
               method="kvaerno5", options={"max_num_steps": 100_000})  # fmt: skip
    assert info.value.t == pytest.approx(1.0, abs=1e-3)
    assert f"t={info.value.t!r}" in str(info.value)


# ----- the engine's stops, callbacks and events -----
def test_jump_t_ends_a_step_on_the_discontinuity():
    """y' = -50 (y - u(t)) with u jumping from 0 to 1 at t = 0.5: closed form on both sides."""

    def func(t, y):
        return -50.0 * (y - (t >= 0.5).to(y.dtype))

    def exact(t):
        return math.exp(-50 * t) if t < 0.5 else 1 - (1 - math.exp(-25)) * math.exp(-50 * (t - 0.5))

    t = torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0], dtype=F64)
    with_jump, without = SolveStats(), SolveStats()
    options = {"jump_t": torch.tensor([0.5], dtype=F64)}
    ys = odeint(func, torch.ones(1, dtype=F64), t, method="kvaerno5", rtol=1e-7, atol=1e-10, options=options,
                stats=with_jump)  # fmt: skip
    expected = torch.tensor([[exact(float(v))] for v in t], dtype=F64)
    torch.testing.assert_close(ys, expected, rtol=1e-5, atol=1e-6)
    odeint(func, torch.ones(1, dtype=F64), t, method="kvaerno5", rtol=1e-7, atol=1e-10, stats=without)
    assert with_jump.forward.n_rejected < without.forward.n_rejected  # no steps failing across the jump


class Recording(nn.Module):
    """dy/dt = STIFF y, recording the accept/reject callbacks as (t0, dt)."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted, self.rejected, self.attempted = [], [], []
        self.callback_step = lambda t0, y0, dt: self.attempted.append((float(t0), float(dt)))
        self.callback_accept_step = lambda t0, y0, dt: self.accepted.append((float(t0), float(dt)))
        self.callback_reject_step = lambda t0, y0, dt: self.rejected.append((float(t0), float(dt)))

    def forward(self, t, y):
        return STIFF @ y


def test_callbacks_match_the_counts_and_step_t_is_stepped_to():
    f, stats = Recording(), SolveStats()
    odeint(f, torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 3.0], dtype=F64), method="kvaerno5",
           rtol=1e-6, atol=1e-9, stats=stats,
           options={"first_step": 1.0, "step_t": torch.tensor([0.123, 2.0], dtype=F64)})  # fmt: skip
    counts = stats.forward
    assert len(f.attempted) == counts.n_steps
    assert len(f.accepted) == counts.n_accepted
    assert len(f.rejected) == counts.n_rejected >= 1  # a first step of 1 through the fast transient
    for (t0, dt), (t1, _) in itertools.pairwise(f.accepted):
        assert t0 + dt == pytest.approx(t1, abs=1e-12)
    starts = {t0 for t0, _ in f.accepted}
    assert 0.123 in starts and 2.0 in starts  # some step ends exactly on each step_t


@pytest.mark.parametrize("method", ESDIRK_METHODS)
def test_odeint_event_finds_the_crossing_of_a_stiff_solution(method):
    """y' = -1000 (y - cos t) follows cos t closely: the event y = 0.5 is near t = pi/3 (plus the lag
    sin(t)/1000 of the slow manifold y ~ cos t + sin t / 1000)."""

    def func(t, y):
        return -1000.0 * (y - torch.cos(t))

    event_t, ys = odeint_event(func, torch.ones(1, dtype=F64), torch.tensor(0.0, dtype=F64),
                               event_fn=lambda t, y: y[0] - 0.5, method=method, rtol=1e-8,
                               atol=1e-10)  # fmt: skip
    # cos(tau) + sin(tau)/1000 = 0.5 to first order in 1/1000
    tau0 = math.pi / 3
    expected = tau0 + math.sin(tau0) / 1000 / math.sin(tau0)
    assert float(event_t) == pytest.approx(expected, abs=2e-6)
    assert float(ys[-1, 0]) == pytest.approx(0.5, abs=1e-7)


# ----- gradients -----
class StiffLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(MILD.clone())

    def forward(self, t, y):
        return self.a @ y


def _loss(solve, func, y0, method, **kwargs):
    ys = solve(func, y0, torch.tensor(GRAD_TIMES, dtype=F64), method=method, rtol=1e-12, atol=1e-14, **kwargs)
    return (ys[1:] ** 2).sum() + ys[-1, 0]


def _finite_differences(func, y0, method):
    """Central differences of the loss with respect to y0 and every entry of func.a (h = 1e-4: the
    solver's 1e-12 error, divided by h, stays under 1e-8)."""
    h = 1e-4
    grads = []
    for tensor in (y0, func.a):
        g = torch.zeros_like(tensor)
        for index in itertools.product(*(range(n) for n in tensor.shape)):
            values = []
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    tensor[index] += sign * h
                    values.append(float(_loss(odeint, func, y0, method)))
                    tensor[index] -= sign * h
            g[index] = (values[0] - values[1]) / (2 * h)
        grads.append(g)
    return grads


# kvaerno5 only: kvaerno3 runs the same step code, and at rtol=1e-12 its third order takes minutes
@pytest.mark.parametrize("solve", [odeint, odeint_adjoint], ids=["odeint", "adjoint"])
def test_gradients_match_finite_differences_on_a_stiff_linear_problem(solve):
    method = "kvaerno5"
    func = StiffLinear()
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    stats = SolveStats()
    loss = _loss(solve, func, y0, method, stats=stats)
    grads = torch.autograd.grad(loss, (y0, func.a))
    expected = _finite_differences(func, y0.detach().clone(), method)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    if solve is odeint_adjoint:  # the backward solve is kvaerno5 too, with its own Newton work
        assert stats.backward.n_newton_iters > 0 and stats.backward.n_factorizations > 0
