"""``odeint_checkpoint``: exact gradients of the discrete solve with memory O(checkpoints).

The remedy of Section 6 of the paper for the adjoint's reconstruction error: the forward pass solves
without a graph but records its accepted steps (start and end times) and the state at every
``checkpoint_every``-th step. The backward pass goes over these pieces from last to first, re-runs
each one forward from its checkpoint with autograd, taking exactly the recorded steps (no error
control, no step re-selection), and backpropagates through it. The gradients are those of direct
backpropagation through the solver ("discretize-then-optimize"), with no reverse reconstruction of
the state; memory is the checkpoints plus one piece's graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._setup.captured import warn_uncaptured
from ._setup.flat_func import FlatFunc
from ._setup.layout import StateLayout, UserState
from ._setup.precision import AutocastSetting, solver_precision
from ._setup.validation import PreparedSolve, ToleranceArg, check_adjoint_params, prepare
from .solvers import AdaptiveRKSolver, FixedGridSolver, FlatProblem, Solver
from .solvers.base import StepTrace
from .solvers.fixed_grid import GridStep
from .solvers.runge_kutta import DeviceTableau, rk_step
from .stats import SolverCounts, SolveStats

SUPPORTED = (
    "the explicit adaptive Runge-Kutta methods (dopri5, tsit5, bosh3, dopri8, fehlberg2, adaptive_heun) "
    "and explicit fixed-grid Runge-Kutta (euler, midpoint, heun2, heun3, rk4)"
)


@dataclasses.dataclass
class _CheckpointSetup:
    """What the backward pass needs besides the saved tensors."""

    solver: Solver
    problem: FlatProblem
    user_func: Callable
    layout: StateLayout
    every: int
    counts: SolverCounts  # the forward solve's
    stats: SolveStats | None
    trace: StepTrace | None = None
    autocast: AutocastSetting | None = None  # the caller's autocast at the forward pass (see precision.py)


def odeint_checkpoint(
    func: Callable[[Tensor, UserState], UserState],
    y0: UserState,
    t: Tensor,
    *,
    rtol: ToleranceArg = 1e-7,
    atol: ToleranceArg = 1e-9,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
    event_fn: Callable | None = None,
    checkpoint_every: int = 1,
    adjoint_params: Sequence[Tensor] | None = None,
    stats: SolveStats | None = None,
) -> UserState:
    """Like :func:`odeint`, with the gradients of direct backprop in memory O(checkpoints).

    Use it instead of :func:`odeint_adjoint` when the gradient must be that of the discrete solve
    (no reconstruction error of the state backwards in time, no backward tolerances), and instead
    of :func:`odeint` when the graph of every step does not fit in memory.

    Args:
        checkpoint_every: store the state every this many accepted steps (a positive int). Memory:
            ceil(steps / checkpoint_every) states plus the graph of checkpoint_every steps; the
            backward pass re-evaluates func about as often as the forward pass did.
        adjoint_params: tensors to differentiate with respect to; default ``func.parameters()``.
            Required (use ``()`` if there are none) when func is not an ``nn.Module``.
        event_fn: not supported (raises ValueError); use :func:`odeint` or :func:`odeint_adjoint`.
        stats: a :class:`SolveStats`; ``forward`` is set now (``n_checkpoints``: states stored),
            ``backward`` (the replay's evaluations) when backward runs.

    Other arguments, the return value and the errors are those of :func:`odeint`; gradients with
    respect to y0, the parameters and t (the formulas :func:`odeint` uses) are returned.

    Raises:
        ValueError: also for a method or option whose steps cannot be replayed exactly: supported are
            the explicit adaptive Runge-Kutta family (without ``jump_t``) and explicit fixed-grid RK.
    """
    every = _check_every(checkpoint_every)
    if event_fn is not None:
        raise ValueError(
            "event_fn is not supported by odeint_checkpoint; use odeint or odeint_adjoint for event handling"
        )
    params = check_adjoint_params(func, adjoint_params, "odeint_checkpoint")
    warn_uncaptured(func, params, "odeint_checkpoint")
    counts = SolverCounts()
    if stats is not None:
        stats.backward = SolverCounts()  # filled when this call's backward pass runs
    prepared = prepare(func, y0, t, rtol, atol, method, options, None, counts)
    _check_replayable(prepared, method)
    setup = _CheckpointSetup(
        solver=prepared.solver,
        problem=prepared.problem,
        user_func=func,
        layout=prepared.layout,
        every=every,
        counts=counts,
        stats=stats,
        autocast=prepared.autocast,
    )
    y0_flat = prepared.problem.y0
    with solver_precision(prepared.autocast):
        if _needs_gradient(y0_flat, t, params):
            ys = _OdeintCheckpoint.apply(setup, y0_flat, t, *params)
        else:  # nothing to differentiate (e.g. under torch.no_grad()): no checkpoints to keep
            ys = (
                y0_flat.unsqueeze(0)
                if len(prepared.problem.times) == 1
                else prepared.solver.integrate(prepared.problem)
            )
    if stats is not None:
        stats.forward = counts
    return prepared.layout.unflatten(ys)


def _needs_gradient(y0: Tensor, t: Tensor, params: tuple[Tensor, ...]) -> bool:
    return torch.is_grad_enabled() and (y0.requires_grad or t.requires_grad or len(params) > 0)


def _check_every(checkpoint_every: Any) -> int:
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(
            f"checkpoint_every must be a positive int (store the state every that many steps), "
            f"got {checkpoint_every!r}"
        )
    return checkpoint_every


def _check_replayable(prepared: PreparedSolve, method: str | None) -> None:
    """Only solvers whose accepted steps are re-run bit for bit by :func:`_replay_piece`."""
    solver = prepared.solver
    name = method or "dopri5"
    if isinstance(solver, AdaptiveRKSolver):
        if solver.options.jump_t is not None:
            raise ValueError(
                "options['jump_t'] is not supported by odeint_checkpoint (steps ending on a jump are "
                "evaluated from inside and cannot be replayed yet); use odeint or odeint_adjoint"
            )
        return
    explicit_fixed = (
        isinstance(solver, FixedGridSolver)
        and type(solver).step is FixedGridSolver.step
        and type(solver).start is FixedGridSolver.start
    )
    if not explicit_fixed:
        raise ValueError(f"method={name!r} is not supported by odeint_checkpoint; supported: {SUPPORTED}")


class _OdeintCheckpoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, setup: _CheckpointSetup, y0: Tensor, t: Tensor, *params: Tensor) -> Tensor:
        problem = setup.problem
        trace = StepTrace(every=setup.every)
        with torch.no_grad():
            if len(problem.times) == 1:
                ys = y0.unsqueeze(0).clone()
            else:
                ys = setup.solver.integrate(dataclasses.replace(problem, y0=y0, trace=trace))
        setup.trace = trace
        setup.counts.n_checkpoints = len(trace.states)
        ctx.setup = setup
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        t, ys, *params = ctx.saved_tensors
        setup: _CheckpointSetup = ctx.setup
        counts = SolverCounts()
        func = FlatFunc(setup.user_func, setup.layout, counts, setup.autocast)
        with torch.enable_grad(), solver_precision(setup.autocast):
            grad_solve, grad_params = _backward_pieces(setup, func, tuple(params), grad_ys, counts)
            need_t = ctx.needs_input_grad[2]
            grad_t = _time_gradient(setup, func, t, ys, grad_ys, grad_solve) if need_t else None
        if setup.stats is not None:
            setup.stats.backward = counts
        return (None, grad_solve + grad_ys[0], grad_t, *grad_params)


def _piece_starts(trace: StepTrace, times: list[float]) -> list[tuple[int, int]]:
    """For each checkpoint: (its first step, the index of the first output not emitted before it)."""
    direction = 1.0 if times[-1] > times[0] else -1.0
    starts, next_out = [], 1
    for step, t1 in enumerate(trace.ends):
        if step % trace.every == 0:
            starts.append((step, next_out))
        while next_out < len(times) and direction * (times[next_out] - t1) <= 0:
            next_out += 1
    return starts


def _backward_pieces(
    setup: _CheckpointSetup,
    func: FlatFunc,
    params: tuple[Tensor, ...],
    grad_ys: Tensor,
    counts: SolverCounts,
) -> tuple[Tensor, list[Tensor]]:
    """Replay the pieces from last to first; return dL/dy0 through the solve and dL/dparams."""
    trace, times = setup.trace, setup.problem.times
    a = torch.zeros_like(grad_ys[0])  # dL/d(state at the end of the current piece)
    grad_params = [torch.zeros_like(p) for p in params]
    if trace is None or not trace.starts:  # a single output time: nothing was solved
        return a, grad_params
    pieces = _piece_starts(trace, times)
    for p in range(len(pieces) - 1, -1, -1):
        first, next_out = pieces[p]
        last = pieces[p + 1][0] if p + 1 < len(pieces) else len(trace.starts)
        y_start = trace.states[p].detach().requires_grad_(True)
        outputs, y_end = _replay_piece(setup, func, y_start, first, last, next_out, counts)
        roots = [y for _, y in outputs]
        grads = [grad_ys[i] for i, _ in outputs]
        if p + 1 < len(pieces):  # the next piece's dL/d(its start state)
            roots.append(y_end)
            grads.append(a)
        inputs = (y_start, *params)
        keep = [i for i, r in enumerate(roots) if r.requires_grad]
        if not keep:
            a = torch.zeros_like(a)
            continue
        found = torch.autograd.grad(
            [roots[i] for i in keep], inputs, [grads[i] for i in keep], allow_unused=True
        )
        a = found[0] if found[0] is not None else torch.zeros_like(a)
        for j, g in enumerate(found[1:]):
            if g is not None:
                grad_params[j] = grad_params[j] + g
    return a, grad_params


def _replay_piece(
    setup: _CheckpointSetup,
    func: FlatFunc,
    y: Tensor,
    first: int,
    last: int,
    next_out: int,
    counts: SolverCounts,
) -> tuple[list[tuple[int, Tensor]], Tensor]:
    """Re-run steps [first, last) from their checkpoint with autograd, with the forward's arithmetic.

    Returns the outputs that fall inside the piece as (output index, value), and the end state.
    """
    trace, times, solver = setup.trace, setup.problem.times, setup.solver
    steps = list(zip(trace.starts[first:last], trace.ends[first:last], strict=True))
    counts.n_steps += len(steps)
    counts.n_accepted += len(steps)
    if isinstance(solver, AdaptiveRKSolver):
        values, y = _replay_adaptive(solver, func, y, steps, times, next_out)
    else:
        values, y = _replay_fixed(solver, dataclasses.replace(setup.problem, func=func), y, steps, next_out)
    return list(enumerate(values, start=next_out)), y


def _replay_adaptive(
    solver: AdaptiveRKSolver,
    func: FlatFunc,
    y: Tensor,
    steps: list[tuple[float, float]],
    times: list[float],
    next_out: int,
) -> tuple[list[Tensor], Tensor]:
    """The accepted steps of ``AdaptiveRKSolver._run`` (FSAL reuse, dense output via ``_emit``)."""
    dtab = DeviceTableau(solver.tableau, y.dtype, y.device)
    direction = 1.0 if times[-1] > times[0] else -1.0
    outputs: list[Tensor] = []
    f0 = func(steps[0][0], y)
    for i, (t0, t1) in enumerate(steps):
        dt = t1 - t0
        K, y1 = rk_step(func, dtab, t0, dt, y, f0, None)
        emits = next_out < len(times) and direction * (times[next_out] - t1) <= 0
        f1 = K[-1] if dtab.fsal else (func(t1, y1) if emits or i + 1 < len(steps) else None)
        if emits:
            next_out = solver._emit(func, dtab, t0, dt, t1, y, y1, K, f1, None, times, next_out, outputs)
        y, f0 = y1, f1
    return outputs, y


def _replay_fixed(
    solver: FixedGridSolver, problem: FlatProblem, y: Tensor, steps: list[tuple[float, float]], next_out: int
) -> tuple[list[Tensor], Tensor]:
    """The steps of ``FixedGridSolver.march`` and the interpolation of ``integrate``."""
    times = problem.times
    direction = 1.0 if times[-1] > times[0] else -1.0
    ctx = (DeviceTableau(solver.tableau, y.dtype, y.device), None)  # no stage buffer: autograd is on
    outputs: list[Tensor] = []
    f0 = None
    for g0, g1 in steps:
        y1, f_start = solver.step(ctx, problem, g0, g1 - g0, y, f0)
        record = GridStep(g0, g1, y, y1, f_start)
        while next_out < len(times) and direction * (times[next_out] - g1) <= 0:
            outputs.append(solver.interpolate(problem, record, times[next_out]))
            next_out += 1
        y = y1
        f0 = None if solver.options.perturb else record.f1
    return outputs, y


def _time_gradient(
    setup: _CheckpointSetup, func: FlatFunc, t: Tensor, ys: Tensor, grad_ys: Tensor, grad_solve: Tensor
) -> Tensor:
    """dL/dt as :func:`odeint` gives it: dL/dt_i = <dL/dy_i, f(t_i, y_i)> for i >= 1, and t_0 moves
    y0 by -f(t_0, y_0) dt_0, so dL/dt_0 = -<dL/dy0 through the solve, f(t_0, y_0)>."""
    times = setup.problem.times
    grad_t = torch.zeros(len(times), dtype=ys.dtype, device=ys.device)
    if len(times) == 1:
        return grad_t.to(t.dtype)
    # with options["perturb"], f is taken from inside the solve's span, never at the output time
    side = (1.0 if times[-1] > times[0] else -1.0) if getattr(setup.solver.options, "perturb", False) else 0.0
    with torch.no_grad():
        grad_t[0] = -torch.dot(func(times[0], ys[0], side), grad_solve)
        for i in range(1, len(times)):
            grad_t[i] = torch.dot(func(times[i], ys[i], -side), grad_ys[i])
    return grad_t.to(t.dtype)
