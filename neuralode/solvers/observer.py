"""``StepObserver``: what an engine reports about its steps, in one place.

Every engine calls ``attempt``/``reject``/``accept`` and nothing else for its bookkeeping: the
observer counts the steps, calls the user's step callbacks, and records what a gradient strategy or
dense output asked for (a :class:`StepTrace` of accepted steps, every step's interpolant).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ..stats import PassCounts


@dataclass
class StepTrace:
    """The accepted steps of one solve, so that a backward pass can replay them exactly.

    Every step's start and end time is kept (floats: cheap); the state at the start of a step only
    every ``every`` steps (the checkpoints), so memory is O(steps / every) states.
    """

    every: int = 1
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    states: list[Tensor] = field(default_factory=list)

    def record(self, t0: float, t1: float, y: Tensor) -> None:
        """One accepted step from (t0, y) to t1."""
        if len(self.starts) % self.every == 0:
            self.states.append(y.detach())
        self.starts.append(t0)
        self.ends.append(t1)


class StepObserver:
    """Counts, callbacks and recordings of one solve (``func`` counts its own evaluations into the
    same ``counts``).

    Attributes:
        counts: the :class:`PassCounts` this solve adds to.
        callbacks: the user's step callbacks on the flat state, or None.
        trace: a :class:`StepTrace` to record accepted steps in (``odeint_checkpoint``), or None.
        dense: an object whose ``record(t, dt, y, stages, dtab)`` keeps every accepted step's
            interpolant (``odeint_dense``), or None.
    """

    __slots__ = ("callbacks", "counts", "dense", "trace")

    def __init__(
        self, counts: PassCounts, callbacks: Any = None, trace: StepTrace | None = None, dense: Any = None
    ) -> None:
        self.counts, self.callbacks, self.trace, self.dense = counts, callbacks, trace, dense

    def attempt(self, t: float, y: Tensor, dt: float) -> None:
        """A step of size dt from (t, y) is about to be taken."""
        self.counts.n_steps += 1
        callbacks = self.callbacks
        if callbacks is not None and callbacks.step is not None:
            callbacks.step(t, y, dt)

    def reject(self, t: float, y: Tensor, dt: float) -> None:
        self.counts.n_rejected += 1
        callbacks = self.callbacks
        if callbacks is not None and callbacks.reject is not None:
            callbacks.reject(t, y, dt)

    def accept(self, t: float, t1: float, y: Tensor, dt: float) -> None:
        """The step from (t, y) to t1 is accepted (before the engine moves on)."""
        self.counts.n_accepted += 1
        if self.trace is not None:
            self.trace.record(t, t1, y)
        callbacks = self.callbacks
        if callbacks is not None and callbacks.accept is not None:
            callbacks.accept(t, y, dt)
