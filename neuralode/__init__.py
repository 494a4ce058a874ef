"""neuralode: ODE solvers with the adjoint method for PyTorch (Chen et al., NeurIPS 2018).

Call-compatible with torchdiffeq's ``odeint``/``odeint_adjoint``; solve statistics come back as data.
"""

from .adjoint import odeint_adjoint as odeint_adjoint
from .checkpoint import odeint_checkpoint as odeint_checkpoint
from .errors import MaxStepsExceededError as MaxStepsExceededError
from .errors import NewtonConvergenceError as NewtonConvergenceError
from .errors import NonFiniteStateError as NonFiniteStateError
from .errors import SolverError as SolverError
from .errors import StepSizeUnderflowError as StepSizeUnderflowError
from .errors import ToleranceWarning as ToleranceWarning
from .event_api import odeint_event as odeint_event
from .models import ODEBlock as ODEBlock
from .odeint import odeint as odeint
from .solvers import SOLVERS as SOLVERS
from .stats import SolverCounts as SolverCounts
from .stats import SolveStats as SolveStats

__version__ = "0.1.0"
__all__ = [
    "SOLVERS",
    "MaxStepsExceededError",
    "NewtonConvergenceError",
    "NonFiniteStateError",
    "ODEBlock",
    "SolveStats",
    "SolverCounts",
    "SolverError",
    "StepSizeUnderflowError",
    "ToleranceWarning",
    "odeint",
    "odeint_adjoint",
    "odeint_checkpoint",
    "odeint_event",
]
