"""The fixed-grid engine: step a method over a grid, fill output times by interpolation.

The loop (grid, callbacks, step counts, output interpolation, event location) is shared; a method
supplies ``start`` (per-solve state) and ``step`` (one step). Explicit Runge-Kutta is the default
step; the implicit Runge-Kutta and Adams engines override it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import NonFiniteStateError, event_not_found
from .base import FlatProblem, Solver
from .controllers import GridController
from .event_search import bisect
from .observer import StepObserver
from .options import FixedGridOptions, resolve_max_num_steps
from .runge_kutta import DeviceTableau, rk_step, stage_buffer


def uniform_grid(t0: float, t_end: float, step: float, max_steps: int | None = None) -> list[float]:
    """t0, t0 + h, ..., ending exactly at t_end (the last step may be shorter); a grid of more than
    ``max_steps`` steps is refused before it is built."""
    direction = 1.0 if t_end > t0 else -1.0
    span = abs(t_end - t0)
    steps = span / step - 1e-9  # 1e-9: 1.0/0.1 must give 10 steps, not 11
    if max_steps is not None and steps > max_steps:
        raise ValueError(
            f"options['step_size']={step!r} on [{t0!r}, {t_end!r}] needs {math.ceil(steps):,} steps, more "
            f"than max_num_steps={max_steps:,}: use a larger step_size, or raise options['max_num_steps']"
        )
    n = max(1, math.ceil(steps))
    return [t0 + direction * step * i for i in range(n)] + [t_end]


def check_grid_length(n_steps: int, max_steps: int, what: str) -> None:
    """Refuse a grid of more than ``max_steps`` steps (before it is converted to a list)."""
    if n_steps > max_steps:
        raise ValueError(
            f"{what} returned a grid of {n_steps:,} steps, more than max_num_steps={max_steps:,}: use a "
            "coarser grid, or raise max_num_steps in the options"
        )


def check_grid(
    values: list[float], t0: float, t_end: float, what: str = "options['grid_constructor']"
) -> None:
    """A grid must be finite and run strictly monotonically from t0 to t_end."""
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} returned a grid with NaN or infinite times; it must be finite")
    if values[0] != t0 or values[-1] != t_end:
        raise ValueError(
            f"{what} returned a grid from {values[0]} to {values[-1]}; "
            f"it must start at t[0]={t0} and end at t[-1]={t_end}"
        )
    direction = 1.0 if t_end > t0 else -1.0
    if any(direction * (b - a) <= 0 for a, b in itertools.pairwise(values)):
        raise ValueError(f"{what} must return a strictly monotone grid in the direction of t")


def constructed_grid(
    constructor, user_func, user_y0, t_tensor: Tensor, times: list[float], max_steps: int, what: str
) -> list[float]:
    """Call a ``grid_constructor(func, y0, t)`` once and check its grid (finite, monotone, from
    times[0] to times[-1], at most ``max_steps`` steps)."""
    grid = constructor(user_func, user_y0, t_tensor)
    if not isinstance(grid, Tensor) or grid.dim() != 1 or grid.numel() < 2:
        raise ValueError(f"{what} must return a 1-D tensor with at least 2 times")
    if grid.is_complex() or grid.dtype == torch.bool:
        raise ValueError(f"{what} must return real times, got dtype {grid.dtype}")
    check_grid_length(grid.numel() - 1, max_steps, what)
    values = grid.detach().cpu().double().tolist()
    check_grid(values, times[0], times[-1], what)
    return values


@dataclass
class GridStep:
    """One step of the march, handed to the consumer (outputs or event search)."""

    t0: float
    t1: float
    y0: Tensor
    y1: Tensor
    f0: Tensor | None  # f(t0, y0) if the method computed it
    f1: Tensor | None = None  # set by the consumer if it evaluated f(t1, y1), reused by the next step


class FixedGridSolver(Solver):
    """Engine for fixed-grid methods; by default steps an explicit Runge-Kutta tableau."""

    options_class: ClassVar[type] = FixedGridOptions
    supported_callbacks: ClassVar[tuple[str, ...]] = ("callback_step",)
    replayable: ClassVar[bool] = True  # explicit Runge-Kutta: a step is re-run bit for bit; engines that
    # override ``start``/``step`` (implicit RK, Adams) keep state across steps and set it False

    @property
    def order(self) -> int:
        return self.tableau.order

    # ----- the method: per-solve state and one step -----
    def start(self, problem: FlatProblem) -> Any:
        y = problem.y0
        dtab = DeviceTableau(self.tableau, y.dtype, y.device)
        return dtab, stage_buffer(dtab, y)

    def step(
        self, ctx: Any, problem: FlatProblem, t: float, dt: float, y: Tensor, f0: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """One step of size dt from (t, y); returns (y1, f(t, y) if it was evaluated)."""
        dtab, buffer = ctx
        perturb = self.options.perturb
        if f0 is None:
            f0 = problem.func(t, y, (1.0 if dt > 0 else -1.0) if perturb else 0.0)
        K, y1 = rk_step(problem.func, dtab, t, dt, y, f0, buffer, perturb, perturb)
        return y1, K[0]

    # ----- the shared loop -----
    def march(
        self, problem: FlatProblem, grid: Iterable[float], observer: StepObserver
    ) -> Iterator[GridStep]:
        """Step along ``grid``, yielding each step; the observer sees every step."""
        ctx = self.start(problem)
        y, f0 = problem.y0, None
        for g0, g1 in itertools.pairwise(grid):
            dt = g1 - g0
            observer.attempt(g0, y, dt)
            y1, f0 = self.step(ctx, problem, g0, dt, y, f0)
            observer.accept(g0, g1, y, dt)
            record = GridStep(g0, g1, y, y1, f0)
            yield record
            y = y1
            f0 = None if self.options.perturb else record.f1

    def grid(self, problem: FlatProblem) -> list[float]:
        """The grid the options give (``step_size``, else the output times); a ``grid_constructor``'s
        grid is built by the caller, once, and handed in as a :class:`GridController`."""
        opts: FixedGridOptions = self.options
        max_steps = resolve_max_num_steps(opts.max_num_steps, event=False)
        if opts.grid_constructor is not None:
            raise AssertionError("a grid_constructor's grid comes in a GridController")  # pragma: no cover
        if opts.step_size is None:  # torchdiffeq's default: step from output time to output time
            return list(problem.times)
        return uniform_grid(problem.times[0], problem.times[-1], opts.step_size, max_steps)

    def interpolate(self, problem: FlatProblem, step: GridStep, t: float) -> Tensor:
        """y at time t inside the step: linear, or cubic Hermite from f at both ends."""
        dt = step.t1 - step.t0
        theta = (t - step.t0) / dt
        if theta == 1.0:
            return step.y1
        if self.options.interp != "cubic":
            return torch.lerp(step.y0, step.y1, theta)
        inward = 1.0 if dt > 0 else -1.0
        perturb = self.options.perturb
        if step.f0 is None:
            step.f0 = problem.func(step.t0, step.y0, inward if perturb else 0.0)
        if step.f1 is None:
            step.f1 = problem.func(step.t1, step.y1, -inward if perturb else 0.0)
        return hermite(step.y0, step.y1, step.f0, step.f1, dt, theta)

    def integrate(
        self, problem: FlatProblem, observer: StepObserver, controller: GridController | None = None
    ) -> Tensor:
        times = problem.times
        direction = 1.0 if times[-1] > times[0] else -1.0
        outputs: list[Tensor] = [problem.y0]
        next_out = 1
        grid = controller.grid if controller is not None else self.grid(problem)
        for step in self.march(problem, grid, observer):
            while next_out < len(times) and direction * (times[next_out] - step.t1) <= 0:
                outputs.append(self.interpolate(problem, step, times[next_out]))
                next_out += 1
        result = torch.stack(outputs)
        _check_finite(result, times)
        return result

    def integrate_until_event(
        self, problem: FlatProblem, event, observer: StepObserver
    ) -> tuple[float, Tensor, int]:
        """Step an unbounded uniform grid until ``event`` crosses zero; locate it on the interpolant."""
        times = problem.times
        direction = 1.0 if times[-1] > times[0] else -1.0
        event.start(times[0], problem.y0)
        for step in self.march(problem, self.event_grid(problem, direction), observer):
            if event.crossed(step.t1, step.y1):
                f0 = step.f0
                tau, k = bisect(event, lambda s, st=step: self.interpolate(problem, st, s), step.t0, step.t1)
                step.f0, step.f1 = f0, None  # the bisection's evaluations carry no graph
                y_tau = self.interpolate(problem, step, tau)
                if not bool(torch.isfinite(y_tau).all()):
                    _check_finite(torch.stack([problem.y0, y_tau]), [times[0], tau])
                return tau, y_tau, k
        raise AssertionError("unreachable: event_grid raises when exhausted")  # pragma: no cover

    def event_grid(self, problem: FlatProblem, direction: float) -> Iterator[float]:
        """An unbounded uniform grid from t0 for an event search."""
        if self.options.step_size is None:
            raise ValueError(
                "event_fn with a fixed-grid method needs options={'step_size': h}: neither t (the default "
                "grid) nor a grid_constructor can know where the event is"
            )
        t0, h = problem.times[0], self.options.step_size
        max_steps = resolve_max_num_steps(self.options.max_num_steps, event=True)
        limit = torch.finfo(problem.y0.dtype).max  # times stay representable in the state's dtype
        where = f"a fixed grid of step_size={h!r}"
        for i in range(max_steps + 1):
            t = t0 + direction * h * i
            if not abs(t) < limit:
                raise event_not_found(where, t0, t0 + direction * h * (i - 1), "time would overflow")
            yield t
        raise event_not_found(where, t0, t0 + direction * h * max_steps, f"max_num_steps={max_steps:,} steps")


def hermite(y0: Tensor, y1: Tensor, f0: Tensor, f1: Tensor, dt: float, theta: float) -> Tensor:
    """Cubic Hermite interpolation through (y0, f0) and (y1, f1) at fraction theta of the step.

    Written as y0 + increment (the weights of y0 and y1 sum to one), so y0 is rounded once: the
    weighted sum of y0 and y1 rounds each product at the size of y, which in float32 moved an event
    located on it by several ulps of y (over |dy/dt|) when y is large against its change.
    """
    t2, t3 = theta * theta, theta**3
    w = torch.tensor(
        [-2 * t3 + 3 * t2, dt * (t3 - 2 * t2 + theta), dt * (t3 - t2)], dtype=y0.dtype, device=y0.device
    )
    return y0 + torch.mv(torch.stack([y1 - y0, f0, f1], dim=1), w)


def _check_finite(result: Tensor, times: list[float]) -> None:
    """Fixed-grid steps are never rejected, so non-finite values are looked for once, at the end."""
    finite = torch.isfinite(result).all(dim=1)
    if bool(finite.all()):
        return
    first = int((~finite).nonzero()[0])
    where = (
        f"at t={times[0]!r} (y0)" if first == 0 else f"between t={times[first - 1]!r} and t={times[first]!r}"
    )
    raise NonFiniteStateError(
        f"the state became non-finite (NaN or inf) {where}: "
        "try a smaller step_size, or check func for overflow or division by zero.",
        times[first],
    )
