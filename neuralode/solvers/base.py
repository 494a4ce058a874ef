"""What every solver engine takes and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from .observer import StepObserver
from .tableau import ButcherTableau


@dataclass
class FlatProblem:
    """An initial value problem on a flat state, as the engines see it.

    Attributes:
        func: f(t: float, y: (N,)) -> (N,).
        y0: (N,) initial state, at ``times[0]``.
        times: output times (floats), strictly increasing or strictly decreasing.
        rtol, atol: tolerances of the error control (adaptive methods): a float, or an (N,) tensor with
            one per element of the flat state (per-component tolerances).
        norm: maps the scaled error (N,) to a 0-dim tensor.
    """

    func: Callable[[float, Tensor], Tensor]
    y0: Tensor
    times: list[float]
    rtol: float | Tensor
    atol: float | Tensor
    norm: Callable[[Tensor], Tensor]

    @property
    def direction(self) -> float:
        """+1.0 forwards in time, -1.0 backwards."""
        return 1.0 if self.times[-1] > self.times[0] else -1.0


class Solver:
    """A tableau plus an engine; subclasses set ``tableau`` and inherit the engine.

    ``integrate(problem, observer, controller=None)`` returns the state at every output time,
    ``(len(times), N)``; the observer sees every step, and the controller (default: the one the
    options ask for) decides where steps end. ``replayable``: recorded steps can be re-run bit for
    bit with a replaying controller (``odeint_checkpoint``).
    """

    tableau: ClassVar[ButcherTableau]
    options_class: ClassVar[type]
    supported_callbacks: ClassVar[tuple[str, ...]] = ()  # step callbacks this engine can honour
    replayable: ClassVar[bool] = False

    def __init__(self, options: Any) -> None:
        self.options = options

    def integrate(self, problem: FlatProblem, observer: StepObserver, controller: Any = None) -> Tensor:
        """Solve and return the state at every output time, (len(times), N)."""
        raise NotImplementedError
