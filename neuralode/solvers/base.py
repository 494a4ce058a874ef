"""What every solver engine takes and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from ..stats import SolverCounts
from .tableau import ButcherTableau


@dataclass
class FlatProblem:
    """An initial value problem on a flat state, as the engines see it.

    Attributes:
        func: f(t: float, y: (N,)) -> (N,).
        y0: (N,) initial state, at ``times[0]``.
        times: output times (floats), strictly increasing or strictly decreasing.
        rtol, atol: tolerances of the error control (adaptive methods): a float, or an (N,) tensor with
            one per element of the flat state (per-component tolerances; see ``checks.check_tolerance``).
        norm: maps the scaled error (N,) to a 0-dim tensor.
        counts: where steps are counted (func counts its own evaluations).
        user_func, user_y0: the user's func and y0, for a ``grid_constructor``.
        callbacks: the user's step callbacks on the flat state (None: none defined).
        grid: a fixed grid to use instead of calling the ``grid_constructor`` (the adjoint's slices).
        step_hint: adaptive methods start from ``step_hint.h`` when it is set (and ``first_step`` is
            not), instead of the initial-step selection, and leave their last proposed step in it: the
            adjoint's interval solves carry the step size from one interval to the next.
        trace: when set, the engine records every accepted step in it (``odeint_checkpoint`` replays them).
        dense: when set, adaptive RK engines call ``dense.record(t, dt, y, stages)`` with every accepted
            step's interpolant stages (``odeint_dense``).
    """

    func: Callable[[float, Tensor], Tensor]
    y0: Tensor
    times: list[float]
    rtol: float | Tensor
    atol: float | Tensor
    norm: Callable[[Tensor], Tensor]
    counts: SolverCounts
    user_func: Callable | None = None
    user_y0: Any = None
    t_tensor: Tensor | None = None
    callbacks: Any = None
    grid: list[float] | None = None
    step_hint: StepHint | None = None
    trace: StepTrace | None = None
    dense: Any = None


@dataclass
class StepHint:
    """A step size handed from one solve to the next (see ``FlatProblem.step_hint``)."""

    h: float | None = None
    clamp_end: bool = False


class Solver:
    """A tableau plus an engine; subclasses set ``tableau`` and inherit the engine."""

    tableau: ClassVar[ButcherTableau]
    options_class: ClassVar[type]
    supported_callbacks: ClassVar[tuple[str, ...]] = ()  # step callbacks this engine can honour

    def __init__(self, options: Any) -> None:
        self.options = options

    def integrate(self, problem: FlatProblem) -> Tensor:
        """Solve and return the state at every output time, (len(times), N)."""
        raise NotImplementedError


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
        """One accepted step from (t0, y) to t1; the engine calls this before moving on."""
        if len(self.starts) % self.every == 0:
            self.states.append(y.detach())
        self.starts.append(t0)
        self.ends.append(t1)
