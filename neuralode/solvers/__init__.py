"""The solver registry: one literal dict from method name to solver class, used everywhere."""

from __future__ import annotations

from .adams import AdamsSolver, ExplicitAdams, ImplicitAdams
from .adaptive import AdaptiveRKSolver
from .adaptive_heun import AdaptiveHeun
from .base import FlatProblem, Solver
from .bosh3 import Bosh3
from .dopri5 import Dopri5
from .dopri8 import Dopri8
from .esdirk_methods import ESDIRKSolver, Kvaerno3, Kvaerno5
from .fehlberg2 import Fehlberg2
from .fixed_grid import FixedGridSolver
from .fixed_grid_methods import RK4, Euler, Heun2, Heun3, Midpoint
from .implicit import ImplicitButcherTableau, ImplicitRKSolver
from .implicit_methods import (
    SDIRK2,
    TRBDF2,
    GaussLegendre4,
    GaussLegendre6,
    ImplicitEuler,
    ImplicitMidpoint,
    RadauIIA3,
    RadauIIA5,
    Trapezoid,
)
from .scipy_wrapper import ScipySolver
from .tableau import ButcherTableau, DenseOutput
from .tsit5 import Tsit5

SOLVERS: dict[str, type[Solver]] = {
    "euler": Euler,
    "midpoint": Midpoint,
    "heun2": Heun2,
    "heun3": Heun3,
    "rk4": RK4,
    "adaptive_heun": AdaptiveHeun,
    "fehlberg2": Fehlberg2,
    "bosh3": Bosh3,
    "dopri5": Dopri5,
    "tsit5": Tsit5,
    "dopri8": Dopri8,
    "explicit_adams": ExplicitAdams,
    "implicit_adams": ImplicitAdams,
    "fixed_adams": ImplicitAdams,  # torchdiffeq's older name for implicit_adams
    "implicit_euler": ImplicitEuler,
    "implicit_midpoint": ImplicitMidpoint,
    "trapezoid": Trapezoid,
    "radauIIA3": RadauIIA3,
    "radauIIA5": RadauIIA5,
    "gl4": GaussLegendre4,
    "gl6": GaussLegendre6,
    "sdirk2": SDIRK2,
    "trbdf2": TRBDF2,
    "kvaerno3": Kvaerno3,
    "kvaerno5": Kvaerno5,
    "scipy_solver": ScipySolver,
}
DEFAULT_METHOD = "dopri5"
ALIASES = {"fixed_adams": "implicit_adams"}  # names kept for compatibility; tests skip them

__all__ = [
    "ALIASES",
    "DEFAULT_METHOD",
    "SOLVERS",
    "AdamsSolver",
    "AdaptiveRKSolver",
    "ButcherTableau",
    "DenseOutput",
    "ESDIRKSolver",
    "FixedGridSolver",
    "FlatProblem",
    "ImplicitButcherTableau",
    "ImplicitRKSolver",
    "Solver",
]
