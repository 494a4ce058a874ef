"""The implicit Runge-Kutta engine: a full Butcher tableau, stage equations solved by Newton.

With stage increments Z_i = Y_i - y, one step solves Z = dt (A kron I) F(y + Z) by simplified Newton:
the Jacobian J = df/dy is taken once per step at (t, y) from autograd (all N rows in one batched
backward pass), the (s N, s N) matrix I - dt (A kron J) is LU-factorised once, and each iteration
costs s evaluations of f and one triangular solve. Newton stops when the scaled update is below
the call's rtol/atol (rtol floored at the dtype's round-off; atol=0 uses 100 eps of the state's
largest entry). With autograd on, the iterations are differentiated through: they converge to the
stage solution, so their derivatives converge to its implicit-function derivative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ..errors import NewtonConvergenceError
from .base import FlatProblem
from .fixed_grid import FixedGridSolver
from .options import ImplicitOptions

_TOL = 1e-10
# Newton factorises a dense (s N, s N) matrix: beyond this many rows it would not fit or take minutes.
MAX_NEWTON_SIZE = 6000


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ValueError(f"implicit Butcher tableau {name!r} is inconsistent: {message}")


@dataclass(frozen=True, eq=False)
class ImplicitButcherTableau:
    """An implicit Runge-Kutta method (full ``a``), validated on construction.

    Checks: rows of ``a`` sum to ``c``, and the quadrature conditions sum_i b_i c_i^(k-1) = 1/k for
    k = 1..order. ``update`` are the weights d with y1 = y + sum_i d_i Z_i: the last stage for a
    stiffly accurate method (b = last row of a), else b^T A^-1.
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    l_stable: bool
    stiffly_accurate: bool = field(init=False)
    update: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        s, name = len(self.c), self.name
        _check(len(self.a) == s and all(len(r) == s for r in self.a), name, "a must be s x s")
        for i, row in enumerate(self.a):
            _check(abs(sum(row) - self.c[i]) < _TOL, name, f"row {i} of a sums to {sum(row)}, c={self.c[i]}")
        _check(len(self.b) == s, name, f"b has {len(self.b)} entries, expected {s}")
        for k in range(1, self.order + 1):
            q = sum(bi * ci ** (k - 1) for bi, ci in zip(self.b, self.c))
            _check(abs(q - 1.0 / k) < _TOL, name, f"quadrature condition of order {k} fails ({q} != 1/{k})")
        a = np.array(self.a)
        stiffly = all(abs(x - y) < _TOL for x, y in zip(self.a[-1], self.b))
        if stiffly:
            update = np.zeros(s)
            update[-1] = 1.0
        else:
            _check(abs(np.linalg.det(a)) > 1e-12, name, "a must be invertible or b its last row")
            update = np.linalg.solve(a.T, np.array(self.b))
        object.__setattr__(self, "stiffly_accurate", stiffly)
        object.__setattr__(self, "update", tuple(float(x) for x in update))

    @classmethod
    def from_lists(
        cls,
        name: str,
        *,
        c: Sequence[float],
        a: Sequence[Sequence[float]],
        b: Sequence[float],
        order: int,
        l_stable: bool,
    ) -> ImplicitButcherTableau:
        """Build from nested lists (floats)."""
        return cls(
            name=name,
            c=tuple(float(x) for x in c),
            a=tuple(tuple(float(x) for x in row) for row in a),
            b=tuple(float(x) for x in b),
            order=order,
            l_stable=l_stable,
        )

    @property
    def num_stages(self) -> int:
        return len(self.c)

    adaptive: ClassVar[bool] = False


def newton_atol(y_abs: Tensor) -> float:
    """Newton's absolute tolerance when the call's atol is 0: round-off of the state's largest entry
    (100 eps of it), so entries at or near zero still have a stopping rule; tiny if the state is 0."""
    finfo = torch.finfo(y_abs.dtype)
    return max(100 * finfo.eps * float(y_abs.max()), finfo.tiny) if y_abs.numel() else finfo.tiny


def newton_tolerance(atol: float | Tensor, y_abs: Tensor) -> float | Tensor:
    """Newton's absolute tolerance: the call's atol, with :func:`newton_atol` wherever it is 0."""
    if isinstance(atol, Tensor):
        return torch.where(atol > 0, atol, newton_atol(y_abs)) if bool((atol == 0).any()) else atol
    return atol if atol > 0 else newton_atol(y_abs)


def jacobian(func, t: float, y: Tensor, perturb: float, differences: bool = False) -> tuple[Tensor, Tensor]:
    """f(t, y) and df/dy (N, N), all rows in one batched backward pass (a loop where vmap fails).

    Where f has no autograd graph with respect to y (func detaches its input, as the adjoint's
    augmented dynamics do), the Jacobian is zero, or with ``differences`` forward differences (N more
    evaluations of func)."""
    n = y.numel()
    with torch.enable_grad():
        y_ = y.detach().requires_grad_(True)
        f = func(t, y_, perturb)
        if not f.requires_grad:
            if differences:
                return f.detach(), _difference_jacobian(func, t, y.detach(), f.detach(), perturb)
            return f.detach(), torch.zeros(n, n, dtype=y.dtype, device=y.device)
        eye = torch.eye(n, dtype=f.dtype, device=f.device)
        try:
            (jac,) = torch.autograd.grad(
                f, y_, eye, is_grads_batched=True, allow_unused=True, retain_graph=True
            )
        except RuntimeError:  # an operation without a batching rule: one row at a time
            rows = [
                torch.autograd.grad(f, y_, eye[i], allow_unused=True, retain_graph=True)[0] for i in range(n)
            ]
            jac = None if rows[0] is None else torch.stack(rows)
    if jac is None:
        jac = torch.zeros(n, n, dtype=y.dtype, device=y.device)
    return f.detach(), jac.detach()


@torch.no_grad()
def _difference_jacobian(func, t: float, y: Tensor, f: Tensor, perturb: float) -> Tensor:
    """df/dy (N, N) by forward differences, column j from y + h_j e_j with h_j = sqrt(eps) (1 + |y_j|)."""
    steps = (1.0 + y.abs()) * math.sqrt(torch.finfo(y.dtype).eps)
    columns = []
    for j in range(y.numel()):
        shifted = y.clone()
        shifted[j] += steps[j]
        columns.append((func(t, shifted, perturb) - f) / (shifted[j] - y[j]))
    return torch.stack(columns, dim=1) if columns else torch.zeros(0, 0, dtype=y.dtype, device=y.device)


@dataclass
class _Context:
    a: Tensor  # (s, s)
    update: Tensor  # (s,)
    c: tuple[float, ...]
    a_np: np.ndarray
    rtol: float | Tensor  # a float or per element (N,), as in FlatProblem
    atol: float | Tensor


class ImplicitRKSolver(FixedGridSolver):
    """Engine for fixed-grid implicit Runge-Kutta tableaux (stiff problems)."""

    options_class: ClassVar[type] = ImplicitOptions
    replayable: ClassVar[bool] = False  # Newton iterations from the previous step's stages
    tableau: ClassVar[ImplicitButcherTableau]

    def start(self, problem: FlatProblem) -> _Context:
        y, tab = problem.y0, self.tableau
        if tab.num_stages * y.numel() > MAX_NEWTON_SIZE:
            raise ValueError(
                f"method={tab.name!r} solves a dense Newton system of {tab.num_stages} x {y.numel()} rows "
                f"(stages x state entries), more than {MAX_NEWTON_SIZE}: implicit methods suit small stiff "
                "systems; use an explicit method, scipy_solver (LSODA, BDF), or a smaller state"
            )
        eps = torch.finfo(y.dtype).eps
        return _Context(
            a=torch.tensor(tab.a, dtype=y.dtype, device=y.device),
            update=torch.tensor(tab.update, dtype=y.dtype, device=y.device),
            c=tab.c,
            a_np=np.array(tab.a),
            rtol=problem.rtol.clamp(min=100 * eps)
            if isinstance(problem.rtol, Tensor)
            else max(problem.rtol, 100 * eps),
            atol=problem.atol,
        )

    def step(
        self, ctx: _Context, problem: FlatProblem, t: float, dt: float, y: Tensor, f0: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        func, opts = problem.func, self.options
        s, n = len(ctx.c), y.numel()
        inward = 1.0 if dt > 0 else -1.0
        perturbs = [self._perturb(c, inward) for c in ctx.c]
        f_start, jac = jacobian(func, t, y, inward if opts.perturb else 0.0)
        with torch.no_grad():
            eye = torch.eye(s * n, dtype=y.dtype, device=y.device)
            system = eye - dt * torch.kron(ctx.a, jac)
            lu, pivots = torch.linalg.lu_factor(system)
        cs = torch.tensor(ctx.c, dtype=y.dtype, device=y.device)
        z = (dt * cs)[:, None] * f_start[None, :]  # stages on the tangent line: a cheap first guess
        y_abs = y.detach().abs()
        atol = newton_tolerance(ctx.atol, y_abs)
        for _ in range(opts.max_iters):
            stages = y.unsqueeze(0) + z
            f = torch.stack([func(t + ci * dt, stages[i], perturbs[i]) for i, ci in enumerate(ctx.c)])
            residual = z - dt * (ctx.a @ f)
            dz = -torch.linalg.lu_solve(lu, pivots, residual.reshape(s * n, 1)).reshape(s, n)
            z = z + dz
            with torch.no_grad():
                scale = torch.maximum(y_abs.unsqueeze(0), stages.abs()).mul_(ctx.rtol).add_(atol)
                err = float(torch.linalg.vector_norm(dz / scale) / math.sqrt(s * n))
            if not math.isfinite(err):
                raise NewtonConvergenceError(
                    f"{self.tableau.name}: the stage equations became non-finite (NaN or inf) in the step "
                    f"from t={t!r} (step {dt:.3g}): try a smaller step_size, or check func there.",
                    t,
                )
            if err <= 1.0:
                break
        else:
            raise NewtonConvergenceError(
                f"{self.tableau.name}: Newton's method did not converge in {opts.max_iters} iterations in "
                f"the step from t={t!r} (step {dt:.3g}, last scaled update {err:.3g}): try a smaller "
                "step_size, looser rtol/atol, or a larger options['max_iters'].",
                t,
            )
        y1 = y + ctx.update @ z
        return y1, (None if torch.is_grad_enabled() else f_start)

    def _perturb(self, c: float, inward: float) -> float:
        if not self.options.perturb:
            return 0.0
        if c == 0.0:
            return inward
        if c == 1.0:
            return -inward
        return 0.0
