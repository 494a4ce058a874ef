"""Fehlberg's RK1(2): a 2nd-order solution with a 1st-order embedded one (Fehlberg, NASA TR R-315, 1969).

Cubic Hermite dense output (second order here: the step itself is).
"""

from __future__ import annotations

from typing import ClassVar

from .adaptive import AdaptiveRKSolver
from .dense import hermite_weights
from .tableau import ButcherTableau, DenseOutput

_B = [1 / 512, 255 / 256, 1 / 512]
FEHLBERG2 = ButcherTableau.from_lists(
    "fehlberg2",
    c=[0.0, 0.5, 1.0],
    a=[[], [0.5], [1 / 256, 255 / 256]],
    b=_B,
    b_low=[1 / 256, 255 / 256, 0.0],
    order=2,
    embedded_order=1,
    dense=DenseOutput(weights=hermite_weights(_B, fsal=False), order=2),  # limited by the 2nd-order step
)


class Fehlberg2(AdaptiveRKSolver):
    tableau: ClassVar[ButcherTableau] = FEHLBERG2
