"""Planar normalizing flow (Rezende & Mohamed, 2015): the discrete baseline of the paper's Section 4.

One layer maps z to z + u_hat h(w^T z + b) with h = tanh. ``u_hat`` (their Appendix A) keeps
w^T u_hat >= -1, so every layer is invertible, and log|det dF/dz| = log|1 + u_hat^T h'(w^T z + b) w|.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import check_points, check_positive_int, standard_normal_logprob


class PlanarLayer(nn.Module):
    """One planar transformation with its exact log-determinant and a numerical inverse."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.w = nn.Parameter(torch.randn(dim) * 0.1)
        self.u = nn.Parameter(torch.randn(dim) * 0.1)
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> Tensor:
        """u moved along w so that w^T u_hat = -1 + softplus(w^T u) >= -1 (the invertibility condition)."""
        wu = self.w @ self.u
        return self.u + (-1.0 + F.softplus(wu) - wu) * self.w / self.w.square().sum().clamp_min(1e-12)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(F(z), log|det dF/dz|) per row."""
        u = self.u_hat()
        h = torch.tanh(z @ self.w + self.b)
        psi_u = (1 - h.square()) * (self.w @ u)
        return z + h.unsqueeze(1) * u, torch.log((1 + psi_u).abs() + 1e-12)

    @torch.no_grad()
    def inverse(self, y: Tensor, iterations: int = 60) -> Tensor:
        """F^{-1}(y): a = w^T z solves the monotone a + (w^T u_hat) tanh(a + b) = w^T y (bisection)."""
        u = self.u_hat()
        target, wu = y @ self.w, self.w @ u
        bound = target.abs() + wu.abs() + 1.0  # |a - target| <= |w^T u_hat|, so the root lies inside
        low, high = -bound, bound
        for _ in range(iterations):
            mid = (low + high) / 2
            above = mid + wu * torch.tanh(mid + self.b) > target
            high, low = torch.where(above, mid, high), torch.where(above, low, mid)
        a = (low + high) / 2
        return y - torch.tanh(a + self.b).unsqueeze(1) * u


class PlanarFlow(nn.Module):
    """K planar layers; ``transform`` pushes base samples forward, ``log_prob`` evaluates data densities.

    The maximum-likelihood direction treats data as the flow's input: log p(x) = log N(F(x)) + sum log|det|.
    Samples of that model come from ``inverse`` (bisection per layer).
    """

    def __init__(self, dim: int, depth: int) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.depth = check_positive_int(depth, "depth")
        self.layers = nn.ModuleList(PlanarLayer(dim) for _ in range(depth))

    def transform(self, z: Tensor, logp: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Push z (base log-density ``logp``, default log N(z)) through the layers: (x, log q(x))."""
        check_points(z, "z", self.dim)
        logp = standard_normal_logprob(z) if logp is None else logp
        for layer in self.layers:
            z, logdet = layer(z)
            logp = logp - logdet
        return z, logp

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) of the model whose normalizing direction is the forward map (x -> base)."""
        check_points(x, "x", self.dim)
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for layer in self.layers:
            x, logdet = layer(x)
            total = total + logdet
        return standard_normal_logprob(x) + total

    def inverse(self, z: Tensor) -> Tensor:
        """Undo the forward map (used to sample the maximum-likelihood model from base samples)."""
        check_points(z, "z", self.dim)
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z
