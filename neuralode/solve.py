"""``solve``: the one solve core behind ``odeint``, ``odeint_adjoint`` and ``odeint_checkpoint``.

It checks every argument, lets the gradient strategy (:mod:`neuralode.gradients`) plan its
differentiation, runs it, and attaches the two gradients every strategy shares: through the output
times t (:mod:`neuralode.gradients.time_gradient`), and through an event's time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ._setup.event_function import attach_event_gradient
from ._setup.layout import UserState
from ._setup.precision import solver_precision
from ._setup.prepare import Setup, prepare
from ._setup.tolerances import ToleranceArg
from .gradients import Adjoint, Checkpointed, Direct, Gradient
from .gradients.time_gradient import OutputTimes, StartTime, TimeGradient
from .per_sample import PerSample, per_sample_config, solve_per_sample
from .solution import Solution
from .stats import PassCounts, SolveStats


def solve(
    func: Callable[[Tensor, UserState], UserState],
    y0: UserState,
    t: Tensor,
    *,
    rtol: ToleranceArg = 1e-7,
    atol: ToleranceArg = 1e-9,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
    event_fn: Callable | None = None,
    gradient: Gradient | None = None,
    params: Sequence[Tensor] | None = None,
    stats: SolveStats | None = None,
    per_sample: bool | PerSample = False,
) -> Solution:
    """Solve ``dy/dt = func(t, y)``, differentiable by ``gradient`` (default :class:`Direct`).

    The arguments are those of :func:`neuralode.odeint`; ``gradient`` is ``Direct()``, ``Adjoint(...)``
    or ``Checkpointed(every=k)``, and ``params`` the tensors an adjoint or checkpointed gradient is
    taken for (default ``func.parameters()``). ``stats``: the :class:`SolveStats` to fill (a new one
    by default); the solution's ``stats`` is that object. ``per_sample``: True or a
    :class:`PerSample` solves every sample (dim 0 of y0) with its own steps (:mod:`neuralode.per_sample`).
    """
    gradient = Direct() if gradient is None else gradient
    if not isinstance(gradient, Direct | Adjoint | Checkpointed):
        raise TypeError(
            "gradient must be neuralode.Direct(), neuralode.Adjoint(...) or neuralode.Checkpointed(every=k), "
            f"got {type(gradient).__name__}"
        )
    stats = SolveStats() if stats is None else stats
    stats.backward = PassCounts()  # filled when this call's backward pass runs, if it has one
    stats.status = None
    config = per_sample_config(per_sample)
    if config is not None:
        return solve_per_sample(
            func, y0, t, rtol, atol, method, options, event_fn, gradient, params, stats, config
        )
    found = gradient.params(func, params)
    setup = prepare(func, y0, t, rtol, atol, method, options, event_fn)
    plan = gradient.plan(setup, found, stats)
    with solver_precision(setup.autocast):
        solution = _run(setup, plan, t, found, stats)
    stats.forward = setup.counts
    return solution


def _run(setup: Setup, plan: Any, t: Tensor, params: tuple[Tensor, ...], stats: SolveStats) -> Solution:
    problem, layout = setup.problem, setup.layout
    y0, times = problem.y0, problem.times
    timing = TimeGradient(setup, stats)
    with_t = timing.wanted(t) and (setup.event is not None or len(times) > 1)
    y_start = StartTime.apply(timing, y0, t) if with_t else y0  # t0 moves y0 by -f(t0, y0) dt0
    if setup.event is not None:
        tau, y_tau, k = plan.until_event(y_start, params)
        tau_t, y_out = attach_event_gradient(problem.func, setup.event, tau, y_tau, k)
        ys = layout.unflatten(torch.stack([y0, y_out]))
        return Solution(ys, stats, "event", tau_t.to(t.dtype))
    if len(times) == 1:
        return Solution(layout.unflatten(y0.unsqueeze(0)), stats)
    ys = plan.solve(y_start, params)
    if with_t:  # y(t_i) moves with t_i at the rate f(t_i, y(t_i))
        ys = torch.cat([y0.unsqueeze(0), OutputTimes.apply(timing, ys, t)[1:]])
    return Solution(layout.unflatten(ys), stats)
