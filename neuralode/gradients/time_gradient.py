"""dL/dt for every gradient strategy, in one place.

y(t_i) depends on t_i through dy/dt_i = f(t_i, y_i), and on t_0 like a perturbation of y0 by
-f(t_0, y_0) dt_0. Two identity functions carry these into autograd: :class:`StartTime` on the state
that enters the solve and :class:`OutputTimes` on the solution. Their backward passes evaluate f at
those times (one evaluation per output time, counted in the backward counts), only when dL/dt is wanted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._setup.flat_func import FlatFunc
from .._setup.prepare import Setup
from ..stats import PassCounts, SolveStats


@dataclass
class TimeGradient:
    """What the two functions need: the setup (func, times, perturb side) and where to count."""

    setup: Setup
    stats: SolveStats

    def wanted(self, t: Tensor) -> bool:
        return t.requires_grad and torch.is_grad_enabled()

    def func(self) -> FlatFunc:
        """func on flat states, counting into a fresh :class:`PassCounts` (added to the backward's)."""
        setup = self.setup
        return FlatFunc(setup.user_func, setup.layout, PassCounts(), setup.autocast)

    def count(self, func: FlatFunc) -> None:
        self.stats.backward.nfe += func.counts.nfe


class StartTime(torch.autograd.Function):
    """y0 -> y0, with dL/dt_0 = -<dL/dy0 (through the solve), f(t_0, y_0)>."""

    @staticmethod
    def forward(ctx, info: TimeGradient, y0: Tensor, t: Tensor) -> Tensor:
        ctx.info = info
        ctx.t_shape, ctx.t_dtype = t.shape, t.dtype
        ctx.save_for_backward(y0)
        return y0.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        (y0,) = ctx.saved_tensors
        info: TimeGradient = ctx.info
        setup = info.setup
        grad_t = torch.zeros(ctx.t_shape, dtype=grad.dtype, device=grad.device)
        func = info.func()
        with torch.no_grad():
            f = func(setup.problem.times[0], y0, setup.perturb_side())
        grad_t[0] = -torch.dot(f, grad)
        info.count(func)
        return None, grad, grad_t.to(ctx.t_dtype)


class OutputTimes(torch.autograd.Function):
    """ys -> ys, with dL/dt_i = <dL/dy_i, f(t_i, y_i)> for i >= 1."""

    @staticmethod
    def forward(ctx, info: TimeGradient, ys: Tensor, t: Tensor) -> Tensor:
        ctx.info = info
        ctx.t_dtype = t.dtype
        ctx.save_for_backward(ys)
        return ys.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        (ys,) = ctx.saved_tensors
        info: TimeGradient = ctx.info
        setup = info.setup
        times, side = setup.problem.times, setup.perturb_side()
        grad_t = torch.zeros(len(times), dtype=grad.dtype, device=grad.device)
        func = info.func()
        with torch.no_grad():
            for i in range(1, len(times)):  # f at an output time is taken from inside the span (perturb)
                grad_t[i] = torch.dot(func(times[i], ys[i], -side), grad[i])
        info.count(func)
        return None, grad, grad_t.to(ctx.t_dtype)
