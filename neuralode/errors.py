"""Exceptions raised while solving, each worded to say what went wrong and how to fix it.

Bad arguments raise the built-in ``ValueError``/``TypeError`` before any work starts; the classes
here are for failures that can only be discovered during the solve.
"""

from __future__ import annotations


class SolverError(RuntimeError):
    """Base class for failures discovered during a solve.

    Attributes:
        t: the time the solver had reached when it failed (user's time axis).
    """

    def __init__(self, message: str, t: float) -> None:
        super().__init__(message)
        self.t = t


class MaxStepsExceededError(SolverError):
    """More than ``max_num_steps`` steps were attempted."""


class StepSizeUnderflowError(SolverError):
    """The step size became too small to change the time (t + dt == t)."""


class NonFiniteStateError(SolverError):
    """The state or its derivative became NaN or infinite."""


class NewtonConvergenceError(SolverError):
    """Newton's method did not solve an implicit method's stage equations within ``max_iters``."""


class ToleranceWarning(UserWarning):
    """A tolerance the state's dtype cannot deliver was raised to one it can (filter it with this class)."""
