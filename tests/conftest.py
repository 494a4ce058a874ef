import pytest
import torch
from hypothesis import HealthCheck, settings

from neuralode import SOLVERS
from neuralode.solvers import (
    ALIASES,
    AdamsSolver,
    AdaptiveRKSolver,
    ButcherTableau,
    ESDIRKSolver,
    FixedGridSolver,
    ImplicitRKSolver,
)

# Generated cases are the same on every run (CI reproduces a failure), have no time limit per case
# (solves vary with the machine's load) and keep no example database in the checkout.
settings.register_profile(
    "neuralode", deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("neuralode")

# Every registered name except aliases (an alias runs the same class as its target).
METHODS = {m: cls for m, cls in SOLVERS.items() if m not in ALIASES}
ADAPTIVE_METHODS = sorted(m for m, cls in METHODS.items() if issubclass(cls, AdaptiveRKSolver))
# Adaptive explicit Runge-Kutta (a ButcherTableau: tests that drive rk_step or read its interpolant use
# these); the adaptive implicit ESDIRK methods run on the same engine with their own step function.
EXPLICIT_ADAPTIVE_METHODS = sorted(
    m for m in ADAPTIVE_METHODS if isinstance(SOLVERS[m].tableau, ButcherTableau)
)
ESDIRK_METHODS = sorted(m for m, cls in METHODS.items() if issubclass(cls, ESDIRKSolver))
ADAMS_METHODS = sorted(m for m, cls in METHODS.items() if issubclass(cls, AdamsSolver))
IMPLICIT_METHODS = sorted(m for m, cls in METHODS.items() if issubclass(cls, ImplicitRKSolver))
# Explicit Runge-Kutta on a fixed grid (tests that drive rk_step directly use these).
FIXED_METHODS = sorted(
    m
    for m, cls in METHODS.items()
    if issubclass(cls, FixedGridSolver) and m not in ADAMS_METHODS and m not in IMPLICIT_METHODS
)
ALL_FIXED_METHODS = sorted(m for m, cls in METHODS.items() if issubclass(cls, FixedGridSolver))


def method_order(method: str) -> int:
    """The order a method is built to have (Adams: its default max_order)."""
    cls = SOLVERS[method]
    return 4 if issubclass(cls, AdamsSolver) else cls.tableau.order


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
