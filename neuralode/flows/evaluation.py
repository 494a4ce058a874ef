"""Scoring a trained 2-D flow, and the arrays its figures are drawn from.

:func:`evaluator` gives the KL(q || p) estimate (density matching) or the held-out NLL (maximum likelihood)
on samples fixed by the seed; :func:`plot_data` computes what ``scripts/make_cnf_results.py`` draws: model
samples, the log-density on a grid (maximum likelihood) and the CNF's base samples along t.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .cnf import CNF
from .densities import energy, log_normalizer, sample_dataset


def _nfe(flow: nn.Module) -> int:
    return flow.last_stats.nfe_forward if isinstance(flow, CNF) else 0


def evaluator(
    task: str, target: str, samples: int, seed: int, device: torch.device, eval_trace: str = "exact"
) -> Callable[[nn.Module], dict[str, float]]:
    """``evaluate(flow)``: KL and its standard error (density) or held-out NLL (mle) on ``samples`` points.

    A CNF trained with a stochastic or exact trace is scored with ``eval_trace`` (so that both trace
    methods are scored alike), through a flow sharing its parameters: the trained flow is not changed."""
    generator = torch.Generator().manual_seed(seed + 7919)
    if task == "density":
        z = torch.randn(samples, 2, generator=generator).to(device)
        u, log_z = energy(target), log_normalizer(target)

        def evaluate(flow: nn.Module) -> dict[str, float]:
            x, logq = flow.transform(z)
            terms = logq + u(x) + log_z
            stderr = (terms.std() / math.sqrt(len(terms))).item()
            return {"kl": terms.mean().item(), "kl_stderr": stderr, "eval_nfe_forward": _nfe(flow)}

        return evaluate
    test = sample_dataset(target, samples, seed=seed + 1_000_000).to(device)

    def evaluate(flow: nn.Module) -> dict[str, float]:
        if isinstance(flow, CNF) and flow.trace in ("exact", "hutchinson"):
            flow = flow.with_trace(eval_trace)
        nll = -flow.log_prob(test)
        return {
            "test_nll": nll.mean().item(),
            "test_nll_stderr": (nll.std() / math.sqrt(len(nll))).item(),
            "eval_nfe_forward": _nfe(flow),
        }

    return evaluate


@dataclass(frozen=True)
class PlotSettings:
    """What a run stores for its figures: a ``grid`` x ``grid`` lattice over [-limit, limit]^2, model
    ``samples``, ``snapshots`` times of ``snapshot_samples`` base samples, ``gif_frames`` (0: none)."""

    grid: int = 100
    limit: float = 4.0
    samples: int = 20000
    snapshots: int = 6
    snapshot_samples: int = 2000
    gif_frames: int = 40


@torch.no_grad()
def plot_data(
    flow: nn.Module, task: str, target: str, seed: int, device: torch.device, settings: PlotSettings
) -> dict[str, Any]:
    """Samples of the model, its log-density on the grid (mle), and for a CNF the base samples at
    ``snapshots`` times in [0, t1] (and at ``gif_frames`` times for maximum likelihood's animation)."""
    flow.eval()
    generator = torch.Generator().manual_seed(seed + 104729)
    p = settings
    z = torch.randn(p.samples, 2, generator=generator).to(device)
    out: dict[str, Any] = {"task": task, "target": target, "limit": p.limit}
    is_cnf = isinstance(flow, CNF)
    out["samples"] = (flow.transform(z)[0] if task == "density" or is_cnf else flow.inverse(z)).cpu()
    if task == "mle":
        axis = torch.linspace(-p.limit, p.limit, p.grid)
        grid = torch.cartesian_prod(axis, axis).to(device)
        out["grid_axis"], out["grid_logp"] = axis, flow.log_prob(grid).reshape(p.grid, p.grid).cpu()
        out["data"] = sample_dataset(target, p.snapshot_samples, seed=seed + 2_000_000)
    if is_cnf:
        times = torch.linspace(0.0, flow.t1, p.snapshots).to(device)
        out["snapshot_times"] = times.cpu()
        out["snapshots"] = flow.trajectory(z[: p.snapshot_samples], times).cpu()
        if task == "mle" and p.gif_frames > 1:
            frames = torch.linspace(0.0, flow.t1, p.gif_frames).to(device)
            out["frame_times"] = frames.cpu()
            out["frames"] = flow.trajectory(z[: p.snapshot_samples], frames).cpu()
    return out
