"""neuralode: ODE solvers with the adjoint method for PyTorch (Chen et al., NeurIPS 2018).

Call-compatible with torchdiffeq's ``odeint``/``odeint_adjoint``; solve statistics come back as data.
"""

from .dense_solution import odeint_dense as odeint_dense
from .errors import AdjointParamsWarning as AdjointParamsWarning
from .errors import EventNotFoundError as EventNotFoundError
from .errors import MaxStepsExceededError as MaxStepsExceededError
from .errors import NewtonConvergenceError as NewtonConvergenceError
from .errors import NonFiniteStateError as NonFiniteStateError
from .errors import SolverError as SolverError
from .errors import StepSizeUnderflowError as StepSizeUnderflowError
from .errors import ToleranceWarning as ToleranceWarning
from .events import odeint_event as odeint_event
from .gradients import Adjoint as Adjoint
from .gradients import Checkpointed as Checkpointed
from .gradients import Direct as Direct
from .models import ODEBlock as ODEBlock
from .odeint import odeint as odeint
from .odeint import odeint_adjoint as odeint_adjoint
from .odeint import odeint_checkpoint as odeint_checkpoint
from .per_sample import PerSample as PerSample
from .per_sample import PerSampleSolveError as PerSampleSolveError
from .solution import Solution as Solution
from .solve import solve as solve
from .solver_config import SolverConfig as SolverConfig
from .solvers import SOLVERS as SOLVERS
from .stats import PassCounts as PassCounts
from .stats import SolveStats as SolveStats

__version__ = "0.1.0"
__all__ = [
    "SOLVERS",
    "Adjoint",
    "AdjointParamsWarning",
    "Checkpointed",
    "Direct",
    "EventNotFoundError",
    "MaxStepsExceededError",
    "NewtonConvergenceError",
    "NonFiniteStateError",
    "ODEBlock",
    "PassCounts",
    "PerSample",
    "PerSampleSolveError",
    "Solution",
    "SolveStats",
    "SolverConfig",
    "SolverError",
    "StepSizeUnderflowError",
    "ToleranceWarning",
    "odeint",
    "odeint_adjoint",
    "odeint_checkpoint",
    "odeint_dense",
    "odeint_event",
    "solve",
]
