"""Probe noise for Hutchinson's estimators (the CNF's trace, the Jacobian Frobenius penalty): E[e e^T] = I."""

from __future__ import annotations

import torch
from torch import Tensor

NOISE_KINDS = ("gaussian", "rademacher")


def sample_noise(like: Tensor, kind: str, generator: torch.Generator | None = None) -> Tensor:
    """Noise shaped like ``like``: standard Gaussian, or Rademacher (+-1 with equal probability)."""
    if kind == "gaussian":
        return torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)
    if kind == "rademacher":
        bits = torch.randint(0, 2, like.shape, device=like.device, generator=generator)
        return (2 * bits - 1).to(like.dtype)
    raise ValueError(f"noise must be one of {NOISE_KINDS}, got {kind!r}")
