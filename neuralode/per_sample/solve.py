"""``solve_per_sample``: the per-sample branch of :func:`neuralode.solve` (``per_sample=...``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .._setup.tolerances import solve_tolerances
from .._setup.validation import check_func, check_y0, make_solver
from ..gradients import Direct
from ..solution import Solution
from ..solvers import DEFAULT_METHOD
from ..solvers.adaptive import AdaptiveRKSolver
from ..solvers.fixed_grid import FixedGridSolver
from ..solvers.tableau import ButcherTableau
from ..stats import PassCounts, SolveStats
from .config import PerSample
from .engine import SampleRKSolver
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
    engine = _engine(solver, method, config)
    if event_fn is not None:
        raise ValueError("per_sample=True with event_fn is not supported yet: use per_sample=False")
    if not isinstance(gradient, Direct):
        raise ValueError(
            f"per_sample=True supports odeint's direct gradients only so far, not {gradient.caller}: "
            "use neuralode.odeint(..., per_sample=True) (backpropagation through the per-sample steps)"
        )
    batch, dtype, device = layout.batch, layout.dtype, layout.device
    times = sample_times(t, batch, device)
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
    ys, status, t_reached, step_counts = engine.integrate(
        SampleProblem(sample_func, y_start, times, rtol_t, atol_t, layout.numels)
    )
    for name, value in step_counts.items():
        setattr(counts, name, value)
    stats.forward = counts
    stats.status = status_names(status)
    error = failure_error(status, t_reached, engine.max_steps)
    if error is not None and config.on_failure == "raise":
        raise error
    if timing:  # y(t_b0) is y0 itself; later outputs move with their times
        ys = torch.cat([problem.y0.unsqueeze(1), SampleTimes.outputs(problem, ys, t)[:, 1:]], dim=1)
    return Solution(layout.unflatten(ys.transpose(0, 1)), stats, stats.status)


def _engine(solver: Any, method: str, config: PerSample):
    """The per-sample engine for a method: explicit Runge-Kutta, adaptive or on a fixed grid."""
    opts = solver.options
    explicit = isinstance(getattr(solver, "tableau", None), ButcherTableau)
    if (
        explicit
        and isinstance(solver, AdaptiveRKSolver)
        and type(solver).integrate is AdaptiveRKSolver.integrate
    ):
        if opts.norm not in (None, "rms"):
            raise ValueError(
                "per_sample=True measures each sample's error with the RMS norm: options['norm'] must be "
                "left unset or 'rms'"
            )
        for name in ("jump_t", "step_t"):
            if getattr(opts, name) is not None:
                raise ValueError(f"per_sample=True does not support options[{name!r}] yet")
        return SampleRKSolver(solver.tableau, opts, config.compact)
    if explicit and isinstance(solver, FixedGridSolver) and type(solver).step is FixedGridSolver.step:
        return SampleGridSolver(solver.tableau, opts)
    raise ValueError(
        f"method={method!r} does not support per_sample=True: use an explicit Runge-Kutta method "
        "(adaptive: dopri5, tsit5, bosh3, dopri8, fehlberg2, adaptive_heun; fixed grid: euler, midpoint, "
        "heun2, heun3, rk4)"
    )
