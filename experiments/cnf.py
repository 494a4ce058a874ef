"""Continuous normalizing flows (Section 4): ``python -m experiments.cnf task=density flow=cnf size=8``.

Thin: turns the Hydra config into a flow, batches and the shared :class:`neuralode.training.Trainer`, then
stores what the figures need (``plot_data.pt``). A run lives in
``runs/cnf/<profile>/<task>/<target>/<flow>-<size>-<trace>/<overrides>``; the same command resumes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from experiments.validation import Checker, ConfigError, check_common
from neuralode.flows import (
    CNF,
    ConcatMLPField,
    HyperPlanarField,
    PlanarFlow,
    energy,
    log_normalizer,
    sample_dataset,
)
from neuralode.flows.objectives import negative_log_likelihood, reverse_kl_loss
from neuralode.training import (
    StepSchedule,
    Trainer,
    TrainerConfig,
    atomic_write_bytes,
    resolve_device,
    run_metadata,
    seed_everything,
)

TASKS = {"density": ("u1", "u2", "u3", "u4"), "mle": ("circles", "moons")}
MODELS = ("cnf", "planar", "mlp")
PLOT_DATA = "plot_data.pt"


def check_config(cfg: DictConfig) -> str:
    """Validate task/target/flow/trace; returns the trace method the model uses."""
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {cfg.task!r}")
    if cfg.target not in TASKS[cfg.task]:
        raise ValueError(f"target for task={cfg.task} must be one of {TASKS[cfg.task]}, got {cfg.target!r}")
    if cfg.flow not in MODELS:
        raise ValueError(f"flow must be one of {MODELS}, got {cfg.flow!r}")
    trace = (
        {"cnf": "closed_form", "mlp": "exact", "planar": "none"}[cfg.flow]
        if cfg.trace == "auto"
        else cfg.trace
    )
    allowed = {"cnf": ("closed_form",), "mlp": ("exact", "hutchinson"), "planar": ("none",)}[cfg.flow]
    if trace not in allowed:
        raise ValueError(f"trace for flow={cfg.flow} must be auto or one of {allowed}, got {cfg.trace!r}")
    return trace


def validate_config(cfg: DictConfig) -> None:
    """Every setting's type and range, the ODE solver by the library's checks; raises ConfigError.

    Runs before Hydra makes the run folder (``hydra.callbacks.validate`` in configs/cnf.yaml)."""
    check = Checker(cfg)
    check.choice("task", sorted(TASKS))
    try:
        check_config(cfg)
    except ValueError as error:  # its messages name the key: "flow must be one of ..."
        key = str(error).split(" ")[0]
        raise ConfigError(key, check.get(key), str(error)) from None
    check_common(check)
    check.integer("size", 1)
    check.choice("noise", ("gaussian", "rademacher"))
    check.choice("eval_trace", ("exact", "hutchinson"))
    check.integer("iterations", 1, optional=True)
    check.integer(f"profile.cnf.{cfg.task}.iterations.{cfg.flow}", 1)
    check.integer("profile.cnf.epochs", 1)
    check.integer("batch_size", 1)
    check.integer("eval_samples", 1)
    check.integer("hyper_hidden", 1)
    check.integer("mlp_layers", 1)
    if cfg.flow != "planar":
        check.solver("ode")
        check.number("ode.t1", 0, open_low=True)
        check.boolean("ode.adjoint")
    check.choice(f"optimizer.{cfg.flow}.name", ("adam", "rmsprop"))
    check.number(f"optimizer.{cfg.flow}.lr", 0, open_low=True)
    check.fractions("schedule.milestones")
    check.number("schedule.gamma", 0, open_low=True)
    for key in ("plot.grid", "plot.samples", "plot.snapshots", "plot.snapshot_samples"):
        check.integer(key, 1)
    check.integer("plot.gif_frames", 0)
    check.number("plot.limit", 0, open_low=True)


def build_flow(cfg: DictConfig, trace: str) -> nn.Module:
    """The configured 2-D flow."""
    if cfg.flow == "planar":
        return PlanarFlow(2, cfg.size)
    func = (
        HyperPlanarField(2, cfg.size, hidden=cfg.hyper_hidden)
        if cfg.flow == "cnf"
        else ConcatMLPField(2, hidden=cfg.size, layers=cfg.mlp_layers)
    )
    s = cfg.ode
    return CNF(
        func,
        2,
        t1=s.t1,
        trace=trace,
        noise=cfg.noise,
        method=s.method,
        rtol=s.rtol,
        atol=s.atol,
        adjoint=s.adjoint,
    )


def build_optimizer(cfg: DictConfig, flow: nn.Module) -> torch.optim.Optimizer:
    """Adam or RMSprop, as configured for this model."""
    opt = cfg.optimizer[cfg.flow]
    if opt.name == "adam":
        return torch.optim.Adam(flow.parameters(), lr=opt.lr)
    if opt.name == "rmsprop":
        return torch.optim.RMSprop(flow.parameters(), lr=opt.lr, momentum=opt.get("momentum", 0.0))
    raise ValueError(f"optimizer.{cfg.flow}.name must be adam or rmsprop, got {opt.name!r}")


def iteration_plan(cfg: DictConfig) -> tuple[int, int]:
    """(epochs, iterations per epoch): the run's iterations split into the profile's epochs."""
    iterations = (
        cfg.iterations if cfg.iterations is not None else cfg.profile.cnf[cfg.task].iterations[cfg.flow]
    )
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    epochs = min(int(cfg.profile.cnf.epochs), int(iterations))
    return epochs, math.ceil(int(iterations) / epochs)


def batch_source(cfg: DictConfig, device: torch.device):
    """``batches(epoch)``: fresh base samples (density) or fresh data (mle), the same for the same epoch."""

    def batches(epoch: int) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        while True:
            if cfg.task == "density":
                yield torch.randn(cfg.batch_size, 2, generator=generator).to(device)
            else:
                seed = int(torch.randint(0, 2**62, (1,), generator=generator))
                yield sample_dataset(cfg.target, cfg.batch_size, seed).to(device)

    return batches


def hparams(cfg: DictConfig, trace: str, epochs: int, per_epoch: int) -> dict[str, Any]:
    """The settings that define a run (a checkpoint only resumes a run with the same ones)."""
    flat = {
        "profile": cfg.profile.name,
        "task": cfg.task,
        "target": cfg.target,
        "flow": cfg.flow,
        "size": cfg.size,
        "trace": trace,
        "noise": cfg.noise,
        "seed": cfg.seed,
        "iterations": epochs * per_epoch,
        "batch_size": cfg.batch_size,
        "optimizer": str(OmegaConf.to_container(cfg.optimizer[cfg.flow])),
        "schedule.milestones": str(list(cfg.schedule.milestones)),
        "schedule.gamma": cfg.schedule.gamma,
    }
    if cfg.flow != "planar":
        flat.update({f"solver.{k}": v for k, v in cfg.ode.items()})
        flat.update({"hyper_hidden": cfg.hyper_hidden, "mlp_layers": cfg.mlp_layers})
    return flat


def evaluator(cfg: DictConfig, device: torch.device):
    """``evaluate(flow)``: the KL(q || p) estimate (density) or held-out NLL (mle), on fixed samples."""
    generator = torch.Generator().manual_seed(cfg.seed + 7919)
    if cfg.task == "density":
        z = torch.randn(cfg.eval_samples, 2, generator=generator).to(device)
        u, log_z = energy(cfg.target), log_normalizer(cfg.target)

        def evaluate(flow: nn.Module) -> dict[str, float]:
            x, logq = flow.transform(z)
            terms = logq + u(x) + log_z
            return {
                "kl": terms.mean().item(),
                "kl_stderr": (terms.std() / math.sqrt(len(terms))).item(),
                "eval_nfe_forward": getattr(flow, "last_stats", None).nfe_forward
                if cfg.flow != "planar"
                else 0,
            }

        return evaluate
    test = sample_dataset(cfg.target, cfg.eval_samples, seed=cfg.seed + 1_000_000).to(device)

    def evaluate(flow: nn.Module) -> dict[str, float]:
        trace = getattr(flow, "trace", None)
        if trace in ("exact", "hutchinson"):
            flow.trace = cfg.eval_trace
        try:
            nll = -flow.log_prob(test)
        finally:
            if trace is not None:
                flow.trace = trace
        return {
            "test_nll": nll.mean().item(),
            "test_nll_stderr": (nll.std() / math.sqrt(len(nll))).item(),
            "eval_nfe_forward": flow.last_stats.nfe_forward if cfg.flow != "planar" else 0,
        }

    return evaluate


@torch.no_grad()
def plot_data(cfg: DictConfig, flow: nn.Module, device: torch.device) -> dict[str, Any]:
    """What the figures show: samples of the model, its density on a grid (mle), snapshots over t (CNF)."""
    flow.eval()
    generator = torch.Generator().manual_seed(cfg.seed + 104729)
    p = cfg.plot
    z = torch.randn(p.samples, 2, generator=generator).to(device)
    out: dict[str, Any] = {
        "task": cfg.task,
        "target": cfg.target,
        "flow": cfg.flow,
        "size": cfg.size,
        "limit": p.limit,
    }
    if cfg.task == "density" or cfg.flow != "planar":
        out["samples"] = flow.transform(z)[0].cpu()
    else:
        out["samples"] = flow.inverse(z).cpu()
    if cfg.task == "mle":
        axis = torch.linspace(-p.limit, p.limit, p.grid)
        grid = torch.cartesian_prod(axis, axis).to(device)
        out["grid_axis"], out["grid_logp"] = axis, flow.log_prob(grid).reshape(p.grid, p.grid).cpu()
        out["data"] = sample_dataset(cfg.target, p.snapshot_samples, seed=cfg.seed + 2_000_000)
    if cfg.flow != "planar":
        times = torch.linspace(0.0, cfg.ode.t1, p.snapshots).to(device)
        out["snapshot_times"] = times.cpu()
        out["snapshots"] = flow.trajectory(z[: p.snapshot_samples], times).cpu()
        if cfg.task == "mle" and p.gif_frames > 1:  # frames of the optional animation
            frames = torch.linspace(0.0, cfg.ode.t1, p.gif_frames).to(device)
            out["frame_times"] = frames.cpu()
            out["frames"] = flow.trajectory(z[: p.snapshot_samples], frames).cpu()
    return out


def run(cfg: DictConfig, run_dir: str) -> dict[str, Any]:
    """Train (or resume) the configured flow in ``run_dir``; returns the result written to result.json."""
    validate_config(cfg)
    trace = check_config(cfg)
    device = resolve_device(cfg.device)
    epochs, per_epoch = iteration_plan(cfg)
    seed_everything(cfg.seed)
    flow = build_flow(cfg, trace).to(device)
    optimizer = build_optimizer(cfg, flow)
    target = energy(cfg.target) if cfg.task == "density" else None

    def loss_fn(model: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, float]]:
        if target is not None:
            return reverse_kl_loss(model, batch, target), {}
        return negative_log_likelihood(model, batch), {}

    metadata = {
        "experiment": "cnf",
        "task": cfg.task,
        "target": cfg.target,
        "flow": cfg.flow,
        "size": cfg.size,
        "trace": trace,
        "iterations": epochs * per_epoch,
        "profile": cfg.profile.name,
        "parameters": sum(p.numel() for p in flow.parameters()),
        "config": OmegaConf.to_container(cfg, resolve=True),
        **run_metadata(device, cfg.seed),
    }
    trainer = Trainer(
        flow,
        optimizer,
        batch_source(cfg, device),
        loss_fn,
        evaluator(cfg, device),
        TrainerConfig(
            epochs=epochs,
            batches_per_epoch=per_epoch,
            progress=cfg.progress,
            tensorboard=cfg.tensorboard,
            hparams=hparams(cfg, trace, epochs, per_epoch),
            precision=cfg.precision,
        ),
        run_dir=run_dir,
        device=device,
        lr_at=StepSchedule(cfg.optimizer[cfg.flow].lr, tuple(cfg.schedule.milestones), cfg.schedule.gamma),
        metadata=metadata,
    )
    if trainer.resumed_from is not None:
        print(f"resuming {run_dir} after epoch {trainer.resumed_from} of {epochs}", flush=True)
    result = trainer.fit()
    path = Path(run_dir) / PLOT_DATA
    if not path.exists():
        import io

        buffer = io.BytesIO()
        torch.save(plot_data(cfg, flow, device), buffer)
        atomic_write_bytes(path, buffer.getvalue())
    final = result["final"]
    shown = f"KL {final['kl']:.3f}" if cfg.task == "density" else f"test NLL {final['test_nll']:.3f}"
    print(
        f"{cfg.task} {cfg.target} {cfg.flow}-{cfg.size} ({trace}): {shown} after {epochs * per_epoch} "
        f"iterations, {result['mean_seconds_per_iteration'] * 1e3:.1f} ms/iteration -> {run_dir}",
        flush=True,
    )
    return result


@hydra.main(version_base="1.3", config_path="../configs", config_name="cnf")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final KL or held-out NLL (what a sweeper would minimise)."""
    from hydra.core.hydra_config import HydraConfig

    final = run(cfg, HydraConfig.get().runtime.output_dir)["final"]
    return final["kl"] if cfg.task == "density" else final["test_nll"]


if __name__ == "__main__":
    main()
