"""Step-size selection: the initial step and the controllers that adapt it after each attempt."""

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
    """new = h * clamp(safety * ratio^(-1/k), dfactor, ifactor), k = embedded order + 1."""

    def __init__(self, k: int, safety: float, ifactor: float, dfactor: float) -> None:
        self.exponent = 1.0 / k
        self.safety, self.ifactor, self.dfactor = safety, ifactor, dfactor

    def next_step(self, h: float, ratio: float, accepted: bool) -> float:
        if ratio == 0.0:
            return h * self.ifactor
        factor = self.safety * ratio ** (-self.exponent)
        factor = min(self.ifactor, max(self.dfactor, factor))
        return h * (min(factor, 1.0) if not accepted else factor)


class PIController(IntegralController):
    """Gustafsson's PI controller (Hairer & Wanner, Solving ODEs II, IV.2), with Hairer's gains.

    new = h * safety * ratio^(-0.7/k) * previous_ratio^(0.4/k) after an accepted step; a rejected
    step falls back to the integral rule.
    """

    def __init__(self, k: int, safety: float, ifactor: float, dfactor: float) -> None:
        super().__init__(k, safety, ifactor, dfactor)
        self.beta1, self.beta2 = 0.7 / k, 0.4 / k
        self.previous = 1.0

    def next_step(self, h: float, ratio: float, accepted: bool) -> float:
        if not accepted:
            return super().next_step(h, ratio, accepted)
        ratio = max(ratio, 1e-10)
        factor = self.safety * ratio ** (-self.beta1) * self.previous**self.beta2
        self.previous = ratio
        return h * min(self.ifactor, max(self.dfactor, factor))
