"""The per-sample integrands of the penalties, at one evaluation of the field f = func(t, z).

Dim 0 of z is the batch; each integrand sums over the other dims and has shape (batch,). The autograd
products need z (and t for the time derivative) to be inputs of f's graph; ``create_graph`` keeps their
own graph so that the penalties can be differentiated (direct backprop, or the adjoint's backward).
"""

from __future__ import annotations

import torch
from torch import Tensor


def per_sample_sum(x: Tensor) -> Tensor:
    """Sum over every dim but the first (the batch): shape (batch,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def kinetic_energy(f: Tensor) -> Tensor:
    """||f||^2 per sample (RNODE's kinetic energy integrand)."""
    return per_sample_sum(f * f)


def jacobian_frobenius(f: Tensor, z: Tensor, noise: Tensor, create_graph: bool = True) -> Tensor:
    """||e^T df/dz||^2 per sample, one vector-Jacobian product: an unbiased estimate of ||df/dz||_F^2
    when E[e e^T] = I (Hutchinson; RNODE's Jacobian term). Each row of f may depend on its row of z only."""
    (vjp,) = torch.autograd.grad(f, z, noise, create_graph=create_graph, retain_graph=True, allow_unused=True)
    if vjp is None:  # f does not depend on z
        return torch.zeros(f.shape[0], dtype=f.dtype, device=f.device)
    return per_sample_sum(vjp * vjp)


def total_time_derivative(t: Tensor, z: Tensor, f: Tensor, create_graph: bool = True) -> Tensor:
    """df/dt along the trajectory, df/dt + (df/dz) f: a Jacobian-vector product in the direction (1, f),
    by the double-vjp trick (reverse mode twice: g(u) = u^T J is linear in u, so d(g(u) . v)/du = J v),
    which needs no forward-mode rules for the layers of func. ``t`` and ``z`` must be inputs of f's graph."""
    u = torch.zeros_like(f, requires_grad=True)
    dt, dz = torch.autograd.grad(f, (t, z), u, create_graph=True, allow_unused=True)
    inner = None
    if dt is not None:
        inner = dt.sum()
    if dz is not None:
        along = (dz * f).sum()
        inner = along if inner is None else inner + along
    if inner is None or not inner.requires_grad:  # f depends on neither t nor z
        return torch.zeros_like(f)
    (jvp,) = torch.autograd.grad(inner, u, create_graph=create_graph, allow_unused=True)
    return torch.zeros_like(f) if jvp is None else jvp


def time_derivative(t: Tensor, z: Tensor, f: Tensor, create_graph: bool = True) -> Tensor:
    """||df/dt + (df/dz) f||^2 per sample (TayNODE's second-order integrand)."""
    d = total_time_derivative(t, z, f, create_graph)
    return per_sample_sum(d * d)
