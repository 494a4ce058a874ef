"""Divergence of a vector field, tr(df/dz): exact (one autograd pass per dimension) or Hutchinson's estimate.

The instantaneous change of variables (Chen et al. 2018, Theorem 1) needs tr(df/dz) at every solver
step. The exact trace costs d backward passes; Hutchinson's estimator E[e^T (df/dz) e] (FFJORD,
Grathwohl et al. 2019) costs one vector-Jacobian product whatever d is, and is unbiased when E[e e^T] = I.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..noise import NOISE_KINDS as NOISE_KINDS
from ..noise import sample_noise as sample_noise


def exact_trace(f: Tensor, z: Tensor, create_graph: bool = True) -> Tensor:
    """sum_i df_i/dz_i per row of z (f depends on each row of z only), by one autograd call per dimension."""
    total = torch.zeros(z.shape[0], dtype=f.dtype, device=f.device)
    for i in range(z.shape[1]):
        (grad,) = torch.autograd.grad(f[:, i].sum(), z, create_graph=create_graph, retain_graph=True)
        total = total + grad[:, i]
    return total


def hutchinson_trace(f: Tensor, z: Tensor, noise: Tensor, create_graph: bool = True) -> Tensor:
    """e^T (df/dz) e per row: an unbiased estimate of the trace when the noise e has E[e e^T] = I."""
    (vjp,) = torch.autograd.grad(f, z, noise, create_graph=create_graph, retain_graph=True)
    return (vjp * noise).sum(dim=1)
