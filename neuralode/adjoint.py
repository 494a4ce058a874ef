"""``odeint_adjoint``: the adjoint method (Algorithm 1 of Chen et al., 2018).

The forward pass solves without recording a graph. The backward pass integrates the augmented
state [z, a, dL/dtheta, dL/dt] from t_N back to t_0, where a = dL/dz obeys da/dt = -a^T df/dz,
dL/dtheta accumulates -a^T df/dtheta and dL/dt accumulates -a^T df/dt; at every output time the
loss gradient is added to a as a jump. Memory does not grow with the number of solver steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ._setup.callbacks import StepCallbacks, make_callbacks
from ._setup.captured import warn_uncaptured
from ._setup.event_function import attach_event_gradient
from ._setup.flat_func import FlatFunc
from ._setup.layout import StateLayout, UserState, time_tensor
from ._setup.norms import RMSNorm, UserNorm
from ._setup.precision import AutocastSetting, solver_precision
from ._setup.validation import ToleranceArg, backward_tolerances, check_adjoint_params, make_solver, prepare
from .errors import SolverError
from .solvers import FlatProblem, Solver
from .solvers.base import StepHint
from .solvers.fixed_grid import check_grid, check_grid_length
from .solvers.options import resolve_max_num_steps
from .stats import SolverCounts, SolveStats


@dataclasses.dataclass
class _AdjointSetup:
    """Everything the backward pass needs, validated before the forward solve."""

    forward_solver: Solver
    forward_problem: FlatProblem
    user_func: Callable
    layout: StateLayout
    solver: Solver
    rtol: (
        float | Tensor
    )  # per element of [y, a, dL/dparams, dL/dt] when a tensor (checks.backward_tolerances)
    atol: float | Tensor
    norm: Callable | str | None
    stats: SolveStats | None
    callbacks: StepCallbacks | None = None
    precomputed: Tensor | None = None  # the forward solution, when an event search already found it
    autocast: AutocastSetting | None = None  # the caller's autocast at the forward pass (see precision.py)


def odeint_adjoint(
    func: Callable[[Tensor, UserState], UserState],
    y0: UserState,
    t: Tensor,
    *,
    rtol: ToleranceArg = 1e-7,
    atol: ToleranceArg = 1e-9,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
    event_fn: Callable | None = None,
    adjoint_rtol: ToleranceArg | None = None,
    adjoint_atol: ToleranceArg | None = None,
    adjoint_method: str | None = None,
    adjoint_options: Mapping[str, Any] | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
    stats: SolveStats | None = None,
) -> UserState:
    """Like :func:`odeint`, with gradients from the adjoint method in O(1) memory in the steps.

    Args:
        adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options: the backward solve's settings;
            each defaults to the forward one (options without "norm"). The tolerances take the forms
            of ``rtol``/``atol`` (per member of y0 or per element): those entries apply to the state
            and to its adjoint dL/dy, and the parameter and time integrals take the smallest entry.
            ``adjoint_options={"norm": "seminorm"}`` controls the error on the state and adjoint only,
            not on the parameter integrals: fewer backward steps, same gradients to tolerance.
        adjoint_params: tensors to differentiate with respect to; default ``func.parameters()``.
            Required (use ``()`` if there are none) when func is not an ``nn.Module``.
        stats: a :class:`SolveStats`; ``forward`` is set now, ``backward`` when backward runs.

    Other arguments, the return value and the errors are those of :func:`odeint`. Gradients with
    respect to y0, every parameter (zero if unused) and every entry of t are returned.
    """
    params = check_adjoint_params(func, adjoint_params, "odeint_adjoint")
    warn_uncaptured(func, params, "odeint_adjoint")

    counts = SolverCounts()
    if stats is not None:
        stats.backward = SolverCounts()  # filled when this call's backward pass runs
    prepared = prepare(func, y0, t, rtol, atol, method, options, event_fn, counts)
    if adjoint_options is None and options is not None:
        adjoint_options = {k: v for k, v in options.items() if k != "norm"}
    solver = make_solver(adjoint_method or method, adjoint_options, arg="adjoint_method")
    adjoint_tols = backward_tolerances(
        solver, prepared.layout, rtol, atol, adjoint_rtol, adjoint_atol, [p.numel() for p in params]
    )
    setup = _AdjointSetup(
        forward_solver=prepared.solver,
        forward_problem=prepared.problem,
        user_func=func,
        layout=prepared.layout,
        solver=solver,
        rtol=adjoint_tols[0],
        atol=adjoint_tols[1],
        norm=getattr(solver.options, "norm", None),
        stats=stats,
        callbacks=make_callbacks(
            func,
            _augmented_unflatten(prepared.layout, params),
            solver.supported_callbacks,
            adjoint_method or method or "dopri5",
            prepared.layout.dtype,
            suffix="_adjoint",
        ),
        autocast=prepared.autocast,
    )
    if prepared.event is not None:
        with solver_precision(prepared.autocast):
            return _adjoint_until_event(setup, prepared, t, params, counts)
    with solver_precision(prepared.autocast):
        ys = _OdeintAdjoint.apply(setup, prepared.problem.y0, t, *params)
    if stats is not None:
        stats.forward = counts
    return prepared.layout.unflatten(ys)


def _adjoint_until_event(setup: _AdjointSetup, prepared, t: Tensor, params: tuple[Tensor, ...], counts):
    """Find the event without a graph, then treat [t0, event_t] as an ordinary adjoint solve."""
    problem = prepared.problem
    with torch.no_grad():
        tau, y_tau, k = prepared.solver.integrate_until_event(problem, prepared.event)
    setup.forward_problem = dataclasses.replace(problem, times=[problem.times[0], tau])
    setup.precomputed = torch.stack([problem.y0.detach(), y_tau])
    t_pair = torch.stack([t[0], torch.tensor(tau, dtype=t.dtype, device=t.device)])
    ys = _OdeintAdjoint.apply(setup, problem.y0, t_pair, *params)
    tau_t, y_out = attach_event_gradient(problem.func, prepared.event, tau, ys[-1], k)
    if setup.stats is not None:
        setup.stats.forward = counts
    return tau_t.to(t.dtype), prepared.layout.unflatten(torch.stack([ys[0], y_out]))


class _OdeintAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, setup: _AdjointSetup, y0: Tensor, t: Tensor, *params: Tensor) -> Tensor:
        problem = setup.forward_problem
        with torch.no_grad():
            if setup.precomputed is not None:
                ys = setup.precomputed
            elif len(problem.times) == 1:
                ys = y0.unsqueeze(0).clone()
            else:
                ys = setup.forward_solver.integrate(dataclasses.replace(problem, y0=y0))
        ctx.setup = setup
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        t, ys, *params = ctx.saved_tensors
        setup: _AdjointSetup = ctx.setup
        need_t = ctx.needs_input_grad[2]
        counts = SolverCounts()
        with solver_precision(setup.autocast):
            grad_y0, grad_t, grad_params = _backward_solve(
                setup, t, ys, tuple(params), grad_ys, need_t, counts
            )
        if setup.stats is not None:
            setup.stats.backward = counts
        return (None, grad_y0, grad_t, *grad_params)


def _backward_solve(
    setup: _AdjointSetup,
    t: Tensor,
    ys: Tensor,
    params: tuple[Tensor, ...],
    grad_ys: Tensor,
    need_t: bool,
    counts: SolverCounts,
) -> tuple[Tensor, Tensor | None, list[Tensor]]:
    """Algorithm 1, interval by interval from the last output time to the first."""
    times = setup.forward_problem.times
    n, dtype, device = ys.shape[1], ys.dtype, ys.device
    func = FlatFunc(setup.user_func, setup.layout, counts, setup.autocast)
    param_sizes = [p.numel() for p in params]
    n_params = sum(param_sizes)
    segments = (n, n, *param_sizes, *((1,) if need_t else ()))
    size = sum(segments)  # a per-element tolerance has a slot for dL/dt last: dropped without it
    rtol, atol = (tol[:size] if isinstance(tol, Tensor) else tol for tol in (setup.rtol, setup.atol))
    dynamics = _augmented_dynamics(func, params, n, need_t, dtype)
    norm = _adjoint_norm(setup.norm, segments, ys, params, need_t)

    # with options["perturb"], f at an output time is taken from inside the forward interval ending there
    side = (
        (1.0 if times[-1] > times[0] else -1.0)
        if getattr(setup.forward_solver.options, "perturb", False)
        else 0.0
    )
    grids = _backward_grids(setup, ys, t)
    a = grad_ys[-1].clone()
    a_params = torch.zeros(n_params, dtype=dtype, device=device)
    a_t = torch.zeros(1, dtype=dtype, device=device)
    grad_t = torch.zeros(len(times), dtype=dtype, device=device) if need_t else None
    # each interval starts from the step size the previous one ended with (no initial-step selection)
    hint = StepHint(clamp_end=True) if getattr(setup.solver.options, "carry_step_size", False) else None
    for i in range(len(times) - 1, 0, -1):
        if need_t:  # dL/dt_i = <dL/dy_i, f(t_i, y_i)>; it also enters the running a_t
            with torch.no_grad():
                d_ti = torch.dot(func(times[i], ys[i], -side), grad_ys[i])
            grad_t[i] = d_ti
            a_t = a_t - d_ti
        aug = torch.cat([ys[i], a, a_params, *((a_t,) if need_t else ())])
        problem = FlatProblem(
            func=dynamics,
            y0=aug,
            times=[times[i], times[i - 1]],
            rtol=rtol,
            atol=atol,
            norm=norm,
            counts=counts,
            user_func=dynamics,
            user_y0=aug,
            t_tensor=torch.tensor([times[i], times[i - 1]], dtype=t.dtype),
            callbacks=setup.callbacks,
            grid=None if grids is None else grids[i - 1],
            step_hint=hint,
        )
        with torch.no_grad():
            try:
                aug = setup.solver.integrate(problem)[-1]
            except SolverError as err:
                raise _backward_error(err, times[i], times[i - 1], grad_ys) from err
        a = aug[n : 2 * n] + grad_ys[i - 1]  # the state itself restarts from the saved forward value
        a_params = aug[2 * n : 2 * n + n_params]
        if need_t:
            a_t = aug[-1:]
    if need_t:
        grad_t[0] = a_t[0]
        grad_t = grad_t.to(t.dtype)
    grad_params = [g.view_as(p).to(p.dtype) for g, p in zip(a_params.split(param_sizes), params, strict=True)]
    return a, grad_t, grad_params


def _backward_error(err: SolverError, start: float, end: float, grad_ys: Tensor) -> SolverError:
    """The same error class, saying that it happened in the backward pass and what can be changed."""
    cause = ""
    if not bool(torch.isfinite(grad_ys).all()):
        cause = (
            " The gradient flowing into odeint_adjoint (dL/dy at the output times) already contains NaN or "
            "inf: check the loss."
        )
    message = (
        f"in odeint_adjoint's backward pass (the adjoint solve from t={start!r} back to t={end!r}): {err}"
        f"{cause} The backward solve has its own settings: try adjoint_rtol/adjoint_atol, or adjoint_method "
        "(and adjoint_options)."
    )
    return type(err)(message, err.t)


def _backward_grids(setup: _AdjointSetup, ys: Tensor, t: Tensor) -> list[list[float]] | None:
    """For a backward ``grid_constructor``: call it once with the reversed times (and the user's func
    and final state), then cut the grid at the output times: interval i runs from t[i+1] to t[i]."""
    constructor = getattr(setup.solver.options, "grid_constructor", None)
    if constructor is None:
        return None
    times = setup.forward_problem.times
    reversed_t = torch.tensor(times[::-1], dtype=t.dtype, device=t.device)
    grid = constructor(setup.user_func, setup.layout.unflatten(ys[-1]), reversed_t)
    what = "adjoint_options['grid_constructor'] (called with the reversed t)"
    if not isinstance(grid, Tensor) or grid.dim() != 1 or grid.numel() < 2:
        raise ValueError(f"{what} must return a 1-D tensor with at least 2 times")
    max_steps = resolve_max_num_steps(setup.solver.options.max_num_steps, event=False)
    check_grid_length(grid.numel() - 1, max_steps, what)
    values = grid.detach().cpu().double().tolist()
    check_grid(values, times[-1], times[0], what)
    direction = 1.0 if times[0] > times[-1] else -1.0  # of the backward solve
    pieces = []
    for i in range(len(times) - 1):
        start, end = times[i + 1], times[i]
        inside = [v for v in values if 0 < direction * (v - start) < direction * (end - start)]
        pieces.append([start, *inside, end])
    return pieces


def _augmented_unflatten(layout: StateLayout, params: tuple[Tensor, ...]) -> Callable[[Tensor], tuple]:
    """The backward solve's flat state -> (y, dL/dy, *dL/dparams) for the ``*_adjoint`` callbacks."""
    n = layout.size

    def unflatten(aug: Tensor) -> tuple:
        y, a = layout.unflatten(aug[:n]), layout.unflatten(aug[n : 2 * n])
        rest, out = aug[2 * n :], []
        for p in params:
            out.append(rest[: p.numel()].view_as(p))
            rest = rest[p.numel() :]
        return (y, a, *out)

    return unflatten


def _augmented_dynamics(
    func: FlatFunc, params: tuple[Tensor, ...], n: int, need_t: bool, dtype: torch.dtype
) -> Callable[[float, Tensor], Tensor]:
    """d/dt [z, a, a_theta, a_t] = [f, -a^T df/dz, -a^T df/dtheta, -a^T df/dt], one VJP."""

    def dynamics(t: float, aug: Tensor, perturb: float = 0.0) -> Tensor:
        y, a = aug[:n], aug[n : 2 * n]
        with torch.enable_grad():
            y_ = y.detach().requires_grad_(True)
            t_ = time_tensor(t, dtype, y.device, perturb).requires_grad_(need_t)
            f = func.call_tensor_t(t_, y_)
            inputs = (y_, *params, *((t_,) if need_t else ()))
            if f.requires_grad:
                vjps = torch.autograd.grad(f, inputs, -a, allow_unused=True)
            else:
                vjps = (None,) * len(inputs)
        pieces = [f.detach()]
        for g, x in zip(vjps, inputs, strict=True):
            pieces.append(
                torch.zeros(x.numel(), dtype=dtype, device=y.device) if g is None else g.reshape(-1).to(dtype)
            )
        return torch.cat(pieces)

    return dynamics


def _adjoint_norm(
    norm: Callable | str | None,
    segments: tuple[int, ...],
    ys: Tensor,
    params: tuple[Tensor, ...],
    need_t: bool,
) -> Callable[[Tensor], Tensor]:
    if norm is None or norm == "rms":
        return RMSNorm(segments)
    if norm == "seminorm":
        return RMSNorm(segments, use=(0, 1))  # the state and its adjoint; not the parameter integrals
    example = (
        ys[0],
        ys[0],
        *(p.detach().to(ys.dtype) for p in params),
        *((ys.new_zeros(1),) if need_t else ()),
    )
    return UserNorm(norm, StateLayout(example), "adjoint_options")
