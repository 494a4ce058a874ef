"""The two training objectives of Section 4, for any flow with ``transform`` and ``log_prob``.

Density matching (Figure 4) minimises KL(q || p) = E_q[log q(x) + U(x)] + log Z with samples pushed from
the base distribution; maximum likelihood (Figure 5) minimises -E_data[log p(x)].
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


def reverse_kl_loss(flow: nn.Module, z: Tensor, energy: Callable[[Tensor], Tensor]) -> Tensor:
    """E_q[log q(x) + U(x)] over base samples z: KL(q || p) up to the constant log Z of p = exp(-U)/Z."""
    x, logq = flow.transform(z)
    return (logq + energy(x)).mean()


def negative_log_likelihood(flow: nn.Module, x: Tensor) -> Tensor:
    """Mean -log p(x) of the data batch x under the flow (nats per sample)."""
    return -flow.log_prob(x).mean()
