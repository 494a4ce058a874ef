"""Regularised neural ODEs: penalties integrated along the solve that make the dynamics cheap to solve.

:class:`Regularization` holds the weights (kinetic energy and Jacobian Frobenius norm, Finlay et al. 2020;
the total time derivative, Kelly et al. 2020); :func:`solve_regularized` solves once with the penalties
as extra states and returns the trajectory and the penalties. ``SolverConfig(regularization=...)`` gives
them to the models (``last_regularization`` of ODEBlock, CNF and LatentODE, which the experiments'
losses add).
"""

from .config import TERMS as TERMS
from .config import Regularization as Regularization
from .dynamics import RegularizedDynamics as RegularizedDynamics
from .integrands import jacobian_frobenius as jacobian_frobenius
from .integrands import kinetic_energy as kinetic_energy
from .integrands import time_derivative as time_derivative
from .integrands import total_time_derivative as total_time_derivative
from .solve import RegularizedSolution as RegularizedSolution
from .solve import solve_regularized as solve_regularized

__all__ = [
    "TERMS",
    "Regularization",
    "RegularizedDynamics",
    "RegularizedSolution",
    "jacobian_frobenius",
    "kinetic_energy",
    "solve_regularized",
    "time_derivative",
    "total_time_derivative",
]
