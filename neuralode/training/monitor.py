"""Per-iteration measurements: function evaluations of every ODE block, and peak memory."""

from __future__ import annotations

import resource
import sys

import torch
from torch import nn


def ode_nfe(model: nn.Module) -> tuple[int, int]:
    """(forward, backward) function evaluations of the last pass, summed over the model's ODE blocks."""
    forward = backward = 0
    for module in model.modules():
        stats = getattr(module, "last_stats", None)
        if stats is not None and hasattr(stats, "nfe_forward"):
            forward += stats.nfe_forward
            backward += stats.nfe_backward
    return forward, backward


def ode_regularization(model: nn.Module) -> torch.Tensor | None:
    """The weighted penalties of the last forward pass, summed over the model's regularised ODE blocks
    (``last_regularization``, differentiable); None when no block integrated any."""
    total = None
    for module in model.modules():
        if getattr(module, "last_penalties", None):
            penalty = module.last_regularization
            total = penalty if total is None else total + penalty
    return total


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux); 0 where unknown."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except OSError:
        return 0.0
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB: since :func:`reset_peak_rss` where that worked."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux ``clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory on a GPU (since the last reset); peak process RSS on CPU. MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()
