"""Fixed-grid implicit Runge-Kutta methods for stiff problems, as tableaux.

Names follow torchdiffeq. Coefficients: Hairer & Wanner, Solving ODEs II (1996), IV.5 (Gauss,
Radau IIA) and IV.6 (SDIRK); TR-BDF2 as an ESDIRK tableau from Hosea & Shampine (1996).
"""

from __future__ import annotations

import math
from typing import ClassVar

from .implicit import ImplicitButcherTableau, ImplicitRKSolver

_S2, _S3, _S6, _S15 = math.sqrt(2.0), math.sqrt(3.0), math.sqrt(6.0), math.sqrt(15.0)

IMPLICIT_EULER = ImplicitButcherTableau.from_lists(
    "implicit_euler", c=[1.0], a=[[1.0]], b=[1.0], order=1, l_stable=True
)
IMPLICIT_MIDPOINT = ImplicitButcherTableau.from_lists(
    "implicit_midpoint", c=[0.5], a=[[0.5]], b=[1.0], order=2, l_stable=False
)
TRAPEZOID = ImplicitButcherTableau.from_lists(
    "trapezoid", c=[0.0, 1.0], a=[[0.0, 0.0], [0.5, 0.5]], b=[0.5, 0.5], order=2, l_stable=False
)
RADAU_IIA3 = ImplicitButcherTableau.from_lists(
    "radauIIA3",
    c=[1 / 3, 1.0],
    a=[[5 / 12, -1 / 12], [3 / 4, 1 / 4]],
    b=[3 / 4, 1 / 4],
    order=3,
    l_stable=True,
)
RADAU_IIA5 = ImplicitButcherTableau.from_lists(
    "radauIIA5",
    c=[(4 - _S6) / 10, (4 + _S6) / 10, 1.0],
    a=[
        [(88 - 7 * _S6) / 360, (296 - 169 * _S6) / 1800, (-2 + 3 * _S6) / 225],
        [(296 + 169 * _S6) / 1800, (88 + 7 * _S6) / 360, (-2 - 3 * _S6) / 225],
        [(16 - _S6) / 36, (16 + _S6) / 36, 1 / 9],
    ],
    b=[(16 - _S6) / 36, (16 + _S6) / 36, 1 / 9],
    order=5,
    l_stable=True,
)
GL4_TABLEAU = ImplicitButcherTableau.from_lists(
    "gl4",
    c=[0.5 - _S3 / 6, 0.5 + _S3 / 6],
    a=[[0.25, 0.25 - _S3 / 6], [0.25 + _S3 / 6, 0.25]],
    b=[0.5, 0.5],
    order=4,
    l_stable=False,
)
GL6_TABLEAU = ImplicitButcherTableau.from_lists(
    "gl6",
    c=[0.5 - _S15 / 10, 0.5, 0.5 + _S15 / 10],
    a=[
        [5 / 36, 2 / 9 - _S15 / 15, 5 / 36 - _S15 / 30],
        [5 / 36 + _S15 / 24, 2 / 9, 5 / 36 - _S15 / 24],
        [5 / 36 + _S15 / 30, 2 / 9 + _S15 / 15, 5 / 36],
    ],
    b=[5 / 18, 4 / 9, 5 / 18],
    order=6,
    l_stable=False,
)
_G = 1 - _S2 / 2  # SDIRK2: the L-stable 2-stage, 2nd-order choice of gamma
SDIRK2 = ImplicitButcherTableau.from_lists(
    "sdirk2", c=[_G, 1.0], a=[[_G, 0.0], [1 - _G, _G]], b=[1 - _G, _G], order=2, l_stable=True
)
_GT = 2 - _S2  # TR-BDF2: a trapezoid stage to t + gamma dt, then BDF2 to t + dt
TRBDF2 = ImplicitButcherTableau.from_lists(
    "trbdf2",
    c=[0.0, _GT, 1.0],
    a=[[0.0, 0.0, 0.0], [_GT / 2, _GT / 2, 0.0], [_S2 / 4, _S2 / 4, _GT / 2]],
    b=[_S2 / 4, _S2 / 4, _GT / 2],
    order=2,
    l_stable=True,
)


class ImplicitEuler(ImplicitRKSolver):
    tableau: ClassVar[ImplicitButcherTableau] = IMPLICIT_EULER


class ImplicitMidpoint(ImplicitRKSolver):
    tableau: ClassVar[ImplicitButcherTableau] = IMPLICIT_MIDPOINT


class Trapezoid(ImplicitRKSolver):
    tableau: ClassVar[ImplicitButcherTableau] = TRAPEZOID


class RadauIIA3(ImplicitRKSolver):
    tableau: ClassVar[ImplicitButcherTableau] = RADAU_IIA3


class RadauIIA5(ImplicitRKSolver):
    tableau: ClassVar[ImplicitButcherTableau] = RADAU_IIA5


class GaussLegendre4(ImplicitRKSolver):
    tableau: ClassVar[ImplicitButcherTableau] = GL4_TABLEAU


class GaussLegendre6(ImplicitRKSolver):
    tableau: ClassVar[ImplicitButcherTableau] = GL6_TABLEAU


class SDIRK2(ImplicitRKSolver):
    tableau: ClassVar[ImplicitButcherTableau] = SDIRK2


class TRBDF2(ImplicitRKSolver):
    tableau: ClassVar[ImplicitButcherTableau] = TRBDF2
