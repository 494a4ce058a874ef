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


class EventNotFoundError(MaxStepsExceededError):
    """An event search (``event_fn``) ended without a sign change: its step bound was reached, or the
    step size grew until time would overflow (no end time bounds an event search)."""


class StepSizeUnderflowError(SolverError):
    """The step size became too small to change the time (t + dt == t)."""


class NonFiniteStateError(SolverError):
    """The state or its derivative became NaN or infinite."""


class NewtonConvergenceError(SolverError):
    """Newton's method did not solve an implicit method's stage equations within ``max_iters``."""


class ToleranceWarning(UserWarning):
    """A tolerance the state's dtype cannot deliver was raised to one it can (filter it with this class)."""


class AdjointParamsWarning(UserWarning):
    """``odeint_adjoint``/``odeint_checkpoint``: func uses a tensor that requires grad but is not among
    ``adjoint_params``, so its gradient would silently stay None."""


def event_not_found(where: str, t0: float, t: float, why: str) -> EventNotFoundError:
    """The error of an event search that ends without a crossing, saying where it stopped and why."""
    return EventNotFoundError(
        f"event_fn never changed sign: {where} searched from t={t0!r} to t={t!r} and stopped ({why}). "
        "Check that an entry of event_fn(t, y) changes sign along the solution in the direction of t "
        "(t[1] only gives the direction), or raise options['max_num_steps'].",
        t,
    )
