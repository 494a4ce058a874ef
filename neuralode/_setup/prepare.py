"""``prepare``: check every argument of a solve, then assemble what the engines and the gradient
strategies need (:class:`Setup`), before the first step."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..solvers import DEFAULT_METHOD, FlatProblem, Solver
from ..solvers.controllers import GridController
from ..solvers.fixed_grid import constructed_grid
from ..solvers.observer import StepObserver, StepTrace
from ..solvers.options import resolve_max_num_steps
from ..stats import PassCounts
from .callbacks import StepCallbacks, make_callbacks
from .event_function import EventFunction
from .flat_func import FlatFunc
from .layout import StateLayout, UserState
from .norms import build_norm
from .precision import AutocastSetting, capture_autocast
from .tolerances import check_tolerance, member_of, solve_tolerances
from .validation import check_func, check_t, check_y0, make_solver


@dataclass
class Setup:
    """A validated solve, ready to run: the engine, its problem on the flat state, and what the
    gradient strategies need besides (the user's func and arguments, the counts, the callbacks)."""

    solver: Solver
    problem: FlatProblem
    layout: StateLayout
    user_func: Callable
    t: Tensor  # the user's output times (a tensor: its dtype and device)
    options: Mapping[str, Any] | None  # the user's options, as given (the adjoint's default)
    rtol: Any  # the user's rtol/atol, as given (the adjoint derives its backward tolerances from them)
    atol: Any
    method: str
    counts: PassCounts
    callbacks: StepCallbacks | None = None
    controller: GridController | None = None  # a grid_constructor's grid, built once here
    event: EventFunction | None = None
    autocast: AutocastSetting | None = None  # the caller's autocast: func runs under it, the solver not

    def observer(self, trace: StepTrace | None = None, dense: Any = None) -> StepObserver:
        """The forward solve's observer: this setup's counts and callbacks."""
        return StepObserver(self.counts, self.callbacks, trace, dense)

    def integrate(self, y0: Tensor, observer: StepObserver | None = None, controller: Any = None) -> Tensor:
        """The forward solve from ``y0`` (flat), at every output time (``controller``: instead of the
        setup's, e.g. one that keeps the last step size)."""
        problem = self.problem if y0 is self.problem.y0 else _with_y0(self.problem, y0)
        return self.solver.integrate(problem, observer or self.observer(), controller or self.controller)

    def integrate_until_event(self, y0: Tensor) -> tuple[float, Tensor, int]:
        return self.solver.integrate_until_event(_with_y0(self.problem, y0), self.event, self.observer())

    def perturb_side(self) -> float:
        """With ``options["perturb"]``, f at the span's ends is taken from inside it: +1/-1 at the start
        (its sign is the direction), the opposite at the output times; else 0."""
        if not getattr(self.solver.options, "perturb", False):
            return 0.0
        return self.problem.direction


def _with_y0(problem: FlatProblem, y0: Tensor) -> FlatProblem:
    return FlatProblem(problem.func, y0, problem.times, problem.rtol, problem.atol, problem.norm)


def prepare(
    func: Callable,
    y0: UserState,
    t: Tensor,
    rtol: Any,
    atol: Any,
    method: str | None,
    options: Mapping[str, Any] | None,
    event_fn: Callable | None,
) -> Setup:
    """Check every argument, then build the solver, the flat problem and the setup around it."""
    check_func(func)
    layout = check_y0(y0)
    times = check_t(t)
    rtol_f, atol_f = check_tolerance(rtol, "rtol", layout), check_tolerance(atol, "atol", layout)
    method = DEFAULT_METHOD if method is None else method
    solver = make_solver(method, options)
    rtol_f, atol_f = solve_tolerances(solver, rtol_f, atol_f, layout.dtype, where=member_of(layout))
    event = None
    if event_fn is not None:
        times = _event_times(event_fn, times, solver, method)
        event = EventFunction(event_fn, layout)
    autocast = capture_autocast(layout.device)
    counts = PassCounts()
    flat_func = FlatFunc(func, layout, counts, autocast)
    problem = FlatProblem(
        func=flat_func,
        y0=layout.flatten(y0),
        times=times,
        rtol=rtol_f,
        atol=atol_f,
        norm=build_norm(getattr(solver.options, "norm", None), layout.segments(), layout),
    )
    constructor = getattr(solver.options, "grid_constructor", None)
    controller = None
    if constructor is not None and event is None and len(times) > 1:
        max_steps = resolve_max_num_steps(solver.options.max_num_steps, event=False)
        grid = constructed_grid(constructor, func, y0, t, times, max_steps, "options['grid_constructor']")
        controller = GridController(grid)
    callbacks = make_callbacks(func, layout.unflatten, solver.supported_callbacks, method, layout.dtype)
    return Setup(
        solver,
        problem,
        layout,
        func,
        t,
        options,
        rtol,
        atol,
        method,
        counts,
        callbacks,
        controller,
        event,
        autocast,
    )


def _event_times(event_fn: Any, times: list[float], solver: Solver, method: str) -> list[float]:
    """An event search's span: [t0, t0 + direction] from t = [t0] or [t0, t1] (t1: the direction)."""
    if not callable(event_fn):
        raise TypeError(
            f"event_fn must be callable as event_fn(t, y) -> tensor, got {type(event_fn).__name__}"
        )
    if len(times) > 2:
        raise ValueError(
            f"with event_fn, t must be [t0] or [t0, t1] (t1 only gives the direction), got {len(times)} "
            "times: the solve ends at the event"
        )
    if not hasattr(solver, "integrate_until_event"):
        raise ValueError(f"method={method!r} does not support event_fn")
    return [times[0], times[0] + 1.0] if len(times) == 1 else times
