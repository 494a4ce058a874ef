"""``Direct``: backpropagate through the solver's operations (``odeint``'s gradient)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from .._setup.prepare import Setup
from ..stats import SolveStats


@dataclass(frozen=True)
class Direct:
    """Backpropagate through every operation of the solver: exact gradients of the discrete solve,
    memory growing with the number of steps."""

    name = "direct"
    caller = "odeint"

    def params(self, func: Callable, params: Sequence[Tensor] | None) -> tuple[Tensor, ...]:
        """Autograd finds every tensor func uses: nothing to collect."""
        return ()

    def plan(self, setup: Setup, params: tuple[Tensor, ...], stats: SolveStats) -> _DirectPlan:
        return _DirectPlan(setup)


@dataclass
class _DirectPlan:
    setup: Setup

    def solve(self, y0: Tensor, params: tuple[Tensor, ...]) -> Tensor:
        return self.setup.integrate(y0)

    def until_event(self, y0: Tensor, params: tuple[Tensor, ...]) -> tuple[float, Tensor, int]:
        return self.setup.integrate_until_event(y0)
