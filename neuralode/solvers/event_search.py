"""Locating an event inside an accepted step: bisection on its interpolant, to double precision in t."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

_BISECTIONS = 200  # a bound; bisection stops when the bracket no longer shrinks in double precision


@torch.no_grad()
def bisect(event: Any, interp: Callable[[float], Tensor], t0: float, t1: float) -> tuple[float, int]:
    """Locate the crossing inside (t0, t1], where ``event`` has crossed at t1 but not at t0.

    Returns the crossing time (the first representable time at which it has crossed, to double
    precision) and the index of the component that crossed.
    """
    lo, hi = t0, t1
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if event.crossed(mid, interp(mid)):
            hi = mid
        else:
            lo = mid
    return hi, event.component(hi, interp(hi))
