"""``odeint``: solve dy/dt = func(t, y) and return y at every requested time (backprop through the solver)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ._setup.event_function import attach_event_gradient
from ._setup.layout import UserState
from ._setup.precision import solver_precision
from ._setup.validation import PreparedSolve, ToleranceArg, prepare
from .stats import SolverCounts, SolveStats


def odeint(
    func: Callable[[Tensor, UserState], UserState],
    y0: UserState,
    t: Tensor,
    *,
    rtol: ToleranceArg = 1e-7,
    atol: ToleranceArg = 1e-9,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
    event_fn: Callable | None = None,
    stats: SolveStats | None = None,
) -> UserState:
    """Integrate ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` and return y at every time in ``t``.

    Gradients flow by backpropagation through the solver's operations (memory grows with the
    number of steps); use :func:`odeint_adjoint` for constant memory.

    Args:
        func: ``func(t, y)`` with t a 0-dim tensor and y shaped like ``y0``; returns dy/dt.
        y0: initial state, a tensor of any shape (e.g. ``(batch, *state)``) or a tuple of tensors.
        t: ``(T,)`` output times, strictly increasing or strictly decreasing; ``t[0]`` is y0's time.
        rtol, atol: relative and absolute tolerance of adaptive methods: a number, or per component one
            per member of a tuple y0 (a list/tuple, e.g. ``[1e-5, 1e-5, 1e20]``; 1e20: no error control on
            that member), or a tensor broadcastable to a tensor y0's shape.
        method: a name from ``neuralode.SOLVERS``; None means "dopri5".
        options: method options (see ``AdaptiveOptions``/``FixedGridOptions``); unknown keys raise.
        event_fn: ``event_fn(t, y) -> tensor``: integrate until any of its entries changes sign; then
            ``t`` is ``[t0]`` or ``[t0, t1]`` (t1 only gives the direction) and the return value is
            ``(event_t, solution)`` with solution ``[y0, y(event_t)]``; gradients flow through event_t.
        stats: a :class:`SolveStats` whose ``forward`` counts are set by this call.

    Returns:
        ``(T, *y0.shape)`` (a tuple of such for a tuple y0); ``t`` of length 1 returns y0 stacked.
        With ``event_fn``: ``(event_t, solution)``, solution of shape ``(2, *y0.shape)``.

    Raises:
        TypeError, ValueError: bad arguments, before any work.
        MaxStepsExceededError, StepSizeUnderflowError, NonFiniteStateError: during the solve.
    """
    counts = SolverCounts()
    if stats is not None:
        stats.backward = SolverCounts()  # no backward pass belongs to this call
    prepared = prepare(func, y0, t, rtol, atol, method, options, event_fn, counts)
    with solver_precision(prepared.autocast):
        return _solve(prepared, t, counts, stats)


def _solve(prepared: PreparedSolve, t: Tensor, counts: SolverCounts, stats: SolveStats | None) -> UserState:
    """The validated solve of :func:`odeint` (an event search, or the output times)."""
    problem, layout = prepared.problem, prepared.layout
    y0_flat = problem.y0
    if prepared.event is not None:
        if t.requires_grad and torch.is_grad_enabled():  # t0 enters as a perturbation of y0 (see below)
            with torch.no_grad():
                f_start = problem.func(problem.times[0], y0_flat)
            shift = (t[0] - t[0].detach()).to(y0_flat.dtype)
            problem = dataclasses.replace(problem, y0=y0_flat - shift * f_start)
        tau, y_tau, k = prepared.solver.integrate_until_event(problem, prepared.event)
        tau_t, y_out = attach_event_gradient(problem.func, prepared.event, tau, y_tau, k)
        if stats is not None:
            stats.forward = counts
        return tau_t.to(t.dtype), layout.unflatten(torch.stack([y0_flat, y_out]))
    if len(problem.times) == 1:
        ys = y0_flat.unsqueeze(0)
    elif t.requires_grad and torch.is_grad_enabled():
        ys = _solve_with_time_gradient(prepared, t)
    else:
        ys = prepared.solver.integrate(problem)
    if stats is not None:
        stats.forward = counts
    return layout.unflatten(ys)


def _solve_with_time_gradient(prepared, t: Tensor) -> Tensor:
    """Solve so that autograd also gives dL/dt, from the exact sensitivities of the flow.

    y(t_i) depends on t_i through dy/dt_i = f(t_i, y_i), and on t_0 like a perturbation of y0 by
    -f(t_0, y_0) dt_0. Both are attached as zero-valued terms whose gradients are those formulas,
    costing one extra evaluation per output time; the values are unchanged.
    """
    problem = prepared.problem
    func, times, y0 = problem.func, problem.times, problem.y0
    dtype = y0.dtype
    with torch.no_grad():
        # with options["perturb"], f is taken from inside the solve's span, never at the output time
        side = (
            (1.0 if times[-1] > times[0] else -1.0)
            if getattr(prepared.solver.options, "perturb", False)
            else 0.0
        )
        f_start = func(times[0], y0, side)
    shift = (t - t.detach()).to(dtype)  # zero, with gradient 1 with respect to t
    y0_moved = y0 - shift[0] * f_start
    problem_moved = dataclasses.replace(problem, y0=y0_moved)
    ys = prepared.solver.integrate(problem_moved)
    with torch.no_grad():
        f_out = torch.stack([func(times[i], ys[i], -side) for i in range(1, len(times))])
    return torch.cat([y0.unsqueeze(0), ys[1:] + shift[1:, None] * f_out])
