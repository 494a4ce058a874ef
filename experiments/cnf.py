"""Continuous normalizing flows (Section 4): ``python -m experiments.cnf task=density flow=cnf size=8``.

Thin: turns the Hydra config into a flow (:mod:`neuralode.flows.tasks`), its solver (the ``solver`` group)
and the shared :class:`neuralode.training.Trainer`, then stores what the figures need (``plot_data.pt``,
:func:`neuralode.flows.evaluation.plot_data`). A run lives in
``runs/cnf/<profile>/<task>/<target>/<flow>-<size>-<trace>/<overrides>``; the same command resumes it.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.solver_group import check_solver_group, regularization_hparams, solver_hparams, solver_of
from experiments.validation import Checker, ConfigError, check_common
from neuralode.flows import evaluation, tasks
from neuralode.training import (
    StepSchedule,
    Trainer,
    TrainerConfig,
    atomic_write_bytes,
    resolve_device,
    run_metadata,
    seed_everything,
)

PLOT_DATA = "plot_data.pt"


def validate_config(cfg: DictConfig) -> None:
    """Every setting's type and range, the solver group by the library's checks; raises ConfigError.

    Runs before Hydra makes the run folder (``hydra.callbacks.validate`` in configs/cnf.yaml)."""
    check = Checker(cfg)
    check.choice("task", sorted(tasks.TASKS))
    try:
        tasks.resolve_trace(cfg.task, cfg.target, cfg.flow, cfg.trace)
    except ValueError as error:  # its messages name the key: "flow must be one of ..."
        key = str(error).split(" ")[0]
        raise ConfigError(key, check.get(key), str(error)) from None
    check_common(check)
    for key in ("size", f"profile.cnf.{cfg.task}.iterations.{cfg.flow}", "profile.cnf.epochs", "batch_size",
                "eval_samples", "hyper_hidden", "mlp_layers", "plot.grid", "plot.samples", "plot.snapshots",
                "plot.snapshot_samples"):  # fmt: skip
        check.integer(key, 1)
    check.integer("iterations", 1, optional=True)
    check.integer("plot.gif_frames", 0)
    check.choice("noise", ("gaussian", "rademacher"))
    check.choice("eval_trace", ("exact", "hutchinson"))
    if cfg.flow != "planar":
        check_solver_group(check, regularization="regularization")
        check.number("t1", 0, open_low=True)
    check.choice(f"optimizer.{cfg.flow}.name", tasks.OPTIMIZERS)
    check.number(f"optimizer.{cfg.flow}.lr", 0, open_low=True)
    check.fractions("schedule.milestones")
    check.number("schedule.gamma", 0, open_low=True)
    check.number("plot.limit", 0, open_low=True)


def iteration_plan(cfg: DictConfig) -> tuple[int, int]:
    """(epochs, iterations per epoch): the run's iterations split into the profile's epochs."""
    iterations = int(
        cfg.iterations if cfg.iterations is not None else cfg.profile.cnf[cfg.task].iterations[cfg.flow]
    )
    epochs = min(int(cfg.profile.cnf.epochs), iterations)
    return epochs, math.ceil(iterations / epochs)


def hparams(cfg: DictConfig, trace: str, iterations: int) -> dict[str, Any]:
    """The settings that define a run (a checkpoint only resumes a run with the same ones)."""
    flat = {
        "profile": cfg.profile.name, "task": cfg.task, "target": cfg.target, "flow": cfg.flow,
        "size": cfg.size, "trace": trace, "noise": cfg.noise, "seed": cfg.seed, "iterations": iterations,
        "batch_size": cfg.batch_size, "optimizer": str(OmegaConf.to_container(cfg.optimizer[cfg.flow])),
        "schedule.milestones": str(list(cfg.schedule.milestones)), "schedule.gamma": cfg.schedule.gamma,
    }  # fmt: skip
    if cfg.flow != "planar":
        flat.update({**solver_hparams(cfg), **regularization_hparams(cfg, "regularization"), "t1": cfg.t1,
                     "hyper_hidden": cfg.hyper_hidden, "mlp_layers": cfg.mlp_layers})  # fmt: skip
    return flat


def run(cfg: DictConfig, run_dir: str) -> dict[str, Any]:
    """Train (or resume) the configured flow in ``run_dir``; returns the result written to result.json."""
    validate_config(cfg)
    trace = tasks.resolve_trace(cfg.task, cfg.target, cfg.flow, cfg.trace)
    device = resolve_device(cfg.device)
    epochs, per_epoch = iteration_plan(cfg)
    seed_everything(cfg.seed)
    solver = solver_of(cfg, "regularization") if cfg.flow != "planar" else None
    flow = tasks.build_flow(cfg.flow, cfg.size, trace, solver, t1=cfg.t1, noise=cfg.noise,
                      hyper_hidden=cfg.hyper_hidden, mlp_layers=cfg.mlp_layers).to(device)  # fmt: skip
    metadata = {
        "experiment": "cnf", "task": cfg.task, "target": cfg.target, "flow": cfg.flow, "size": cfg.size,
        "trace": trace, "iterations": epochs * per_epoch, "profile": cfg.profile.name,
        "parameters": sum(p.numel() for p in flow.parameters()),
        "config": OmegaConf.to_container(cfg, resolve=True), **run_metadata(device, cfg.seed),
    }  # fmt: skip
    opt = cfg.optimizer[cfg.flow]
    trainer = Trainer(
        flow, tasks.build_optimizer(opt.name, flow.parameters(), opt.lr, opt.get("momentum", 0.0)),
        tasks.batch_source(cfg.task, cfg.target, cfg.batch_size, cfg.seed, device),
        tasks.task_loss(cfg.task, cfg.target),
        evaluation.evaluator(cfg.task, cfg.target, cfg.eval_samples, cfg.seed, device, cfg.eval_trace),
        TrainerConfig(epochs=epochs, batches_per_epoch=per_epoch, progress=cfg.progress,
                      tensorboard=cfg.tensorboard, hparams=hparams(cfg, trace, epochs * per_epoch),
                      precision=cfg.precision),
        run_dir=run_dir, device=device, metadata=metadata,
        lr_at=StepSchedule(cfg.optimizer[cfg.flow].lr, tuple(cfg.schedule.milestones), cfg.schedule.gamma),
    )  # fmt: skip
    if trainer.resumed_from is not None:
        print(f"resuming {run_dir} after epoch {trainer.resumed_from} of {epochs}", flush=True)
    result = trainer.fit()
    path = Path(run_dir) / PLOT_DATA
    if not path.exists():
        settings = evaluation.PlotSettings(**OmegaConf.to_container(cfg.plot, resolve=True))
        data = evaluation.plot_data(flow, cfg.task, cfg.target, cfg.seed, device, settings)
        buffer = io.BytesIO()
        torch.save({**data, "flow": cfg.flow, "size": cfg.size}, buffer)
        atomic_write_bytes(path, buffer.getvalue())
    final = result["final"]
    shown = f"KL {final['kl']:.3f}" if cfg.task == "density" else f"test NLL {final['test_nll']:.3f}"
    speed = f"{result['mean_seconds_per_iteration'] * 1e3:.1f} ms/iteration"
    print(f"{cfg.task} {cfg.target} {cfg.flow}-{cfg.size} ({trace}): {shown} after {epochs * per_epoch} "
          f"iterations, {speed} -> {run_dir}", flush=True)  # fmt: skip
    return result


@hydra.main(version_base="1.3", config_path="../configs", config_name="cnf")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final KL or held-out NLL (what a sweeper would minimise)."""
    from hydra.core.hydra_config import HydraConfig

    final = run(cfg, HydraConfig.get().runtime.output_dir)["final"]
    return final["kl"] if cfg.task == "density" else final["test_nll"]


if __name__ == "__main__":
    main()
