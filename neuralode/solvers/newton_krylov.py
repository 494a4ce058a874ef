"""ESDIRK steps by matrix-free Newton-Krylov, for states too large for a dense Newton matrix.

Each Newton iteration of a stage linearises f at the current iterate z and solves
(I - dt*gamma*J) dz = residual by GMRES (:func:`~neuralode.solvers.krylov.gmres`) in the variables
scaled by Newton's tolerance, with products J v from autograd or differences
(:class:`~neuralode.solvers.krylov.Linearization`): memory O(N * restart), no N x N matrix. GMRES is
solved loosely (inexact Newton); a stage whose Newton iteration fails rejects the step, which the
engine retries 4x shorter, as on the dense path.

With autograd on (direct backprop through the solve), the iterations run without a graph and each
converged stage z* gets the implicit-function gradient of z* = explicit + dt*gamma*f(t, z*): a
backward hook solves (I - dt*gamma*J)^T w = g by GMRES with vector-Jacobian products, so memory stays
O(N) per stage as well.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..stats import PassCounts
from .esdirk import ESDIRKDeviceTableau, _solve_stages, failed_step, newton_scale
from .krylov import Linearization, gmres

# Inexact Newton: each linear solve cuts its (scaled) residual 1000x, or to 1e-4 of Newton's stopping
# size. At 100x, Newton stalled at a contraction about 1 on a stiff reaction-diffusion problem
# (GMRES's residual does not bound dz's error when I - dt*gamma*J is ill-conditioned): 3.6x the steps.
GMRES_RTOL = 1e-3
GMRES_ATOL = 1e-4  # in units of Newton's tolerance (newton_scale)
GRADIENT_RTOL = 1e-10  # the backward hook's transposed solve is accurate to about round-off


class KrylovStepper:
    """One solve's ESDIRK step function for the adaptive engine with matrix-free Newton-Krylov;
    counts Newton iterations and GMRES products (``n_krylov_iters``) into ``counts``."""

    def __init__(
        self,
        rtol: float | Tensor,
        atol: float | Tensor,
        max_iters: int,
        counts: PassCounts,
        jvp: str = "auto",
        restart: int = 20,
        krylov_max_iters: int = 100,
    ) -> None:
        self.rtol, self.atol, self.max_iters, self.counts = rtol, atol, max_iters, counts
        self.jvp, self.restart, self.krylov_max_iters = jvp, restart, krylov_max_iters
        self.needs_grad = True  # until a stage shows that nothing it depends on requires a gradient

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
        """(K, y1): the (stages, N) slopes and the new state; NaN where Newton became non-finite,
        :class:`StepFailed` where it did not converge."""
        scale = newton_scale(y, self.rtol, self.atol)
        root_n = math.sqrt(max(y.numel(), 1))
        attach = self._attach(func, scale) if torch.is_grad_enabled() and self.needs_grad else None

        def update(ti: float, z: Tensor, perturb: float, explicit: Tensor, gdt: float) -> Tensor:
            lin = Linearization(func, ti, z, perturb, self.jvp)
            residual = (z - explicit - gdt * lin.value) / scale
            solved = gmres(
                lambda u: u - gdt * lin.jvp(u * scale) / scale,
                residual,
                rtol=GMRES_RTOL,
                atol=GMRES_ATOL * root_n,
                restart=self.restart,
                max_iters=self.krylov_max_iters,
            )
            self.counts.n_krylov_iters += solved.iters
            self.jvp = lin.mode  # a fallback it took (forward mode -> double-backward) holds for the solve
            return solved.x * scale

        result = _solve_stages(
            func, dtab, t, dt, y, f0, update, scale, self.max_iters, perturb_end, attach=attach
        )
        self.counts.n_newton_iters += result.iters
        if result.ks is not None:
            return torch.stack(result.ks), result.y1
        return failed_step(result, dtab, y)

    def _attach(self, func, scale: Tensor):
        """The stage gradient of :func:`_solve_stages`: z* carrying the derivative of the stage
        equation's solution, from one evaluation of f at z* (for the parameters' part) and, in the
        backward pass, one more with a graph in z and a GMRES solve. Once a stage needs no gradient
        (nothing it depends on requires one), the rest of the solve runs without this."""
        restart, max_iters = self.restart, 4 * self.krylov_max_iters

        def attach(ti: float, perturb: float, explicit: Tensor, gdt: float, z: Tensor) -> Tensor:
            z_star = z.detach()
            with torch.enable_grad():
                h = explicit + gdt * func(ti, z_star, perturb)
            if not h.requires_grad:
                self.needs_grad = False
                return z_star

            def transposed_solve(g: Tensor | None) -> Tensor | None:  # w with (I - gdt J^T) w = g
                if g is None:  # an undefined gradient (autograd's gradcheck tests those)
                    return g
                z_ = z_star.clone().requires_grad_(True)
                with torch.enable_grad():
                    fz = func(ti, z_, perturb)
                if not fz.requires_grad:
                    return g

                def matvec(u: Tensor) -> Tensor:
                    (jtu,) = torch.autograd.grad(fz, z_, u * scale, retain_graph=True, allow_unused=True)
                    return u if jtu is None else u - gdt * jtu / scale

                solved = gmres(matvec, g / scale, rtol=GRADIENT_RTOL, restart=restart, max_iters=max_iters)
                return solved.x * scale

            h.register_hook(transposed_solve)
            return z_star + (h - h.detach())

        return attach
