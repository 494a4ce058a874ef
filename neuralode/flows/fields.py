"""Vector fields f(t, z) for continuous normalizing flows.

``HyperPlanarField`` is the paper's CNF (Section 4): f(z, t) = sum_m u_m(t) tanh(w_m(t)^T z + b_m(t)),
its parameters the output of a small hypernetwork of t, with u gated by sigmoid(g(t)) as in the paper's
reference code (torchdiffeq ``examples/cnf.py``). Its trace is cheap and exact:
tr(df/dz) = sum_m tanh'(w_m^T z + b_m) u_m^T w_m. ``ConcatMLPField`` is a general field (an MLP of [z, t])
whose trace needs autograd: exact per dimension, or Hutchinson's estimate.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from .base import check_positive_int


class HyperPlanarField(nn.Module):
    """The paper's CNF dynamics, M planar units with parameters produced by a hypernetwork of t."""

    def __init__(self, dim: int, width: int, hidden: int = 32) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.width = check_positive_int(width, "width")
        check_positive_int(hidden, "hidden")
        self.hyper = nn.Sequential(
            nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, 3 * width * dim + width),
        )  # fmt: skip

    def unit_parameters(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(w, b, u) at time t, shapes (M, d), (M,), (M, d); u = u_raw * sigmoid(gate)."""
        out = self.hyper(t.reshape(1, 1).to(self.hyper[0].weight.dtype)).reshape(-1)
        block = self.width * self.dim
        w = out[:block].reshape(self.width, self.dim)
        u = out[block : 2 * block].reshape(self.width, self.dim)
        gate = out[2 * block : 3 * block].reshape(self.width, self.dim)
        b = out[3 * block :]
        return w, b, u * torch.sigmoid(gate)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        """f(z, t) = sum_m u_m tanh(w_m^T z + b_m)."""
        return self.forward_with_trace(t, z)[0]

    def forward_with_trace(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """(f(z, t), tr(df/dz)) with the closed-form trace sum_m tanh'(w_m^T z + b_m) u_m^T w_m."""
        w, u, h, slope = self._units(t, z)
        return h @ u, slope @ (u * w).sum(dim=1)

    def _units(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(w, u, h, slope): the unit parameters at t, h = tanh(w_m^T z + b_m) and its slope 1 - h^2."""
        w, b, u = self.unit_parameters(t)
        h = torch.tanh(z @ w.T + b)  # (batch, M)
        return w, u, h, 1 - h.square()

    def forward_with_trace_and_frobenius(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(f, tr(df/dz), ||df/dz||_F^2) per sample in closed form, with no autograd: df/dz = U^T diag(s) W
        for the slopes s = tanh'(w_m^T z + b_m); the exact Frobenius norm that RNODE estimates by Hutchinson.
        The Jacobians are one (batch, M) x (M, d^2) product when d^2 <= M, else s^T ((U U^T) o (W W^T)) s."""
        w, u, h, slope = self._units(t, z)
        trace = slope @ (u * w).sum(dim=1)
        if self.dim * self.dim <= self.width:
            outer = (u[:, :, None] * w[:, None, :]).reshape(self.width, -1)  # row m: u_m w_m^T, flattened
            frobenius = (slope @ outer).square().sum(dim=1)
        else:
            gram = (u @ u.T) * (w @ w.T)  # (M, M)
            frobenius = ((slope @ gram) * slope).sum(dim=1)
        return h @ u, trace, frobenius


class ConcatMLPField(nn.Module):
    """f(t, z) = MLP([z, t]) with tanh hidden layers: a general field, its trace by autograd."""

    def __init__(self, dim: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        check_positive_int(hidden, "hidden")
        check_positive_int(layers, "layers")
        sizes = [dim + 1] + [hidden] * layers
        modules: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(sizes):
            modules += [nn.Linear(n_in, n_out), nn.Tanh()]
        self.net = nn.Sequential(*modules, nn.Linear(hidden, dim))

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.net(torch.cat([z, t.to(z.dtype).expand(z.shape[0], 1)], dim=1))
