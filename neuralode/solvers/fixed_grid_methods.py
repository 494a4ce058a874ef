"""Classic explicit fixed-grid Runge-Kutta methods (no error estimate), as tableaux.

Names follow torchdiffeq: ``euler``, ``midpoint``, ``heun2``, ``heun3``, ``rk4`` (Kutta's 3/8 rule).
Butcher, Numerical Methods for Ordinary Differential Equations (2016), section 23.
"""

from __future__ import annotations

from typing import ClassVar

from .fixed_grid import FixedGridSolver
from .tableau import ButcherTableau

EULER = ButcherTableau.from_lists("euler", c=[0.0], a=[[]], b=[1.0], order=1)
MIDPOINT = ButcherTableau.from_lists("midpoint", c=[0.0, 0.5], a=[[], [0.5]], b=[0.0, 1.0], order=2)
HEUN2 = ButcherTableau.from_lists("heun2", c=[0.0, 1.0], a=[[], [1.0]], b=[0.5, 0.5], order=2)
HEUN3 = ButcherTableau.from_lists(
    "heun3", c=[0.0, 1 / 3, 2 / 3], a=[[], [1 / 3], [0.0, 2 / 3]], b=[1 / 4, 0.0, 3 / 4], order=3
)
RK4_38 = ButcherTableau.from_lists(
    "rk4",
    c=[0.0, 1 / 3, 2 / 3, 1.0],
    a=[[], [1 / 3], [-1 / 3, 1.0], [1.0, -1.0, 1.0]],
    b=[1 / 8, 3 / 8, 3 / 8, 1 / 8],
    order=4,
)


class Euler(FixedGridSolver):
    tableau: ClassVar[ButcherTableau] = EULER


class Midpoint(FixedGridSolver):
    tableau: ClassVar[ButcherTableau] = MIDPOINT


class Heun2(FixedGridSolver):
    tableau: ClassVar[ButcherTableau] = HEUN2


class Heun3(FixedGridSolver):
    tableau: ClassVar[ButcherTableau] = HEUN3


class RK4(FixedGridSolver):
    tableau: ClassVar[ButcherTableau] = RK4_38
