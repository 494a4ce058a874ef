"""``Solution``: what :func:`neuralode.solve` returns, and the front doors unpack."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ._setup.layout import UserState
from .stats import SolveStats


@dataclass
class Solution:
    """One solve's result.

    Attributes:
        ys: the state at every output time, ``(T, *y0.shape)`` (a tuple of such for a tuple y0); with an
            event, ``[y0, y(event_t)]``.
        stats: the forward counts, and the backward counts once a backward pass has run.
        status: "success" (every output time reached) or "event" (stopped at the event).
        event_t: the event time (differentiable), or None.
    """

    ys: UserState
    stats: SolveStats
    status: str = "success"
    event_t: Tensor | None = None
