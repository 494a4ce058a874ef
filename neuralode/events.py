"""``odeint_event``: torchdiffeq's convenience form of an event solve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._setup.layout import UserState
from .odeint import odeint


def odeint_event(
    func: Callable[[Tensor, UserState], UserState],
    y0: UserState,
    t0: Tensor | float,
    *,
    event_fn: Callable[[Tensor, UserState], Tensor],
    reverse_time: bool = False,
    odeint_interface: Callable = odeint,
    **kwargs: Any,
) -> tuple[Tensor, UserState]:
    """Integrate from ``t0`` (backwards if ``reverse_time``) until ``event_fn(t, y)`` crosses zero.

    Returns ``(event_t, solution)`` as ``odeint(..., event_fn=...)`` does; ``odeint_interface`` may be
    ``odeint_adjoint``. Other keyword arguments (rtol, atol, method, options, ...) are passed on. With
    ``per_sample=True`` every sample (dim 0 of y0) stops at its own event: ``event_t`` is (B,), t0 a
    number or a (B,) tensor, and event_fn gets t as (B,) and returns (B,) or (B, K) values.
    """
    if not callable(event_fn):
        raise TypeError(
            f"event_fn must be callable as event_fn(t, y) -> tensor, got {type(event_fn).__name__}"
        )
    if not isinstance(t0, Tensor):
        t0 = torch.tensor(float(t0), dtype=torch.float64)
    step = -1.0 if reverse_time else 1.0
    if kwargs.get("per_sample") not in (None, False) and t0.dim() == 1:  # one start time per sample
        return odeint_interface(
            func, y0, torch.stack([t0, t0.detach() + step], dim=1), event_fn=event_fn, **kwargs
        )
    if t0.numel() != 1:
        raise ValueError(
            f"t0 must be a single time (or, with per_sample=True, a (B,) tensor of one per sample), got a "
            f"tensor of shape {tuple(t0.shape)}"
        )
    start = t0.reshape(1)
    t = torch.cat([start, start.detach() + step])
    return odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)
