"""Fixed-grid Adams methods: ``explicit_adams`` (Adams-Bashforth) and ``implicit_adams``
(Adams-Bashforth-Moulton predictor-corrector).

The coefficients are the integrals of the Lagrange polynomials through the past derivatives
(Hairer, Norsett & Wanner, Solving ODEs I, III.1), computed for the actual grid spacing, so a
non-uniform grid (a grid_constructor, a shortened last step) keeps the method's order. On a
uniform grid they are the classical ones (AB4: 55/24, -59/24, 37/24, -9/24). The first
``max_order - 1`` steps, before there is enough history, are RK4 (3/8 rule) steps. The corrector
stops once its update is within rtol/atol (floats or per element); with both 0 it always makes ``max_iters``
corrections (so does an element where both are 0).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from .base import FlatProblem
from .fixed_grid import FixedGridSolver
from .fixed_grid_methods import RK4_38
from .options import AdamsOptions
from .runge_kutta import DeviceTableau, rk_step


@lru_cache(maxsize=256)
def adams_weights(nodes: tuple[float, ...]) -> tuple[float, ...]:
    """Weights w with int_0^1 p(s) ds = sum_j w_j p(nodes_j) for polynomials p of degree < len(nodes).

    Nodes are times in units of the step, relative to its start (0 is the start, -1 the previous
    grid point on a uniform grid, 1 the end of the step).
    """
    s = np.asarray(nodes, dtype=np.float64)
    k = len(s)
    moments = 1.0 / np.arange(1, k + 1)
    vander = np.vander(s, k, increasing=True)  # vander[j, m] = s_j^m
    return tuple(float(x) for x in np.linalg.solve(vander.T, moments))


def _nodes(times: list[float], t: float, dt: float) -> tuple[float, ...]:
    return tuple(round((ti - t) / dt, 12) for ti in times)


@dataclass
class _History:
    times: deque
    derivs: deque
    startup: DeviceTableau
    no_test: bool  # rtol = atol = 0 everywhere: the corrector makes all max_iters corrections


class AdamsSolver(FixedGridSolver):
    """Adams-Bashforth, with an Adams-Moulton corrector when ``implicit`` (PECE, iterated)."""

    options_class: ClassVar[type] = AdamsOptions
    corrector: ClassVar[bool] = False
    replayable: ClassVar[bool] = False  # a multistep history

    @property
    def order(self) -> int:
        return self.options.max_order

    def start(self, problem: FlatProblem) -> _History:
        k = self.options.max_order
        y = problem.y0
        both_zero = torch.as_tensor(problem.rtol == 0) & torch.as_tensor(problem.atol == 0)
        startup = DeviceTableau(RK4_38, y.dtype, y.device)
        return _History(deque(maxlen=k), deque(maxlen=k), startup, bool(both_zero.all()))

    def step(
        self, ctx: _History, problem: FlatProblem, t: float, dt: float, y: Tensor, f0: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        func, opts = problem.func, self.options
        inward = 1.0 if dt > 0 else -1.0
        if f0 is None:
            f0 = func(t, y, inward if opts.perturb else 0.0)
        ctx.times.appendleft(t)
        ctx.derivs.appendleft(f0)
        if len(ctx.derivs) < opts.max_order:  # not enough history yet
            _, y1 = rk_step(func, ctx.startup, t, dt, y, f0, None, opts.perturb, opts.perturb)
            return y1, f0
        history = torch.stack(list(ctx.derivs), dim=1)  # (N, k), newest first
        w = adams_weights(_nodes(list(ctx.times), t, dt))
        y1 = torch.addmv(y, history, torch.tensor(w, dtype=y.dtype, device=y.device), alpha=dt)
        if not self.corrector:
            return y1, f0
        # Moulton: the new derivative and the k - 1 newest old ones (order k, like the predictor).
        nodes = (1.0, *_nodes(list(ctx.times)[: opts.max_order - 1], t, dt))
        wc = torch.tensor(adams_weights(nodes), dtype=y.dtype, device=y.device)
        past = history[:, : opts.max_order - 1]
        base = y if past.shape[1] == 0 else torch.addmv(y, past, wc[1:], alpha=dt)
        for _ in range(opts.max_iters):
            f1 = func(t + dt, y1, -inward if opts.perturb else 0.0)
            y_new = base + (dt * wc[0]) * f1
            if ctx.no_test:  # no convergence test: all max_iters corrections
                y1 = y_new
                continue
            with torch.no_grad():
                scale = torch.maximum(y1.abs(), y_new.abs()).mul_(problem.rtol).add_(problem.atol)
                err = float(torch.linalg.vector_norm((y_new - y1) / scale)) / math.sqrt(max(y.numel(), 1))
            y1 = y_new
            if err <= 1.0:
                break
        return y1, f0


class ExplicitAdams(AdamsSolver):
    corrector: ClassVar[bool] = False


class ImplicitAdams(AdamsSolver):
    corrector: ClassVar[bool] = True
