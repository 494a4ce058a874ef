"""Step-size control as objects: the engines ask a controller where the next step ends and whether it
is accepted, so the same loop serves error control, a fixed grid and the replay of recorded steps.

- :class:`IntegralController` and :class:`PIController`: error control (the adaptive engine's default).
- :class:`GridController`: the steps of a fixed grid (fixed-grid engines; a ``grid_constructor``'s grid).
- :class:`ReplayController`: exactly the recorded steps, no error estimate (``odeint_checkpoint``).

A controller lives as long as its owner wants: the adjoint's backward pass keeps one across its
interval solves, so each interval starts from the step size the previous one ended with.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


@torch.no_grad()
def initial_step(
    func: Callable[[float, Tensor], Tensor],
    t0: float,
    y0: Tensor,
    f0: Tensor,
    direction: float,
    order: int,
    rtol: float | Tensor,
    atol: float | Tensor,
    norm: Callable[[Tensor], Tensor],
) -> float:
    """Hairer, Norsett & Wanner's starting step (Solving ODEs I, II.4): one extra evaluation. rtol/atol
    are floats or per-element (N,) tensors."""
    scale = y0.abs() * rtol + atol
    d0 = float(norm(y0 / scale))
    d1 = float(norm(f0 / scale))
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    y1 = y0 + (direction * h0) * f0
    f1 = func(t0 + direction * h0, y1)
    d2 = float(norm((f1 - f0) / scale)) / h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    h = min(100 * h0, h1)
    return h if math.isfinite(h) and h > 0 else 1e-6


class IntegralController:
    """new = h * clamp(safety * ratio^(-1/k), dfactor, ifactor), k = embedded order + 1.

    Args:
        first_step: the first step of every solve (None: carried, else Hairer & Wanner's selection).
        carry: keep the last proposed step of a solve and start the next solve from it.
        clamp_end: step to the end of the span exactly (an adjoint interval), never past it.
    """

    checks_error = True

    def __init__(
        self,
        k: int,
        safety: float,
        ifactor: float,
        dfactor: float,
        first_step: float | None = None,
        carry: bool = False,
        clamp_end: bool = False,
    ) -> None:
        self.k, self.exponent = k, 1.0 / k
        self.safety, self.ifactor, self.dfactor = safety, ifactor, dfactor
        self.first, self.carry, self.clamp_end = first_step, carry, clamp_end
        self.carried: float | None = None
        self.last_accepted: float | None = None  # the last accepted step not cut short by a stop

    def first_step(self, func, t: float, y: Tensor, f0: Tensor, direction: float, rtol, atol, norm) -> float:
        """The first step of a solve (starting a new solve resets the per-solve state)."""
        if self.first is not None:
            return float(self.first)
        if self.carried is not None:
            return self.carried
        return initial_step(func, t, y, f0, direction, self.k - 1, rtol, atol, norm)

    def step_end(self, t: float, h: float, direction: float) -> float:
        """Where a step of size h from t ends."""
        return t + direction * h

    def next_step(self, h: float, ratio: float, accepted: bool) -> float:
        if ratio == 0.0:
            return h * self.ifactor
        factor = self.safety * ratio ** (-self.exponent)
        factor = min(self.ifactor, max(self.dfactor, factor))
        return h * (min(factor, 1.0) if not accepted else factor)

    def finish(self, h: float, h_wanted: float, last_accepted: float | None = None) -> None:
        """The solve ended with h proposed; a step cut short by the end does not shrink the carry.
        ``last_accepted``: the size of its last accepted step that no stop cut short, if any."""
        if self.carry:
            self.carried = max(h, h_wanted)
            self.last_accepted = last_accepted


class PIController(IntegralController):
    """Gustafsson's PI controller (Hairer & Wanner, Solving ODEs II, IV.2), with Hairer's gains.

    new = h * safety * ratio^(-0.7/k) * previous_ratio^(0.4/k) after an accepted step; a rejected
    step falls back to the integral rule.
    """

    def __init__(self, k: int, safety: float, ifactor: float, dfactor: float, **kwargs) -> None:
        super().__init__(k, safety, ifactor, dfactor, **kwargs)
        self.beta1, self.beta2 = 0.7 / k, 0.4 / k
        self.previous = 1.0

    def first_step(self, *args) -> float:
        self.previous = 1.0  # the ratio history belongs to one solve
        return super().first_step(*args)

    def next_step(self, h: float, ratio: float, accepted: bool) -> float:
        if not accepted:
            return super().next_step(h, ratio, accepted)
        ratio = max(ratio, 1e-10)
        factor = self.safety * ratio ** (-self.beta1) * self.previous**self.beta2
        self.previous = ratio
        return h * min(self.ifactor, max(self.dfactor, factor))


class ReplayController:
    """Exactly the recorded steps, ending at ``ends`` in order: every step is accepted and no error
    is estimated, so the engine re-runs a recorded solve bit for bit (``odeint_checkpoint``)."""

    checks_error = False
    clamp_end = False

    def __init__(self, ends: list[float]) -> None:
        self.ends = ends
        self.index = 0

    def first_step(self, func, t: float, *args) -> float:
        self.index = 0
        return abs(self.ends[0] - t)

    def step_end(self, t: float, h: float, direction: float) -> float:
        end = self.ends[self.index]
        self.index += 1
        return end

    def next_step(self, h: float, ratio: float, accepted: bool) -> float:
        return h

    def finish(self, h: float, h_wanted: float, last_accepted: float | None = None) -> None:
        pass


class GridController:
    """The steps of a fixed grid: ``grid[0]`` to ``grid[-1]`` through every point (fixed-grid engines;
    a ``grid_constructor``'s grid, an adjoint interval's slice of it, or recorded steps replayed)."""

    def __init__(self, grid: list[float]) -> None:
        self.grid = grid
