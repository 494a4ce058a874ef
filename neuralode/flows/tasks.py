"""The 2-D tasks of Section 4: which flow fits which target, how it is built, trained and fed.

``density`` fits q to exp(-U) for an energy U1-U4 by KL(q || p) on base samples (Figure 4); ``mle`` fits
data of two circles or two moons by maximum likelihood (Figure 5). A flow is the paper's hypernetwork
CNF (``cnf``), a planar NF (``planar``) or a general CNF f = MLP([z, t]) (``mlp``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from ..solver_config import SolverConfig
from ..training.monitor import ode_regularization
from .cnf import CNF
from .densities import energy, sample_dataset
from .fields import ConcatMLPField, HyperPlanarField
from .objectives import negative_log_likelihood, reverse_kl_loss
from .planar import PlanarFlow

TASKS = {"density": ("u1", "u2", "u3", "u4"), "mle": ("circles", "moons")}
FLOWS = ("cnf", "planar", "mlp")
AUTO_TRACE = {"cnf": "closed_form", "mlp": "exact", "planar": "none"}
ALLOWED_TRACES = {"cnf": ("closed_form",), "mlp": ("exact", "hutchinson"), "planar": ("none",)}
OPTIMIZERS = ("adam", "rmsprop")  # the paper trained its CNFs with Adam and its planar NFs with RMSprop


def resolve_trace(task: str, target: str, flow: str, trace: str) -> str:
    """The trace method a (task, target, flow) run uses ("auto" resolved); a bad choice is a ValueError
    whose message starts with the setting's name ("flow must be one of ...")."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    if target not in TASKS[task]:
        raise ValueError(f"target for task={task} must be one of {TASKS[task]}, got {target!r}")
    if flow not in FLOWS:
        raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
    resolved = AUTO_TRACE[flow] if trace == "auto" else trace
    if resolved not in ALLOWED_TRACES[flow]:
        raise ValueError(
            f"trace for flow={flow} must be auto or one of {ALLOWED_TRACES[flow]}, got {trace!r}"
        )
    return resolved


def build_flow(
    flow: str,
    size: int,
    trace: str,
    solver: SolverConfig,
    *,
    t1: float = 1.0,
    noise: str = "gaussian",
    hyper_hidden: int = 32,
    mlp_layers: int = 2,
) -> nn.Module:
    """A 2-D flow: ``size`` is the CNF's width M, the planar NF's depth K or the MLP field's hidden units;
    ``trace`` is what :func:`resolve_trace` gives; the planar NF takes no solver."""
    if flow == "planar":
        return PlanarFlow(2, size)
    if flow == "cnf":
        func: nn.Module = HyperPlanarField(2, size, hidden=hyper_hidden)
    elif flow == "mlp":
        func = ConcatMLPField(2, hidden=size, layers=mlp_layers)
    else:
        raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
    return CNF(func, 2, t1=t1, trace=trace, noise=noise, solver=solver)


def batch_source(
    task: str, target: str, batch_size: int, seed: int, device: torch.device
) -> Callable[[int], Iterator[Tensor]]:
    """``batches(epoch)``: fresh base samples (density) or fresh data (mle), the same for the same epoch
    (a resumed run sees the batches it would have seen)."""

    def batches(epoch: int) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        while True:
            if task == "density":
                yield torch.randn(batch_size, 2, generator=generator).to(device)
            else:
                data_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
                yield sample_dataset(target, batch_size, data_seed).to(device)

    return batches


def task_loss(task: str, target: str) -> Callable[[nn.Module, Tensor], tuple[Tensor, dict[str, float]]]:
    """``loss_fn(flow, batch)`` for the training loop: KL(q || p) up to log Z (density) or the NLL (mle),
    plus the flow's weighted penalties when its solver has a regularization (reported as
    ``regularization``)."""
    if task == "density":
        u = energy(target)
        return lambda flow, z: _with_penalty(flow, reverse_kl_loss(flow, z, u))
    return lambda flow, x: _with_penalty(flow, negative_log_likelihood(flow, x))


def _with_penalty(flow: nn.Module, loss: Tensor) -> tuple[Tensor, dict[str, float]]:
    penalty = ode_regularization(flow)
    if penalty is None:
        return loss, {}
    return loss + penalty, {"regularization": penalty.item()}


def build_optimizer(
    name: str, parameters: Iterable[nn.Parameter], lr: float, momentum: float = 0.0
) -> torch.optim.Optimizer:
    """Adam, or RMSprop with ``momentum``: one of :data:`OPTIMIZERS`."""
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, momentum=momentum)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
