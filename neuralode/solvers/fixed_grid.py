"""The fixed-grid engine: step a tableau over a grid, fill output times by interpolation."""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import torch
from torch import Tensor

from ..errors import NonFiniteStateError
from .base import FlatProblem, Solver
from .options import FixedGridOptions
from .runge_kutta import DeviceTableau, rk_step, stage_buffer


def uniform_grid(t0: float, t_end: float, step: float) -> list[float]:
    """t0, t0 + h, ..., ending exactly at t_end (the last step may be shorter)."""
    direction = 1.0 if t_end > t0 else -1.0
    span = abs(t_end - t0)
    n = max(1, math.ceil(span / step - 1e-9))  # 1e-9: 1.0/0.1 must give 10 steps, not 11
    return [t0 + direction * step * i for i in range(n)] + [t_end]


def _custom_grid(problem: FlatProblem, constructor) -> list[float]:
    grid = constructor(problem.user_func, problem.user_y0, problem.t_tensor)
    if not isinstance(grid, Tensor) or grid.dim() != 1 or grid.numel() < 2:
        raise ValueError("options['grid_constructor'] must return a 1-D tensor with at least 2 times")
    values = grid.detach().cpu().double().tolist()
    t0, t_end = problem.times[0], problem.times[-1]
    if values[0] != t0 or values[-1] != t_end:
        raise ValueError(
            f"options['grid_constructor'] returned a grid from {values[0]} to {values[-1]}; "
            f"it must start at t[0]={t0} and end at t[-1]={t_end}"
        )
    direction = 1.0 if t_end > t0 else -1.0
    if any(direction * (b - a) <= 0 for a, b in itertools.pairwise(values)):
        raise ValueError(
            "options['grid_constructor'] must return a strictly monotone grid in the direction of t"
        )
    return values


class FixedGridSolver(Solver):
    """Engine for fixed-grid explicit Runge-Kutta methods."""

    options_class: ClassVar[type] = FixedGridOptions

    def integrate(self, problem: FlatProblem) -> Tensor:
        opts: FixedGridOptions = self.options
        func, times, counts = problem.func, problem.times, problem.counts
        if opts.grid_constructor is not None:
            grid = _custom_grid(problem, opts.grid_constructor)
        else:
            grid = uniform_grid(times[0], times[-1], opts.step_size)
        y = problem.y0
        dtab = DeviceTableau(self.tableau, y.dtype, y.device)
        buffer = stage_buffer(dtab, y)
        cubic, perturb = opts.interp == "cubic", opts.perturb
        direction = 1.0 if times[-1] > times[0] else -1.0
        outputs: list[Tensor] = [y]
        next_out = 1
        f0 = None
        for g0, g1 in itertools.pairwise(grid):
            dt = g1 - g0
            if f0 is None:
                f0 = func(g0, y, direction if perturb else 0.0)
            K, y1 = rk_step(func, dtab, g0, dt, y, f0, buffer, perturb, perturb)
            counts.n_steps += 1
            counts.n_accepted += 1
            f1 = None
            while next_out < len(times) and direction * (times[next_out] - g1) <= 0:
                theta = (times[next_out] - g0) / dt
                if theta == 1.0:
                    outputs.append(y1)
                elif not cubic:
                    outputs.append(torch.lerp(y, y1, theta))
                else:
                    if f1 is None:
                        f1 = func(g1, y1, -direction if perturb else 0.0)
                    outputs.append(_hermite(y, y1, K[0], f1, dt, theta))
                next_out += 1
            y, f0 = y1, (None if perturb else f1)
        result = torch.stack(outputs)
        _check_finite(result, times)
        return result


def _hermite(y0: Tensor, y1: Tensor, f0: Tensor, f1: Tensor, dt: float, theta: float) -> Tensor:
    """Cubic Hermite interpolation through (y0, f0) and (y1, f1) at fraction theta of the step."""
    t2, t3 = theta * theta, theta**3
    w = torch.tensor(
        [2 * t3 - 3 * t2 + 1, -2 * t3 + 3 * t2, dt * (t3 - 2 * t2 + theta), dt * (t3 - t2)],
        dtype=y0.dtype,
        device=y0.device,
    )
    return torch.mv(torch.stack([y0, y1, f0, f1], dim=1), w)


def _check_finite(result: Tensor, times: list[float]) -> None:
    """Fixed-grid steps are never rejected, so non-finite values are looked for once, at the end."""
    finite = torch.isfinite(result).all(dim=1)
    if bool(finite.all()):
        return
    first = int((~finite).nonzero()[0])
    raise NonFiniteStateError(
        f"the state became non-finite (NaN or inf) between t={times[first - 1]!r} and t={times[first]!r}: "
        "try a smaller step_size, or check func for overflow or division by zero.",
        times[first],
    )
