"""Heun's method of order 2 with an embedded Euler step for error control; cubic Hermite dense output."""

from __future__ import annotations

from typing import ClassVar

from .adaptive import AdaptiveRKSolver
from .dense import hermite_weights
from .tableau import ButcherTableau, DenseOutput

_B = [0.5, 0.5]
ADAPTIVE_HEUN = ButcherTableau.from_lists(
    "adaptive_heun",
    c=[0.0, 1.0],
    a=[[], [1.0]],
    b=_B,
    b_low=[1.0, 0.0],
    order=2,
    embedded_order=1,
    dense=DenseOutput(weights=hermite_weights(_B, fsal=False), order=2),  # limited by the 2nd-order step
)


class AdaptiveHeun(AdaptiveRKSolver):
    tableau: ClassVar[ButcherTableau] = ADAPTIVE_HEUN
