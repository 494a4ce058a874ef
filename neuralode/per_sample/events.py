"""Per-sample events: every sample steps until its own first zero crossing of ``event_fn(t, y)``.

``event_fn`` is called as the per-sample func is: ``t`` a (B,) tensor (one time per sample), ``y`` the
state with its leading sample dimension; it returns (B,) or (B, K) values, one row per sample (a row's
values may depend on that row only). A sample's event is the first time an entry of its row changes
sign (an entry that starts at exactly 0 takes the sign it first moves to, as in the joint search).
event_fn always sees the whole batch (also with ``compact``; finished rows' values are ignored). It
is located per row by a batched bisection on each sample's dense output, to double precision in t,
without a graph; the gradient of each event time comes from the implicit function theorem, row by row,
as in :mod:`neuralode._setup.event_function`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._setup.event_function import _check_event_values
from .problem import SampleFunc, SampleLayout

_BISECTIONS = 200  # a bound; every row stops when its bracket no longer shrinks in double precision


class SampleEvent:
    """The user's ``event_fn`` on the (B, N) flat state with (B,) float64 times; values (B, K)."""

    def __init__(self, event_fn: Callable, layout: SampleLayout) -> None:
        self.event_fn, self.layout = event_fn, layout
        self.sign0: Tensor | None = None
        self.tau: Tensor | None = None  # (B,) float64, set by the engine: each event time (NaN: none)
        self.k: Tensor | None = None  # (B,) long: the entry of each row that crossed
        self._checked = False

    def values(self, t: Tensor, y: Tensor) -> Tensor:
        """(B,) times, (B, N) states -> (B, K) values in the state's dtype."""
        batch = y.shape[0]
        out = self.event_fn(t.to(self.layout.dtype), self.layout.unflatten(y))
        if not isinstance(out, Tensor):
            raise TypeError(f"event_fn must return a tensor, got {type(out).__name__}")
        if not self._checked:
            if out.dim() not in (1, 2) or out.shape[0] != batch:
                raise ValueError(
                    f"with per_sample=True, event_fn(t, y) must return shape (B,) or (B, K) with B = {batch} "
                    f"(one row of values per sample), got {tuple(out.shape)}"
                )
            _check_event_values(out, float(t[0]))
            self._checked = True
        return out.reshape(batch, -1)

    @torch.no_grad()
    def start(self, t: Tensor, y: Tensor) -> None:
        self.sign0 = torch.sign(self.values(t, y))

    @torch.no_grad()
    def crossed(self, t: Tensor, y: Tensor, rows: Tensor) -> Tensor:
        """(B,) bool: has an entry of a row in ``rows`` (a (B,) mask) changed sign since its start? Rows
        in ``rows`` whose entries started at 0 take the sign they move to."""
        assert self.sign0 is not None
        sign = torch.sign(self.values(t, y))
        adopt = rows[:, None] & (self.sign0 == 0)
        self.sign0 = torch.where(adopt, sign, self.sign0)
        return rows & self._changed(sign).any(dim=1)

    def _changed(self, sign: Tensor) -> Tensor:
        return (sign != self.sign0) & (self.sign0 != 0)

    @torch.no_grad()
    def locate(self, interp: Callable[[Tensor], Tensor], t0: Tensor, t1: Tensor, rows: Tensor):
        """Bisect every row in ``rows`` inside (t0, t1], where it has crossed at t1 but not at t0.

        Returns ((B,) float64 crossing times: the first representable time at which the row has
        crossed; (B,) long: the index of its first entry that crossed there). Other rows get t1 and 0.
        """
        lo, hi = t0.clone(), t1.clone()
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            moving = rows & (mid != lo) & (mid != hi)
            if not bool(moving.any()):
                break
            mid = torch.where(moving, mid, hi)
            changed = self._changed(torch.sign(self.values(mid, interp(mid)))).any(dim=1)
            hi = torch.where(moving & changed, mid, hi)
            lo = torch.where(moving & ~changed, mid, lo)
        changed = self._changed(torch.sign(self.values(hi, interp(hi))))
        k = torch.where(rows, changed.to(torch.long).argmax(dim=1), 0)
        return hi, k


def attach_sample_event_gradient(
    func: SampleFunc, event: SampleEvent, tau: Tensor, y_tau: Tensor, k: Tensor, found: Tensor
) -> tuple[Tensor, Tensor]:
    """(tau (B,), y(tau) (B, N)) with gradients through every found row's event time.

    Values are unchanged: tau + delta and y + f delta with delta = -(g - g.detach()) / (dg/dt + dg/dy .
    f) per row, g_b = event_fn(tau, y(tau))[b, k_b] carrying the graph of y(tau) and of event_fn. Rows
    not ``found`` (failed samples) keep their values without this term.
    """
    dtype = y_tau.dtype
    tau_t = tau.to(dtype)
    if not torch.is_grad_enabled():
        return tau_t, y_tau
    safe_tau = torch.where(found, tau, 0.0)
    safe_y = torch.where(found[:, None], y_tau, 0.0)
    g = event.values(safe_tau, safe_y).gather(1, k[:, None]).squeeze(1)
    if not g.requires_grad:
        return tau_t, y_tau
    with torch.enable_grad():
        t_ = safe_tau.detach().clone().requires_grad_(True)
        y_ = safe_y.detach().requires_grad_(True)
        f = func(t_, y_).detach()
        gk = event.values(t_, y_).gather(1, k[:, None]).squeeze(1)
        dg_dt, dg_dy = torch.autograd.grad(gk.sum(), (t_, y_), allow_unused=True)
    rate = torch.zeros_like(tau) if dg_dt is None else dg_dt.detach().double()
    if dg_dy is not None:
        rate = rate + (dg_dy.detach() * f).sum(dim=1).double()
    flat = found & (rate == 0)
    if bool(flat.any()):
        rows = flat.nonzero().flatten().tolist()
        raise ValueError(
            f"event_fn touches zero tangentially for samples {rows[:10]} at their event times (d/dt "
            "event_fn(t, y(t)) = 0): the event time has no gradient there; reformulate event_fn so that "
            "it crosses zero"
        )
    rate = torch.where(found, rate, 1.0).to(dtype)
    delta = torch.where(found, -(g - g.detach()) / rate, 0.0)
    return tau_t + delta, y_tau + f * delta[:, None]
