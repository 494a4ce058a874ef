"""Loss and evaluation for classifiers, in the shape the shared loop expects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from .monitor import ode_nfe, ode_regularization


def classification_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Mapping[str, float]]:
    """Cross-entropy of ``model(x)`` against ``y``, plus the ODE blocks' weighted penalties when their
    solver has a regularization (then also reported as ``regularization``), and the batch's error rate."""
    x, y = batch
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    error = (logits.argmax(dim=1) != y).float().mean().item()
    penalty = ode_regularization(model)
    if penalty is None:
        return loss, {"error": error}
    return loss + penalty, {"error": error, "regularization": penalty.item()}


@torch.no_grad()
def classification_error(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """Error rate over ``batches`` and the mean forward NFE per batch (0 for models without ODE blocks)."""
    wrong = total = nfe = count = 0
    for x, y in batches:
        wrong += int((model(x).argmax(dim=1) != y).sum())
        total += y.numel()
        nfe += ode_nfe(model)[0]
        count += 1
    if total == 0:
        raise ValueError("no evaluation batches")
    return {"error": wrong / total, "nfe_forward": nfe / count}
