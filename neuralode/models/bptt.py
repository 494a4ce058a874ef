"""Three ways to backpropagate through time (BPTT) in a recurrent loop: full, truncated, randomized.

A recurrent loop calls ``carry(h, step)`` on the hidden state before each step. The value never changes;
only how far gradients flow back through time does:

- ``full``: every step (exact gradient, memory and variance grow with the sequence).
- ``truncated``: the state is detached every ``tau`` steps, so a gradient flows back at most ``tau``
  steps (Jaeger, 2002): biased towards short-term effects, cheap and stable.
- ``randomized``: at each step the gradient into the past is multiplied by xi, where xi = 1/pi with
  probability pi and 0 otherwise (Tallec and Ollivier, 2017). E[xi] = 1 and the draws are independent, so
  the expected gradient is the full one; long dependencies are rare but weighted up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

STRATEGIES = ("full", "truncated", "randomized")


@dataclass(frozen=True)
class BPTT:
    """How gradients flow back through a recurrent state (see the module docstring)."""

    strategy: str = "full"
    tau: int = 10  # truncated: steps per segment
    keep_probability: float = 0.9  # randomized: pi, the chance that the gradient flows on at a step

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"BPTT strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.tau < 1:
            raise ValueError(f"BPTT tau must be >= 1, got {self.tau}")
        if not 0.0 < self.keep_probability <= 1.0:
            raise ValueError(f"BPTT keep_probability must be in (0, 1], got {self.keep_probability}")

    def carry(self, h: Tensor, step: int, generator: torch.Generator | None = None) -> Tensor:
        """The state to feed into ``step``: ``h`` with the strategy's gradient path (same value)."""
        if self.strategy == "full" or step == 0:
            return h
        if self.strategy == "truncated":
            return h.detach() if step % self.tau == 0 else h
        if self.keep_probability == 1.0:
            return h
        device = generator.device if generator is not None else "cpu"
        keep = torch.rand((), generator=generator, device=device).item() < self.keep_probability
        if not keep:
            return h.detach()
        detached = h.detach()
        return detached + (h - detached) / self.keep_probability
