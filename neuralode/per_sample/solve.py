"""``solve_per_sample``: the per-sample branch of :func:`neuralode.solve` (``per_sample=...``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .._setup.tolerances import solve_tolerances
from .._setup.validation import backward_options, check_func, check_y0, make_solver
from ..gradients import Adjoint, Checkpointed
from ..solution import Solution
from ..solvers import DEFAULT_METHOD
from ..solvers.adaptive import AdaptiveRKSolver
from ..solvers.esdirk_methods import ESDIRKSolver
from ..solvers.fixed_grid import FixedGridSolver
from ..solvers.implicit import MAX_NEWTON_SIZE
from ..solvers.options import resolve_max_num_steps
from ..solvers.tableau import ButcherTableau
from ..stats import PassCounts, SolveStats
from .adjoint import PerSampleAdjoint
from .checkpointed import PerSampleCheckpoint
from .config import PerSample
from .engine import SampleRKSolver
from .esdirk import SampleESDIRKSolver
from .events import SampleEvent, attach_sample_event_gradient
from .fixed_grid import SampleGridSolver
from .outcome import failure_error, status_names
from .problem import SampleFunc, SampleLayout, SampleProblem, sample_times, sample_tolerance
from .time_gradient import SampleTimes


def solve_per_sample(
    func: Callable,
    y0: Any,
    t: Tensor,
    rtol: Any,
    atol: Any,
    method: str | None,
    options: Mapping[str, Any] | None,
    event_fn: Callable | None,
    gradient: Any,
    params: Any,
    stats: SolveStats,
    config: PerSample,
) -> Solution:
    """Check the arguments, solve every sample with its own steps, and report each sample's outcome."""
    check_func(func)
    check_y0(y0)
    layout = SampleLayout(tuple(y0) if not isinstance(y0, Tensor) else y0)
    method = DEFAULT_METHOD if method is None else method
    solver = make_solver(method, options)
    engine = _engine(solver, method, config, layout.size)
    if isinstance(engine, SampleESDIRKSolver) and isinstance(gradient, Checkpointed):
        raise ValueError(
            f"odeint_checkpoint with per_sample=True does not support method={method!r} (its Newton "
            "iterations are not replayed per sample): use odeint or odeint_adjoint, or per_sample=False"
        )
    if event_fn is not None:
        _check_event_args(event_fn, engine, gradient, method)
    batch, dtype, device = layout.batch, layout.dtype, layout.device
    times = sample_times(t, batch, device)
    if event_fn is not None:
        times = _event_times(times)
    rtol_t = sample_tolerance(rtol, "rtol", batch, dtype, device)
    atol_t = sample_tolerance(atol, "atol", batch, dtype, device)
    rtol_t, atol_t = solve_tolerances(solver, rtol_t, atol_t, dtype, where=lambda k: f"sample {k}")
    counts = PassCounts(nfe=torch.zeros(batch, dtype=torch.long, device=device))
    sample_func = SampleFunc(func, layout, counts, config.with_rows)
    problem = SampleProblem(sample_func, layout.flatten(y0), times, rtol_t, atol_t, layout.numels)
    y_start = problem.y0
    timing = SampleTimes.wanted(t)
    if timing:
        y_start = SampleTimes.start(problem, y_start, t)
    if event_fn is not None:
        return _until_event(
            func, event_fn, layout, problem, engine, y_start, gradient, params, method, options,
            rtol, atol, stats, config, t.dtype,
        )  # fmt: skip
    if isinstance(gradient, Adjoint):
        found = gradient.params(func, params)
        info = _adjoint_info(
            gradient, func, layout, problem, engine, method, options, rtol, atol, stats, config
        )
        ys = PerSampleAdjoint.apply(info, y_start, *found)
        status, t_reached, step_counts = info["result"]
    elif isinstance(gradient, Checkpointed):
        found = gradient.params(func, params)
        info = {"engine": engine, "problem": problem, "layout": layout, "user_func": func,
                "with_rows": config.with_rows, "every": gradient.every, "stats": stats}  # fmt: skip
        ys = PerSampleCheckpoint.apply(info, y_start, *found)
        status, t_reached, step_counts = info["result"]
        counts.n_checkpoints = info["n_checkpoints"]
    else:
        ys, status, t_reached, step_counts = engine.integrate(
            SampleProblem(sample_func, y_start, times, rtol_t, atol_t, layout.numels)
        )
    _record(stats, counts, status, step_counts)
    error = failure_error(status, t_reached, engine.max_steps)
    if error is not None and config.on_failure == "raise":
        raise error
    if timing:  # y(t_b0) is y0 itself; later outputs move with their times
        ys = torch.cat([problem.y0.unsqueeze(1), SampleTimes.outputs(problem, ys, t)[:, 1:]], dim=1)
    return Solution(layout.unflatten(ys.transpose(0, 1)), stats, stats.status)


def _check_event_args(event_fn: Any, engine: Any, gradient: Any, method: str) -> None:
    """event_fn with per_sample=True: a callable, an adaptive method or a fixed grid of step_size,
    odeint or odeint_adjoint."""
    if not callable(event_fn):
        raise TypeError(
            f"event_fn must be callable as event_fn(t, y) -> tensor, got {type(event_fn).__name__}"
        )
    if isinstance(engine, SampleGridSolver) and engine.options.step_size is None:
        raise ValueError(
            f"per_sample=True with event_fn and the fixed-grid method {method!r} needs "
            "options={'step_size': h}: t (the default grid) cannot know where each sample's event is"
        )
    if isinstance(gradient, Checkpointed):
        raise ValueError("odeint_checkpoint does not support event_fn: use odeint or odeint_adjoint")


def _event_times(times: Tensor) -> Tensor:
    """An event search's (B, 2) span [t0, t0 + direction] from t = [t0] or [t0, t1] (per sample or shared)."""
    if times.shape[1] > 2:
        raise ValueError(
            f"with event_fn, t must be [t0] or [t0, t1] (t1 only gives the direction; (B, 1) or (B, 2) per "
            f"sample), got {times.shape[1]} times: each sample's solve ends at its event"
        )
    if times.shape[1] == 1:
        return torch.cat([times, times + 1.0], dim=1)
    return times


def _until_event(
    func, event_fn, layout, problem, engine, y_start, gradient, params, method, options, rtol, atol,
    stats, config, t_dtype,
) -> Solution:  # fmt: skip
    """Every sample to its own event: ``Solution(ys=[y0, y(event_t)], event_t=(B,))``, gradients
    through each event time (direct backprop, or the per-sample adjoint over [t0, event_t])."""
    event = SampleEvent(event_fn, layout)
    if isinstance(gradient, Adjoint):
        found_params = gradient.params(func, params)
        with torch.no_grad():
            ys, status, t_reached, step_counts = engine.integrate(_with_start(problem, y_start), event=event)
        tau = event.tau
        done = ~torch.isnan(tau)
        times = torch.stack([problem.times[:, 0], torch.where(done, tau, problem.times[:, 1])], dim=1)
        span = SampleProblem(problem.func, problem.y0, times, problem.rtol, problem.atol, problem.segments)
        info = _adjoint_info(gradient, func, layout, span, engine, method, options, rtol, atol, stats, config)
        info["precomputed"] = (ys, (status, t_reached, step_counts))
        y_tau = PerSampleAdjoint.apply(info, y_start, *found_params)[:, 1]
    else:
        ys, status, t_reached, step_counts = engine.integrate(_with_start(problem, y_start), event=event)
        y_tau = ys[:, 1]
    tau = event.tau
    done = ~torch.isnan(tau)
    _record(stats, problem.func.counts, status, step_counts)
    error = failure_error(status, t_reached, resolve_max_num_steps(engine.options.max_num_steps, True), True)
    if error is not None and config.on_failure == "raise":
        raise error
    tau_t, y_out = attach_sample_event_gradient(problem.func, event, tau, y_tau, event.k, done)
    y_out = torch.where(done[:, None], y_out, math.nan)
    ys = torch.stack([problem.y0, y_out])
    return Solution(layout.unflatten(ys), stats, stats.status, tau_t.to(t_dtype))


def _with_start(problem: SampleProblem, y_start: Tensor) -> SampleProblem:
    return SampleProblem(problem.func, y_start, problem.times, problem.rtol, problem.atol, problem.segments)


def _record(stats: SolveStats, counts: PassCounts, status: Tensor, step_counts: dict) -> None:
    """The forward counts and every sample's outcome into ``stats``."""
    for name, value in step_counts.items():
        setattr(counts, name, value)
    stats.forward = counts
    stats.status = status_names(status)


def _adjoint_info(
    gradient, func, layout, problem, engine, method, options, rtol, atol, stats, config
) -> dict:
    """What the per-sample adjoint's backward pass needs: its own engine and tolerances (each
    defaulting to the forward one's, options without "norm")."""
    backward_method = gradient.method or method
    solver = make_solver(backward_method, backward_options(gradient.options, options), arg="adjoint_method")
    backward = _engine(solver, backward_method, PerSample(), 2 * layout.size)
    if isinstance(backward, SampleRKSolver) is not isinstance(engine, SampleRKSolver):
        kind = "an adaptive" if isinstance(engine, SampleRKSolver) else "a fixed-grid"
        raise ValueError(
            f"per_sample=True: adjoint_method={backward_method!r} must be {kind} method, as "
            f"method={method!r} is"
        )
    batch, dtype, device = layout.batch, layout.dtype, layout.device
    b_rtol = sample_tolerance(
        rtol if gradient.rtol is None else gradient.rtol, "adjoint_rtol", batch, dtype, device
    )
    b_atol = sample_tolerance(
        atol if gradient.atol is None else gradient.atol, "adjoint_atol", batch, dtype, device
    )
    b_rtol, b_atol = solve_tolerances(solver, b_rtol, b_atol, dtype, ("adjoint_rtol", "adjoint_atol"))
    return {
        "engine": engine,
        "backward_engine": backward,
        "problem": problem,
        "layout": layout,
        "user_func": func,
        "backward_rtol": b_rtol,
        "backward_atol": b_atol,
        "stats": stats,
    }


def _engine(solver: Any, method: str, config: PerSample, size: int | None = None):
    """The per-sample engine for a method: explicit Runge-Kutta, adaptive or on a fixed grid."""
    opts = solver.options
    explicit = isinstance(getattr(solver, "tableau", None), ButcherTableau)
    esdirk = isinstance(solver, ESDIRKSolver)
    if (
        (explicit or esdirk)
        and isinstance(solver, AdaptiveRKSolver)
        and type(solver).integrate is AdaptiveRKSolver.integrate
    ):
        if opts.norm not in (None, "rms"):
            raise ValueError(
                "per_sample=True measures each sample's error with the RMS norm: options['norm'] must be "
                "left unset or 'rms'"
            )
        if esdirk:
            for name in ("jump_t", "step_t"):
                if getattr(opts, name) is not None:
                    raise ValueError(
                        f"per_sample=True with {method!r} does not support options[{name!r}] yet: use an "
                        "explicit adaptive method (dopri5, tsit5, ...) or per_sample=False"
                    )
            _check_dense_newton(method, opts, size)
            return SampleESDIRKSolver(solver.tableau, opts, config.compact)
        return SampleRKSolver(solver.tableau, opts, config.compact)
    if explicit and isinstance(solver, FixedGridSolver) and type(solver).step is FixedGridSolver.step:
        return SampleGridSolver(solver.tableau, opts)
    raise ValueError(
        f"method={method!r} does not support per_sample=True: use an explicit Runge-Kutta method "
        "(adaptive: dopri5, tsit5, bosh3, dopri8, fehlberg2, adaptive_heun; fixed grid: euler, midpoint, "
        "heun2, heun3, rk4) or, for stiff problems, an adaptive implicit ESDIRK method (kvaerno3, kvaerno5)"
    )


def _check_dense_newton(method: str, opts: Any, size: int | None) -> None:
    """Per-sample ESDIRK solves Newton's systems with a dense (n, n) block per sample: no Krylov, and
    at most the joint dense path's MAX_NEWTON_SIZE entries per sample."""
    if opts.linear_solver == "krylov":
        raise ValueError(
            f"method={method!r} with per_sample=True factorises a dense Newton block per sample: "
            "options['linear_solver']='krylov' (matrix-free) is not supported per sample; use "
            "options['linear_solver']='dense' (or 'auto', which is dense per sample), or per_sample=False"
        )
    if size is not None and size > MAX_NEWTON_SIZE:
        raise ValueError(
            f"method={method!r} with per_sample=True factorises a dense n x n Newton block per sample, and "
            f"each sample has n = {size} entries, more than {MAX_NEWTON_SIZE}: use per_sample=False with "
            "options['linear_solver']='krylov', or an explicit method with per_sample=True"
        )
