"""Bogacki-Shampine 3(2), FSAL (Bogacki & Shampine, Appl. Math. Lett. 2(4), 1989).

Dense output is the cubic Hermite interpolant (third order), the same one SciPy's RK23 uses.
"""

from __future__ import annotations

from typing import ClassVar

from .adaptive import AdaptiveRKSolver
from .dense import hermite_weights
from .tableau import ButcherTableau, DenseOutput

_B = [2 / 9, 1 / 3, 4 / 9, 0.0]
BOSH3 = ButcherTableau.from_lists(
    "bosh3",
    c=[0.0, 1 / 2, 3 / 4, 1.0],
    a=[[], [1 / 2], [0.0, 3 / 4], [2 / 9, 1 / 3, 4 / 9]],
    b=_B,
    b_low=[7 / 24, 1 / 4, 1 / 3, 1 / 8],
    order=3,
    embedded_order=2,
    dense=DenseOutput(weights=hermite_weights(_B, fsal=True), order=3),
)


class Bosh3(AdaptiveRKSolver):
    tableau: ClassVar[ButcherTableau] = BOSH3
