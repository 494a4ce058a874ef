"""ESDIRK steps (:mod:`esdirk_tableaux`) by simplified Newton with a dense Jacobian, for the adaptive engine.

Every implicit stage of an ESDIRK pair has the same diagonal ``gamma``, so one LU factorisation of
(I - dt*gamma*J) serves all stages of a step. :class:`NewtonStepper` is the engine's step function
(:meth:`AdaptiveRKSolver.stepper`): it keeps the Jacobian J = df/dy (from autograd) and the LU across
steps while Newton converges quickly, refactorises when dt changes (by more than 20% above
SMALL_SYSTEM entries: :func:`newton_reuse`), and takes a new Jacobian when Newton converged slowly or
failed with an old one. A step whose Newton iteration fails
with a fresh Jacobian raises :class:`StepFailed`: the engine rejects it and retries 4x shorter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..stats import PassCounts
from .adaptive import StepFailed
from .dense import hermite_weights
from .esdirk_tableaux import ESDIRKTableau
from .implicit import jacobian, newton_tolerance

NEWTON_TOL = 1e-2  # Newton stops at this fraction of the step's tolerance (less below rtol 1e-4)
FAILED_SHRINK = 0.25  # a step whose Newton iteration fails is retried this much shorter
SMALL_SYSTEM = 64  # states up to this size: a Jacobian, an LU and an inverse cost little next to Newton


@dataclass(frozen=True)
class NewtonReuse:
    """When a Jacobian and an LU are kept: the LU while dt stays within ``refactor_change`` of the dt it
    was built for, the Jacobian while Newton contracts by at least ``slow_contraction`` per iteration.

    An LU built for dt_lu and used at dt contracts stiff components only by about |dt / dt_lu - 1| per
    iteration, so reusing it across a 20% change of dt costs Newton iterations; that pays for large
    states, whose Jacobian (n products) and LU (n^3) are dear, not for small ones (Van der Pol at mu =
    1000: 21,080 evaluations with the large-state rule, 14,700 with the small-state one)."""

    refactor_change: float
    slow_contraction: float


def newton_reuse(n: int) -> NewtonReuse:
    """The reuse rule for a state of n entries: refactorise at every change of dt and renew the Jacobian
    unless Newton contracted 100x per iteration up to SMALL_SYSTEM entries, else allow 20% and 5x."""
    return NewtonReuse(0.0, 0.01) if n <= SMALL_SYSTEM else NewtonReuse(0.2, 0.2)


class ESDIRKDeviceTableau:
    """An ESDIRK pair's coefficients on the solve's device, with what the engine reads from a
    :class:`~neuralode.solvers.runge_kutta.DeviceTableau`: ``b_err`` (the error estimate
    dt * K^T b_err), ``fsal`` (the last stage's slope is f(t1, y1): stiffly accurate) and the
    interpolant's ``dense_rows``: cubic Hermite through (y0, f0, y1, f1), third order, written over
    the stages (so kvaerno5's intermediate outputs are third-order accurate, not fifth)."""

    def __init__(self, tableau: ESDIRKTableau, dtype: torch.dtype, device: torch.device) -> None:
        s = tableau.num_stages
        if tableau.c[-1] != 1.0 or tuple(tableau.a[-1]) != tuple(tableau.b):
            raise ValueError(f"ESDIRK tableau {tableau.name!r} must be stiffly accurate (b = last row of a)")
        rows = [tableau.a[i][:i] for i in range(1, s)]
        packed = torch.tensor([x for row in (*rows, tableau.b_error) for x in row], dtype=dtype).to(device)
        views = list(packed.split([len(row) for row in (*rows, tableau.b_error)]))
        self.tableau, self.dtype, self.device = tableau, dtype, device
        self.c, self.gamma = tableau.c, tableau.gamma
        self.num_stages = self.num_dense_stages = s
        self.fsal = True
        self.a = [None, *views[:-1]]  # row i: the explicit part a[i][:i]
        self.b_err = views[-1]
        self.b_err_secondary = None
        self.dense_rows = hermite_weights(tableau.b, fsal=True).tolist()
        self.dense_degree = 3
        self.extra_c: tuple[float, ...] = ()
        self.extra_a: list[Tensor] = []


@dataclass
class _Stages:
    """The stage solve of one step: slopes and the last stage, y1 (None unless converged), Newton
    iterations, the slowest contraction seen, and whether the iteration became non-finite."""

    ks: list[Tensor] | None
    y1: Tensor | None
    iters: int
    contraction: float
    nonfinite: bool = False


# update(t_i, z, perturb, explicit, gdt) -> dz: one Newton correction of z = explicit + gdt*f(t_i, z)
NewtonUpdate = Callable[[float, Tensor, float, Tensor, float], Tensor]
# attach(t_i, perturb, explicit, gdt, z) -> z carrying the stage solution's implicit-function gradient
StageGradient = Callable[[float, float, Tensor, float, Tensor], Tensor]


@dataclass(frozen=True)
class Factorization:
    """I - dt*gamma*J factorised: its LU and, up to SMALL_SYSTEM entries, its inverse, applied by one
    matrix-vector product (a tenth of an ``lu_solve``'s time on a 2x2 system, the whole of it Python and
    dispatch); above that the LU's triangular solves."""

    lu: Tensor
    pivots: Tensor
    inverse: Tensor | None

    def solve(self, residual: Tensor) -> Tensor:
        """(I - dt*gamma*J)^-1 residual, for a flat residual of the state's size."""
        if self.inverse is not None:
            return torch.mv(self.inverse, residual)
        return torch.linalg.lu_solve(self.lu, self.pivots, residual[:, None])[:, 0]


def lu_update(func, factors: Factorization) -> NewtonUpdate:
    """Simplified Newton's correction with a factorised (I - dt_lu*gamma*J)."""

    def update(ti: float, z: Tensor, perturb: float, explicit: Tensor, gdt: float) -> Tensor:
        # z is flat: _solve_stages builds it with addmv from the flat state
        return factors.solve(torch.sub(z - explicit, func(ti, z, perturb), alpha=gdt))

    return update


def _solve_stages(
    func,
    dtab: ESDIRKDeviceTableau,
    t: float,
    dt: float,
    y: Tensor,
    f0: Tensor,
    update: NewtonUpdate | Factorization,
    scale: Tensor | float,
    max_iters: int,
    perturb_end: bool = False,
    attach: StageGradient | None = None,
) -> _Stages:
    """Solve the implicit stages z_i = explicit_i + dt*gamma*f(t_i, z_i) in turn by Newton's method
    (``update``: the correction, or a factorised (I - dt_lu*gamma*J) for simplified Newton); each stage's
    slope is (z_i - explicit_i) / (dt*gamma).

    A stage has converged when the scaled update (RMS of dz / scale, ``scale`` Newton's tolerance from
    :func:`newton_scale`), or the error it predicts from the contraction theta (theta / (1 - theta) *
    |dz|), is at most 1; theta >= 1 is divergence.
    ``perturb_end``: the step ends on a discontinuity of func, so stages at c >= 1 are evaluated just
    inside t + dt (kvaerno5's c = 1.23 stage too, clamped to the step's end). ``attach``: Newton
    iterates on detached states (``update`` must then build no graph) and each converged stage gets
    its gradient from ``attach`` (matrix-free Newton-Krylov, whose iterations are not differentiable);
    without it, autograd differentiates through the iterations.
    """
    if not callable(update):
        update = lu_update(func, update)
    n = y.numel()
    root_n = math.sqrt(max(n, 1))
    gdt = dt * dtab.gamma
    inward = 1.0 if dt > 0 else -1.0
    ks, iters, worst = [f0], 0, 0.0
    for i in range(1, dtab.num_stages):
        explicit = torch.addmv(y, torch.stack(ks, dim=1), dtab.a[i], alpha=dt)
        z = explicit + gdt * ks[-1]  # predictor: the previous stage's slope
        c = dtab.c[i]
        ti, perturb = (t + dt, -inward) if perturb_end and c >= 1.0 else (t + c * dt, 0.0)
        prev, converged = None, False
        target = explicit.detach() if attach is not None else explicit
        if attach is not None:
            z = z.detach()
        for _ in range(max_iters):
            iters += 1
            dz = update(ti, z, perturb, target, gdt)  # with ``attach``: from detached inputs, no graph
            z = z - dz
            size = float(torch.linalg.vector_norm(dz.detach() / scale)) / root_n  # detached: no graph
            if not math.isfinite(size):
                return _Stages(None, None, iters, worst, nonfinite=True)
            if size <= 1.0:
                converged = True
                break
            if prev is not None:
                theta = size / prev
                worst = max(worst, theta)
                if theta >= 1.0:
                    break
                if theta / (1.0 - theta) * size <= 1.0:
                    converged = True
                    break
            prev = size
        if not converged:
            return _Stages(None, None, iters, worst)
        if attach is not None:
            z = attach(ti, perturb, explicit, gdt, z)
        ks.append((z - explicit) / gdt)
    return _Stages(ks, z, iters, worst)  # stiffly accurate: the last stage is y1


def _factorize(jac: Tensor, dt: float, gamma: float) -> Factorization:
    with torch.no_grad():
        eye = torch.eye(jac.shape[0], dtype=jac.dtype, device=jac.device)
        lu, pivots = torch.linalg.lu_factor(eye - (dt * gamma) * jac)
        inverse = torch.linalg.lu_solve(lu, pivots, eye) if jac.shape[0] <= SMALL_SYSTEM else None
        return Factorization(lu, pivots, inverse)


def failed_step(result: _Stages, dtab: ESDIRKDeviceTableau, y: Tensor) -> tuple[Tensor, Tensor]:
    """A step whose Newton iteration failed: NaN stages and state where it became non-finite (the
    engine's non-finite retry), else :class:`StepFailed` (rejected, retried 4x shorter)."""
    if result.nonfinite:
        nan = torch.full((dtab.num_stages, y.numel()), math.nan, dtype=y.dtype, device=y.device)
        return nan, nan[0]
    raise StepFailed(FAILED_SHRINK)


def newton_fraction(rtol: float | Tensor, eps: float) -> float | Tensor:
    """Newton's tolerance as a fraction of the step's: NEWTON_TOL, or sqrt(rtol) where smaller, floored
    at 10 eps / rtol (SciPy's Radau and Hairer's radau5 use this rule).

    With a fixed fraction the stage error stops shrinking with rtol: kvaerno5 on Van der Pol at mu =
    1000 ended 22x rtol off at rtol 1e-8 (4.2x with this rule), at the same number of steps. Elementwise
    for a tensor rtol.
    """
    if isinstance(rtol, Tensor):
        return torch.maximum(10 * eps / rtol, rtol.sqrt()).clamp(max=NEWTON_TOL)
    return min(NEWTON_TOL, max(10 * eps / rtol, math.sqrt(rtol)))


def newton_scale(y: Tensor, rtol: float | Tensor, atol: float | Tensor) -> Tensor:
    """Newton's tolerance per entry, (atol + rtol*|y|) * :func:`newton_fraction`: rtol floored at 100 eps
    and atol = 0 replaced by round-off of the state (as the fixed-grid implicit methods do)."""
    y_abs = y.detach().abs()
    eps = torch.finfo(y.dtype).eps
    rtol = rtol.clamp(min=100 * eps) if isinstance(rtol, Tensor) else max(rtol, 100 * eps)
    return (y_abs * rtol + newton_tolerance(atol, y_abs)) * newton_fraction(rtol, eps)


class NewtonStepper:
    """One solve's ESDIRK step function for the adaptive engine, with its Jacobian and LU carried
    from step to step; counts Newton iterations and factorisations into ``counts``."""

    def __init__(
        self, rtol: float | Tensor, atol: float | Tensor, max_iters: int, counts: PassCounts
    ) -> None:
        self.rtol, self.atol, self.max_iters, self.counts = rtol, atol, max_iters, counts
        self.jac: Tensor | None = None
        self.jac_y: Tensor | None = None  # the state the Jacobian was taken at (fresh while it is y)
        self.lu: Factorization | None = None
        self.lu_dt = 0.0
        self.renew = True  # take a new Jacobian at the next step

    def __call__(
        self,
        func,
        dtab: ESDIRKDeviceTableau,
        t: float,
        dt: float,
        y: Tensor,
        f0: Tensor,
        buffer: None,
        perturb_end: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """(K, y1): the (stages, N) slopes and the new state; NaN where Newton became non-finite (the
        engine's non-finite retry), :class:`StepFailed` where it did not converge with a fresh Jacobian."""
        scale = newton_scale(y, self.rtol, self.atol)
        reuse = newton_reuse(y.numel())
        if self.jac is None or (self.renew and self.jac_y is not y):
            self._jacobian(func, t, y, dt)
        while True:
            if self.lu is None or abs(dt / self.lu_dt - 1.0) > reuse.refactor_change:
                self.lu, self.lu_dt = _factorize(self.jac, dt, dtab.gamma), dt
                self.counts.n_factorizations += 1
            result = _solve_stages(func, dtab, t, dt, y, f0, self.lu, scale, self.max_iters, perturb_end)
            self.counts.n_newton_iters += result.iters
            if result.ks is not None:
                self.renew = result.contraction > reuse.slow_contraction
                return torch.stack(result.ks), result.y1
            if self.jac_y is not y:  # an old Jacobian: take one here and retry before shrinking
                self._jacobian(func, t, y, dt)
                continue
            return failed_step(result, dtab, y)

    def _jacobian(self, func, t: float, y: Tensor, dt: float) -> None:
        inward = 1.0 if dt > 0 else -1.0  # just after a jump, the Jacobian of the side being entered
        _, self.jac = jacobian(func, t, y, inward, differences=True)
        self.jac_y, self.lu, self.renew = y, None, False


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
    """One step from t to t + dt with a Jacobian taken at (t, y), outside any engine (``scale``: Newton's
    tolerance per entry, as :func:`newton_scale` gives it); ``func(t, y, perturb)`` as in FlatProblem."""
    f_start, jac = jacobian(func, t, y, 0.0)
    if f0 is None:  # jacobian() detaches its f; recompute it where gradients flow through the step
        f0 = func(t, y, 0.0) if torch.is_grad_enabled() else f_start
    dtab = ESDIRKDeviceTableau(tab, y.dtype, y.device)
    result = _solve_stages(func, dtab, t, dt, y, f0, _factorize(jac, dt, tab.gamma), scale, max_iters)
    if result.ks is None:
        nan = torch.full_like(y, math.nan)
        return ESDIRKStep(nan, nan, nan, False, result.iters, 1)
    ks = result.ks
    error = dt * sum(e * k for e, k in zip(tab.b_error, ks) if e != 0.0)
    return ESDIRKStep(result.y1, error, ks[-1], True, result.iters, 1)
