"""Event handling: integrate until ``event_fn(t, y)`` crosses zero, with gradients through the time.

The engines locate the event on their own interpolant (the adaptive method's dense output, the
fixed-grid linear or cubic Hermite interpolant) by bisection to double precision in t, under
``no_grad``. The gradient of the event time comes from the implicit function theorem: g(tau, y(tau))
= 0 gives dtau/dtheta = -(dg/dy . dy/dtheta + dg/dtheta) / (dg/dt + dg/dy . f). It is attached as a
zero-valued term (``attach_event_gradient``), so it works for ``odeint`` and ``odeint_adjoint`` alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .flat_func import FlatFunc
from .layout import StateLayout, time_tensor


class EventFunction:
    """The user's ``event_fn(t, y)`` on flat states; values flattened to a 1-D tensor."""

    def __init__(self, event_fn: Callable, layout: StateLayout) -> None:
        self.event_fn = event_fn
        self.layout = layout
        self.sign0: Tensor | None = None
        self._checked = False

    def values(self, t: float | Tensor, y: Tensor) -> Tensor:
        tt = t if isinstance(t, Tensor) else time_tensor(t, self.layout.dtype, y.device)
        out = self.event_fn(tt, self.layout.unflatten(y))
        if not isinstance(out, Tensor):
            raise TypeError(f"event_fn must return a tensor, got {type(out).__name__}")
        if not self._checked:
            _check_event_values(out, float(tt))
            self._checked = True
        return out.reshape(-1)

    @torch.no_grad()
    def start(self, t: float, y: Tensor) -> None:
        self.sign0 = torch.sign(self.values(t, y))

    @torch.no_grad()
    def crossed(self, t: float, y: Tensor) -> bool:
        """Has any component changed sign since the start? A component that started at exactly 0
        takes the sign it first moves to (so a solve may start on the event surface)."""
        sign = torch.sign(self.values(t, y))
        zero = self.sign0 == 0
        if bool(zero.any()):
            self.sign0 = torch.where(zero, sign, self.sign0)
        return bool(((sign != self.sign0) & (self.sign0 != 0)).any())

    @torch.no_grad()
    def component(self, t: float, y: Tensor) -> int:
        """The index of the first component that has crossed at (t, y)."""
        sign = torch.sign(self.values(t, y))
        return int(((sign != self.sign0) & (self.sign0 != 0)).nonzero()[0])


def _check_event_values(out: Tensor, t: float) -> None:
    """The first output of event_fn, before any step: without a real, finite entry no sign change
    can ever be seen, and the search would only end at its step bound."""
    if not out.dtype.is_floating_point:
        raise TypeError(
            f"event_fn must return a real floating-point tensor (its sign changes are the events), got dtype "
            f"{out.dtype}; return e.g. y[0] - 1.0"
        )
    if out.numel() == 0:
        raise ValueError(
            "event_fn returned an empty tensor: return at least one value whose sign change is the event"
        )
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            f"event_fn returned NaN or infinite values at the start t={t!r}: return finite values whose sign "
            "change is the event"
        )


def attach_event_gradient(
    func: FlatFunc, event: EventFunction, tau: float, y_tau: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """(tau, y(tau)) with gradients through the event time (implicit function theorem).

    Values are unchanged: tau + delta and y + f delta with delta = -(g - g.detach()) / (dg/dt +
    dg/dy . f), where g = event_fn(tau, y(tau))[k] carries the graph of y(tau) and of event_fn.
    """
    dtype, device = func.layout.dtype, y_tau.device
    tau_t = torch.tensor(tau, dtype=dtype, device=device)
    if not torch.is_grad_enabled():
        return tau_t, y_tau
    g = event.values(tau_t, y_tau)[k]
    if not g.requires_grad:
        return tau_t, y_tau
    with torch.enable_grad():
        t_ = tau_t.clone().requires_grad_(True)
        y_ = y_tau.detach().requires_grad_(True)
        f = func.call_tensor_t(t_, y_).detach()
        gk = event.values(t_, y_)[k]
        dg_dt, dg_dy = torch.autograd.grad(gk, (t_, y_), allow_unused=True)
    rate = (0.0 if dg_dt is None else dg_dt) + (0.0 if dg_dy is None else torch.dot(dg_dy, f))
    rate = torch.as_tensor(rate, dtype=dtype, device=device).detach()
    if float(rate) == 0.0:
        raise ValueError(
            f"event_fn touches zero tangentially at t={tau!r} (d/dt event_fn(t, y(t)) = 0): the event time "
            "has no gradient there; reformulate event_fn so that it crosses zero"
        )
    delta = -(g - g.detach()) / rate
    return tau_t + delta, y_tau + f * delta
