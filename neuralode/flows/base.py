"""The base distribution of every flow here: the standard normal, and a check on flow inputs."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def standard_normal_logprob(z: Tensor) -> Tensor:
    """log N(z; 0, I) per row of ``z`` (shape (batch, dim) -> (batch,)): the flows' base density."""
    check_points(z, "z")
    return -0.5 * (z.square().sum(dim=1) + z.shape[1] * math.log(2 * math.pi))


def check_points(x: Tensor, name: str, dim: int | None = None) -> None:
    """Raise a ValueError naming ``name`` unless ``x`` is a floating (batch, dim) tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or not x.dtype.is_floating_point:
        raise ValueError(
            f"{name} must be a floating tensor of shape (batch, dim), got {x.dtype} {tuple(x.shape)}"
        )
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the flow's dimension), got shape {tuple(x.shape)}")


def check_positive_int(value: int, name: str) -> int:
    """``value`` if it is an int >= 1, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def grid_logprob_mass(logprob: Tensor, spacing: float) -> float:
    """The probability mass of a density given by log values on a uniform 2-D grid (Riemann sum)."""
    return float(torch.exp(logprob.double()).sum() * spacing**2)
