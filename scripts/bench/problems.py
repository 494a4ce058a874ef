"""The benchmark's problems: the tanh-MLP and ODE-Net block fields, their seeded inputs, and the
tight float64 references (neuralode dopri8 at 1e-12) that errors are measured against."""

from __future__ import annotations

import torch
from torch import Tensor, nn

import neuralode
from neuralode.models.mnist import ConvODEFunc


class TanhMLP(nn.Module):
    """The case-1 field: dy/dt = W2 tanh(W1 y + b1) + b2 (autonomous)."""

    def __init__(self, dim: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


def make_mlp(dtype: torch.dtype) -> TanhMLP:
    """The case-1 field with seed-0 weights, so that every library integrates the same one."""
    torch.manual_seed(0)
    return TanhMLP().to(dtype)


def max_error(ys: Tensor, reference: Tensor) -> float:
    """Max abs error over all outputs, in float64."""
    return (ys.detach().double() - reference).abs().max().item()


def mlp_problem(batch: int, dtype: torch.dtype, n_times: int = 10, t1: float = 5.0) -> tuple[Tensor, Tensor]:
    """Seeded initial states (batch, 2) and ``n_times`` output times on [0, t1]."""
    generator = torch.Generator().manual_seed(1)
    y0 = torch.randn(batch, 2, generator=generator, dtype=torch.float64).to(dtype)
    t = torch.linspace(0.0, t1, n_times, dtype=torch.float64).to(dtype)
    return y0, t


def mlp_reference(batch: int, n_times: int) -> Tensor:
    """The case-1 solution in float64 by dopri8 at rtol=atol=1e-12."""
    y0, t = mlp_problem(batch, torch.float64, n_times)
    field = make_mlp(torch.float64)
    with torch.no_grad():
        return neuralode.odeint(field, y0, t, rtol=1e-12, atol=1e-12, method="dopri8")


def gradient_problem(batch: int, dtype: torch.dtype, n_times: int) -> tuple[Tensor, Tensor, Tensor]:
    """Case 1's problem plus the fixed random weights of the loss sum(ys * weights)."""
    y0, t = mlp_problem(batch, dtype, n_times)
    weights = torch.randn(n_times, batch, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return y0, t, weights.to(dtype)


def flat_grad(field: nn.Module) -> Tensor:
    """The field's parameter gradients as one float64 vector."""
    return torch.cat([p.grad.reshape(-1).double() for p in field.parameters()])


def gradient_reference(batch: int, n_times: int) -> Tensor:
    """The case-3 gradient by float64 direct backprop through dopri8 at 1e-12."""
    y0, t, weights = gradient_problem(batch, torch.float64, n_times)
    field = make_mlp(torch.float64)
    ys = neuralode.odeint(field, y0, t, rtol=1e-12, atol=1e-12, method="dopri8")
    (ys * weights).sum().backward()
    return flat_grad(field)


def make_block_field(channels: int) -> ConvODEFunc:
    """The ODE-Net block's field (cases 4 and 5) with seed-0 weights."""
    torch.manual_seed(0)
    return ConvODEFunc(channels)


def block_input(batch: int, channels: int, size: int) -> Tensor:
    """The seeded input image batch of cases 4 and 5."""
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(3))
