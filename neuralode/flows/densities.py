"""2-D targets: the energy functions U1-U4 of Rezende & Mohamed (2015), and two-circles / two-moons samples.

The paper's Figure 4 does not name its target densities; its planar-flow baseline comes from Rezende &
Mohamed, whose Table 1 defines p(z) proportional to exp(-U(z)) for these four energies. U2-U4 are not
normalizable on R^2 (they are flat along z1); as in their figures, which show [-4, 4]^2, we confine them
with soft walls beyond |z1| = 4 (an added 0.5 ((|z1| - 4)_+ / 0.3)^2), so that KL(q || p) is finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .base import check_points, check_positive_int

_WALL, _WALL_SCALE = 4.0, 0.3


def _w1(z: Tensor) -> Tensor:
    return torch.sin(2 * math.pi * z[:, 0] / 4)


def _w2(z: Tensor) -> Tensor:
    return 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)


def _w3(z: Tensor) -> Tensor:
    return 3 * torch.sigmoid((z[:, 0] - 1) / 0.3)


def _wall(z: Tensor) -> Tensor:
    return 0.5 * (torch.relu(z[:, 0].abs() - _WALL) / _WALL_SCALE) ** 2


def energy_u1(z: Tensor) -> Tensor:
    """Ring with two lobes: 0.5 ((|z| - 2)/0.4)^2 - log(exp(-0.5((z1-2)/0.6)^2) + exp(-0.5((z1+2)/0.6)^2))."""
    ring = 0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2
    lobes = torch.logsumexp(
        torch.stack([-0.5 * ((z[:, 0] - 2) / 0.6) ** 2, -0.5 * ((z[:, 0] + 2) / 0.6) ** 2]), 0
    )
    return ring - lobes


def energy_u2(z: Tensor) -> Tensor:
    """Sine wave: 0.5 ((z2 - w1(z))/0.4)^2 (plus the walls)."""
    return 0.5 * ((z[:, 1] - _w1(z)) / 0.4) ** 2 + _wall(z)


def energy_u3(z: Tensor) -> Tensor:
    """Splitting sine: -log(exp(-0.5((z2-w1)/0.35)^2) + exp(-0.5((z2-w1+w2)/0.35)^2)) (plus the walls)."""
    a = -0.5 * ((z[:, 1] - _w1(z)) / 0.35) ** 2
    b = -0.5 * ((z[:, 1] - _w1(z) + _w2(z)) / 0.35) ** 2
    return -torch.logsumexp(torch.stack([a, b]), 0) + _wall(z)


def energy_u4(z: Tensor) -> Tensor:
    """Sine with a step: -log(exp(-0.5((z2-w1)/0.4)^2) + exp(-0.5((z2-w1+w3)/0.35)^2)) (plus the walls)."""
    a = -0.5 * ((z[:, 1] - _w1(z)) / 0.4) ** 2
    b = -0.5 * ((z[:, 1] - _w1(z) + _w3(z)) / 0.35) ** 2
    return -torch.logsumexp(torch.stack([a, b]), 0) + _wall(z)


ENERGIES: dict[str, Callable[[Tensor], Tensor]] = {
    "u1": energy_u1, "u2": energy_u2, "u3": energy_u3, "u4": energy_u4,
}  # fmt: skip


def energy(name: str) -> Callable[[Tensor], Tensor]:
    """The energy function called ``name`` (one of ENERGIES)."""
    if name not in ENERGIES:
        raise ValueError(f"target must be one of {sorted(ENERGIES)}, got {name!r}")
    return ENERGIES[name]


def log_normalizer(name: str, limit: float = 8.0, points: int = 1201) -> float:
    """log Z = log of the integral of exp(-U) over [-limit, limit]^2 (Riemann sum, float64): absolute KL."""
    axis = torch.linspace(-limit, limit, points, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    spacing = float(axis[1] - axis[0])
    return float(torch.logsumexp(-energy(name)(grid), 0) + 2 * math.log(spacing))


def two_circles(n: int, generator: torch.Generator, noise: float = 0.08, factor: float = 0.5) -> Tensor:
    """n points on two concentric circles (radii 3 and 3*factor) plus Gaussian noise (FFJORD's toy data)."""
    check_positive_int(n, "n")
    outer = n // 2
    angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    radius = torch.where(torch.arange(n) < outer, 1.0, factor).to(torch.float64)
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    x = x + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (3 * x)[torch.randperm(n, generator=generator)].float()


def two_moons(n: int, generator: torch.Generator, noise: float = 0.1) -> Tensor:
    """n points on two interleaved half circles plus noise, scaled x2 and centred (FFJORD's toy data)."""
    check_positive_int(n, "n")
    upper = n // 2
    angle = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    first = torch.arange(n) < upper
    x = torch.where(first, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(first, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x, y], dim=1) + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    points = points * 2 + torch.tensor([-1.0, -0.2], dtype=torch.float64)
    return points[torch.randperm(n, generator=generator)].float()


DATASETS: dict[str, Callable[[int, torch.Generator], Tensor]] = {"circles": two_circles, "moons": two_moons}


def sample_dataset(name: str, n: int, seed: int) -> Tensor:
    """n samples of the dataset called ``name`` (one of DATASETS), reproducible from ``seed``."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name](n, torch.Generator().manual_seed(seed))


def check_energy_input(z: Tensor) -> None:
    """Energies take (batch, 2) points."""
    check_points(z, "z", 2)
