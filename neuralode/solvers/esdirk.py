"""One step of an ESDIRK pair (:mod:`esdirk_tableaux`) by simplified Newton with a dense Jacobian.

The building block of the adaptive implicit engine (not yet wired into ``odeint``): the Jacobian
df/dy at the step's start comes from autograd once per step, (I - dt*gamma*J) is LU-factorised
once and reused for every implicit stage (all share gamma). Newton failure is reported, not raised,
so an engine can reject the step and shrink it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .esdirk_tableaux import ESDIRKTableau
from .implicit import jacobian


@dataclass
class ESDIRKStep:
    """A step's result: new state, error estimate y1 - y1_hat, f at the end, Newton counts."""

    y1: Tensor
    error: Tensor
    f1: Tensor
    converged: bool
    n_newton_iters: int
    n_factorizations: int


def esdirk_step(
    func,
    tab: ESDIRKTableau,
    t: float,
    y: Tensor,
    dt: float,
    scale: Tensor | float,
    max_iters: int = 10,
    f0: Tensor | None = None,
) -> ESDIRKStep:
    """Step y from t to t + dt; Newton stops when the scaled update's RMS norm (``scale``: atol +
    rtol*|y|) drops under 1e-2 of the tolerance; ``func(t, y, perturb)`` as in FlatProblem."""
    f_start, jac = jacobian(func, t, y, 0.0)
    if f0 is None:  # jacobian() detaches its f; recompute it where gradients flow through the step
        f0 = func(t, y, 0.0) if torch.is_grad_enabled() else f_start
    n = y.numel()
    eye = torch.eye(n, dtype=y.dtype, device=y.device)
    with torch.no_grad():
        lu, pivots = torch.linalg.lu_factor(eye - (dt * tab.gamma) * jac)
    ks = [f0]
    iters, converged = 0, True
    for i in range(1, tab.num_stages):
        explicit = y + dt * sum(tab.a[i][j] * ks[j] for j in range(i) if tab.a[i][j] != 0.0)
        z = explicit + dt * tab.gamma * ks[-1]  # predictor: the previous stage's slope
        ti = t + tab.c[i] * dt
        prev = math.inf
        for _ in range(max_iters):
            iters += 1
            fz = func(ti, z, 0.0)
            residual = z - explicit - (dt * tab.gamma) * fz
            dz = -torch.linalg.lu_solve(lu, pivots, residual.reshape(n, 1)).reshape(y.shape)
            z = z + dz
            with torch.no_grad():
                size = float(torch.linalg.vector_norm(dz / scale) / math.sqrt(max(n, 1)))
            if not math.isfinite(size) or size > 2 * prev:
                converged = False
                break
            prev = size
            if size <= 1e-2:
                break
        else:
            converged = False
        if not converged:
            break
        ks.append((z - explicit) / (dt * tab.gamma))  # the stage's slope without another f call
    if not converged:
        nan = torch.full_like(y, math.nan)
        return ESDIRKStep(nan, nan, nan, False, iters, 1)
    y1 = z  # stiffly accurate: the last stage is the solution
    error = dt * sum(e * k for e, k in zip(tab.b_error, ks) if e != 0.0)
    return ESDIRKStep(y1, error, ks[-1], True, iters, 1)


def solve_to(
    func,
    tab: ESDIRKTableau,
    t0: float,
    t1: float,
    y0: Tensor,
    rtol: float,
    atol: float,
    dt0: float,
    max_steps: int = 100_000,
) -> tuple[Tensor, int, int]:
    """Prototype adaptive loop (integral controller, Newton failure shrinks dt by 4): y(t1), accepted
    and rejected steps. A stand-in until the shared adaptive engine takes implicit steps."""
    t, y, dt = t0, y0, dt0
    accepted = rejected = 0
    k = tab.embedded_order + 1
    while (t1 - t) * (1 if t1 > t0 else -1) > 0:
        if accepted + rejected >= max_steps:
            raise RuntimeError(f"solve_to: max_steps={max_steps} reached at t={t!r}")
        dt = min(dt, t1 - t) if t1 > t0 else max(dt, t1 - t)
        scale = atol + rtol * y.detach().abs()
        r = esdirk_step(func, tab, t, y, dt, scale)
        if not r.converged:
            rejected += 1
            dt /= 4
            if abs(dt) < 1e-14 * max(abs(t), 1.0):
                raise RuntimeError(f"solve_to: step size underflow at t={t!r}")
            continue
        scale = atol + rtol * torch.maximum(y.detach().abs(), r.y1.detach().abs())
        ratio = float(torch.linalg.vector_norm(r.error / scale) / math.sqrt(y.numel()))
        factor = min(5.0, max(0.2, 0.9 * ratio ** (-1.0 / k))) if ratio > 0 else 5.0
        if ratio <= 1.0:
            t, y = t + dt, r.y1
            accepted += 1
        else:
            rejected += 1
            factor = min(factor, 0.9)
        dt *= factor
    return y, accepted, rejected
