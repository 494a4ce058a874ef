"""dL/dt of a per-sample solve: y_b(t_bj) moves with t_bj at the rate f(t_bj, y_bj), and y_b(t_b0) like
a perturbation of y0_b by -f(t_b0, y0_b) dt_b0 (the joint solve's rule, row by row). A (T,) t shared by
every sample gets the sum over samples."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .problem import SampleProblem


class SampleTimes:
    """Attach the two identity functions that carry dL/dt (only when t requires grad)."""

    @staticmethod
    def wanted(t: Tensor) -> bool:
        return isinstance(t, Tensor) and t.requires_grad and torch.is_grad_enabled()

    @staticmethod
    def start(problem: SampleProblem, y0: Tensor, t: Tensor) -> Tensor:
        return _Start.apply(problem, y0, t)

    @staticmethod
    def outputs(problem: SampleProblem, ys: Tensor, t: Tensor) -> Tensor:
        return _Outputs.apply(problem, ys, t)


def _shared(grad_t: Tensor, t: Tensor) -> Tensor:
    """(B, T) -> t's shape: summed over samples when t is shared."""
    return (grad_t.sum(dim=0) if t.dim() == 1 else grad_t).to(t.dtype)


class _Start(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: SampleProblem, y0: Tensor, t: Tensor) -> Tensor:
        ctx.problem, ctx.t = problem, t.detach()
        ctx.save_for_backward(y0)
        return y0.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        (y0,) = ctx.saved_tensors
        problem = ctx.problem
        with torch.no_grad():
            f = problem.func(problem.times[:, 0], y0)
        grad_t = torch.zeros(problem.times.shape, dtype=grad.dtype, device=grad.device)
        grad_t[:, 0] = -(f * grad).sum(dim=1)
        return None, grad, _shared(grad_t, ctx.t)


class _Outputs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: SampleProblem, ys: Tensor, t: Tensor) -> Tensor:
        ctx.problem, ctx.t = problem, t.detach()
        ctx.save_for_backward(ys)
        return ys.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        (ys,) = ctx.saved_tensors  # (B, T, N)
        problem = ctx.problem
        grad_t = torch.zeros(problem.times.shape, dtype=grad.dtype, device=grad.device)
        with torch.no_grad():
            for j in range(1, problem.times.shape[1]):
                grad_t[:, j] = (problem.func(problem.times[:, j], ys[:, j]) * grad[:, j]).sum(dim=1)
        return None, grad, _shared(grad_t, ctx.t)
