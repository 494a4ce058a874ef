"""Per-sample adaptive ESDIRK (kvaerno3, kvaerno5): each sample with its own step size, error test and
accept/reject, its stages solved by simplified Newton with its own dense (n, n) Jacobian block.

Rows are independent, so the batch's Jacobian is block diagonal: J (B, n, n) comes from n
vector-Jacobian products batched in one backward pass (forward differences where func has no graph,
as the per-sample adjoint's augmented field), and the (B, n, n) matrices I - dt_b*gamma*J_b are
factorised by one batched ``lu_factor`` and solved by ``lu_solve`` (by their inverses up to
SMALL_SYSTEM entries per sample, as the joint solver). The bookkeeping is the joint
:class:`~neuralode.solvers.esdirk.NewtonStepper`'s, per row: a row keeps its Jacobian and LU across
stages and steps, refactorises when its dt moves from the LU's (by more than
:func:`~neuralode.solvers.esdirk.newton_reuse` allows for its size), takes a new Jacobian
after slow convergence, or after a failure with an old Jacobian (and retries the step at once); a row
whose Newton fails with a fresh Jacobian has its step rejected and retried 4x shorter, the other rows
go on. Newton's stopping rule and divergence test are the joint engine's, per row. With autograd on,
the iterations are differentiated through (as the joint dense path): they converge to the stage
solution, so their derivatives converge to its implicit-function derivative.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..solvers.esdirk import (
    SMALL_SYSTEM,
    ESDIRKDeviceTableau,
    newton_fraction,
    newton_reuse,
)
from ..solvers.esdirk_tableaux import ESDIRKTableau
from ..solvers.options import ESDIRKOptions
from .engine import SampleRKSolver, _Stages, _weighted
from .problem import SampleProblem


def row_newton_scale(y: Tensor, rtol: Tensor, atol: Tensor) -> Tensor:
    """Newton's tolerance per row, (atol + rtol*|y|) * newton_fraction(rtol): the joint ``newton_scale``
    with a row's atol = 0 replaced by round-off of that row's largest entry (not the batch's)."""
    y_abs = y.detach().abs()
    finfo = torch.finfo(y.dtype)
    rtol = rtol.clamp(min=100 * finfo.eps)
    if bool((atol == 0).any()):
        floor = (100 * finfo.eps * y_abs.amax(dim=1, keepdim=True)).clamp(min=finfo.tiny)
        atol = torch.where(atol > 0, atol, floor)
    return (y_abs * rtol + atol) * newton_fraction(rtol, finfo.eps)


def row_jacobian(func, t: Tensor, y: Tensor, rows: Tensor | None) -> Tensor:
    """Each row's df/dy, (M, n, n), from n vector-Jacobian products in one batched backward pass (a
    loop where vmap fails); forward differences (n more evaluations) where f has no graph to y."""
    m, n = y.shape
    with torch.enable_grad():
        y_ = y.detach().requires_grad_(True)
        f = func(t, y_, rows)
        if not f.requires_grad:
            return _difference_jacobian(func, t, y.detach(), f.detach(), rows)
        # cotangent k is e_k in every row: its gradient is row k of every sample's Jacobian
        eye = torch.eye(n, dtype=f.dtype, device=f.device)[:, None, :].expand(n, m, n)
        try:
            (jac,) = torch.autograd.grad(
                f, y_, eye, is_grads_batched=True, allow_unused=True, retain_graph=True
            )
        except RuntimeError:
            grads = [
                torch.autograd.grad(f, y_, eye[k], allow_unused=True, retain_graph=True)[0] for k in range(n)
            ]
            jac = None if grads[0] is None else torch.stack(grads)
    if jac is None:
        return torch.zeros(m, n, n, dtype=y.dtype, device=y.device)
    return jac.detach().permute(1, 0, 2).contiguous()


@torch.no_grad()
def _difference_jacobian(func, t: Tensor, y: Tensor, f: Tensor, rows: Tensor | None) -> Tensor:
    """(M, n, n) by forward differences, column j of every row at once from y + h_j e_j (rows are
    independent), h_j = sqrt(eps) (1 + |y_j|), as the joint ``_difference_jacobian``."""
    steps = (1.0 + y.abs()) * math.sqrt(torch.finfo(y.dtype).eps)
    columns = []
    for j in range(y.shape[1]):
        shifted = y.clone()
        shifted[:, j] += steps[:, j]
        columns.append((func(t, shifted, rows) - f) / (shifted[:, j] - y[:, j])[:, None])
    return torch.stack(columns, dim=2)


class _ESDIRKCoefficients:
    """An ESDIRK pair's weights as (k, 1, 1) tensors (the explicit parts of the stage rows, b and the
    error weights), as the per-sample engine's ``_Coefficients``, with the solve's :class:`RowNewton`."""

    def __init__(
        self, tab: ESDIRKTableau, dtype: torch.dtype, device: torch.device, newton: RowNewton
    ) -> None:
        def col(values) -> Tensor:
            return torch.tensor(list(values), dtype=dtype, device=device).reshape(-1, 1, 1)

        self.a = [None, *(col(tab.a[i][:i]) for i in range(1, tab.num_stages))]
        self.c = torch.tensor(list(tab.c), dtype=torch.float64, device=device)[:, None]
        self.b = col(tab.b)
        self.b_err = col(tab.b_error)
        self.b_err_secondary = None
        self.newton = newton


class RowNewton:
    """One per-sample solve's Newton state, per row: Jacobian, LU and the dt it was built for, whether
    the Jacobian was taken at the row's current state, whether to renew it; Newton iterations and LU
    factorisations per row. ``failed`` after each step: the rows whose Newton failed (None if none)."""

    def __init__(self, problem: SampleProblem, gamma: float, max_iters: int, compact: bool) -> None:
        y = problem.y0
        batch, n = y.shape
        dtype, device = y.dtype, y.device
        self.rtol, self.atol, self.gamma, self.max_iters, self.compact = (
            problem.rtol, problem.atol, gamma, max_iters, compact
        )  # fmt: skip
        self.jac = torch.zeros(batch, n, n, dtype=dtype, device=device)
        eye = torch.eye(n, dtype=dtype, device=device).expand(batch, n, n)
        self.lu, self.pivots = torch.linalg.lu_factor(eye)  # identity until a row factorises its own
        self.inverse = eye.clone() if n <= SMALL_SYSTEM else None
        self.lu_dt = torch.ones(batch, dtype=torch.float64, device=device)
        self.has_jac = torch.zeros(batch, dtype=torch.bool, device=device)
        self.fresh = torch.zeros_like(self.has_jac)  # the Jacobian was taken at the row's current state
        self.has_lu = torch.zeros_like(self.has_jac)
        self.renew = torch.ones_like(self.has_jac)
        self.n_newton_iters = torch.zeros(batch, dtype=torch.long, device=device)
        self.n_factorizations = torch.zeros_like(self.n_newton_iters)
        self.failed: Tensor | None = None

    def counts(self) -> dict[str, Tensor]:
        return {"n_newton_iters": self.n_newton_iters, "n_factorizations": self.n_factorizations}

    def accepted(self, accept: Tensor) -> None:
        """Rows that moved: their Jacobian is now from an earlier state."""
        self.fresh &= ~accept

    def step(self, func, dtab, coeffs, stages: _Stages, y, t, dt, f0, active) -> tuple[Tensor, list, list]:
        """One step of every running row (dt != 0); fills ``stages`` and ``self.failed`` (full batch)."""
        batch = self.has_jac.shape[0]
        rows = active if active is not None else None
        rtol, atol = (self.rtol, self.atol) if rows is None else (self.rtol[rows], self.atol[rows])
        scale = row_newton_scale(y, rtol, atol)
        run = dt != 0
        state = self._take(rows)
        has_jac, fresh, renew = state["has_jac"], state["fresh"], state["renew"]
        need = run & (~has_jac | (renew & ~fresh))
        if bool(need.any()):
            self._jacobian(func, t, y, rows, need)
        pending = run
        result = None
        while True:
            self._factorize(dt, rows, pending)
            factors = (self.lu, self.pivots, self.inverse)
            if rows is not None:
                factors = tuple(None if x is None else x[rows] for x in factors)
            new = self._stages(func, dtab, coeffs, t, dt, y, f0, factors, scale, pending, rows)
            result = new if result is None else _merge(result, new, pending)
            iters, converged, contraction = new[3], new[4], new[6]
            self._add(self.n_newton_iters, rows, iters)
            ok = pending & converged
            self._set(self.renew, rows, ok, contraction > newton_reuse(y.shape[1]).slow_contraction)
            fresh = self.fresh if rows is None else self.fresh[rows]
            retry = pending & ~converged & ~fresh  # an old Jacobian: take one here and retry the step
            if not bool(retry.any()):
                break
            self._jacobian(func, t, y, rows, retry)
            pending = retry
        ks, zs, stage_times, _, converged, nonfinite, _ = result
        failed_a = run & ~converged & ~nonfinite
        bad = run & ~converged & nonfinite  # non-finite: NaN, the engine's non-finite retry
        y1 = zs[-1]
        if bool(bad.any()):
            ks = [torch.where(bad[:, None], math.nan, k) for k in ks]
            y1 = torch.where(bad[:, None], math.nan, y1)
        if bool(failed_a.any()):
            y1 = torch.where(failed_a[:, None], y, y1)
            self.failed = (
                failed_a
                if rows is None
                else torch.zeros(batch, dtype=torch.bool, device=y.device).index_put((rows,), failed_a)
            )
        else:
            self.failed = None
        stages.reset(ks[0])
        for k in ks[1:]:
            stages.append(k)
        return y1, [y, *zs], stage_times

    def _stages(self, func, dtab, coeffs, t, dt, y, f0, factors, scale, active, rows):
        """The implicit stages of the ``active`` rows by simplified Newton, every row judged on its own
        with the joint ``_solve_stages``'s rule; returns (slopes, stage states, stage times, iterations,
        converged, non-finite, slowest contraction), per row."""
        lu, pivots, inverse = factors
        dtype = y.dtype
        m, n = y.shape
        root_n = math.sqrt(max(n, 1))
        gdt = (dt * self.gamma).to(dtype)[:, None]
        gdt_safe = torch.where(gdt == 0, 1.0, gdt)
        dt_col = dt.to(dtype)[:, None]
        ks, zs = [f0], []
        stage_times = list((t + coeffs.c * dt).unbind(0))
        stage_times[0] = t
        ok = active.clone()
        nonfinite = torch.zeros_like(ok)
        iters = torch.zeros(m, dtype=torch.long, device=y.device)
        worst = torch.zeros(m, dtype=torch.float64, device=y.device)
        for i in range(1, dtab.num_stages):
            explicit = y + _weighted(torch.stack(ks), coeffs.a[i]) * dt_col
            z = explicit + gdt * ks[-1]  # predictor: the previous stage's slope
            ti = stage_times[i]
            iterating = ok.clone()
            converged = torch.zeros_like(ok)
            prev = torch.ones_like(worst)
            for it in range(self.max_iters):
                if not bool(iterating.any()):
                    break
                iters += iterating
                residual = torch.addcmul(z - explicit, gdt, func(ti, z, rows), value=-1.0)
                if inverse is not None:
                    dz = (inverse @ residual[..., None])[..., 0]
                else:
                    dz = torch.linalg.lu_solve(lu, pivots, residual[..., None])[..., 0]
                dz = torch.where(iterating[:, None], dz, 0.0)
                z = z - dz
                size = torch.linalg.vector_norm(dz.detach() / scale, dim=1).double() / root_n  # detached
                finite = torch.isfinite(size)
                small = iterating & finite & (size <= 1.0)
                check = iterating & finite & ~small if it > 0 else torch.zeros_like(ok)
                theta = size / prev
                worst = torch.where(check, torch.maximum(worst, theta), worst)
                diverged = check & (theta >= 1.0)
                settled = check & (theta < 1.0) & (theta / (1.0 - theta) * size <= 1.0)
                nonfinite |= iterating & ~finite
                converged |= small | settled
                iterating = iterating & ~(small | settled | diverged | ~finite)
                prev = size
            ok = ok & converged
            ks.append((z - explicit) / gdt_safe)
            zs.append(z)
        return ks, zs, stage_times, iters, ok, nonfinite, worst

    def _take(self, rows: Tensor | None) -> dict[str, Tensor]:
        names = ("has_jac", "fresh", "renew")
        return {k: getattr(self, k) if rows is None else getattr(self, k)[rows] for k in names}

    @staticmethod
    def _set(target: Tensor, rows: Tensor | None, mask: Tensor, value: Tensor) -> None:
        """target[rows][mask] = value[mask], in place."""
        where = mask.nonzero().flatten()
        index = where if rows is None else rows[where]
        target[index] = value[where] if isinstance(value, Tensor) and value.dim() else value

    @staticmethod
    def _add(target: Tensor, rows: Tensor | None, values: Tensor) -> None:
        if rows is None:
            target += values
        else:
            target.index_add_(0, rows, values)

    def _jacobian(self, func, t: Tensor, y: Tensor, rows: Tensor | None, need: Tensor) -> None:
        """A new Jacobian for the ``need`` rows (of the ones stepped); their LU must be rebuilt."""
        where = need.nonzero().flatten()
        index = where if rows is None else rows[where]
        if self.compact and where.numel() < y.shape[0]:  # func may be called on any rows
            jac = row_jacobian(func, t[where], y[where], index)
        else:  # func sees every row it was given
            jac = row_jacobian(func, t, y, rows)[where]
        self.jac[index] = jac
        self.has_jac[index] = True
        self.fresh[index] = True
        self.has_lu[index] = False
        self.renew[index] = False

    def _factorize(self, dt: Tensor, rows: Tensor | None, pending: Tensor) -> None:
        """Factorise I - dt*gamma*J for the pending rows without an LU, or whose dt moved from it by more
        than :func:`newton_reuse` allows (and invert it up to SMALL_SYSTEM entries per sample)."""
        has_lu = self.has_lu if rows is None else self.has_lu[rows]
        lu_dt = self.lu_dt if rows is None else self.lu_dt[rows]
        change = newton_reuse(self.jac.shape[1]).refactor_change
        need = pending & (~has_lu | ((dt / lu_dt - 1.0).abs() > change))
        if not bool(need.any()):
            return
        where = need.nonzero().flatten()
        index = where if rows is None else rows[where]
        with torch.no_grad():
            jac = self.jac[index]
            eye = torch.eye(jac.shape[1], dtype=jac.dtype, device=jac.device)
            lu, pivots = torch.linalg.lu_factor(
                eye - (dt[where] * self.gamma).to(jac.dtype)[:, None, None] * jac
            )
        # out of place: lu_solve's backward keeps the factors of the steps before
        self.lu = self.lu.index_put((index,), lu)
        self.pivots = self.pivots.index_put((index,), pivots)
        if self.inverse is not None:
            with torch.no_grad():
                inverse = torch.linalg.lu_solve(lu, pivots, eye.expand_as(lu))
            self.inverse = self.inverse.index_put((index,), inverse)
        self.lu_dt[index] = dt[where]
        self.has_lu[index] = True
        self.n_factorizations[index] += 1


def _merge(old: tuple, new: tuple, rows: Tensor) -> tuple:
    """The stage solve ``new`` for ``rows`` (a retry with a new Jacobian), ``old`` for the others."""
    col = rows[:, None]
    ks = [torch.where(col, a, b) for a, b in zip(new[0], old[0], strict=True)]
    zs = [torch.where(col, a, b) for a, b in zip(new[1], old[1], strict=True)]
    converged = torch.where(rows, new[4], old[4])
    nonfinite = torch.where(rows, new[5], old[5])
    return ks, zs, old[2], new[3], converged, nonfinite, new[6]


class SampleESDIRKSolver(SampleRKSolver):
    """The per-sample engine stepping an ESDIRK pair by per-row Newton (see the module docstring)."""

    tableau: ESDIRKTableau

    def __init__(self, tableau: ESDIRKTableau, options: ESDIRKOptions, compact: bool = False) -> None:
        super().__init__(tableau, options, compact)  # type: ignore[arg-type]

    def device_tableaux(self, problem: SampleProblem):
        y = problem.y0
        newton = RowNewton(problem, self.tableau.gamma, self.options.max_iters, self.compact)
        dtab = ESDIRKDeviceTableau(self.tableau, y.dtype, y.device)
        return dtab, _ESDIRKCoefficients(self.tableau, y.dtype, y.device, newton)

    def step(self, func, dtab, coeffs, stages, y, t, dt, f0, active, ends_on_jump=None):  # type: ignore[override]
        """One Newton-solved step; ``ends_on_jump`` never comes (jump_t is refused for per_sample ESDIRK)."""
        if ends_on_jump is not None:
            raise NotImplementedError("per_sample ESDIRK steps do not support options['jump_t']")
        return coeffs.newton.step(func, dtab, coeffs, stages, y, t, dt, f0, active)

    def _dense_stages(self, dtab, stages, f1_a, y_a, t, dt_a, active, func) -> list[Tensor]:
        """The stages (stiffly accurate: the last is f(t1, y1)); the Hermite interpolant needs no more."""
        return list(stages)
