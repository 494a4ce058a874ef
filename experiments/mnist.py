"""MNIST classification (Table 1): ``python -m experiments.mnist model=odenet solver=dopri5 profile=quick``.

Thin: turns the Hydra config into a model, batches and the shared :class:`neuralode.training.Trainer`.
A run lives in ``runs/mnist/<profile>/<model>/<overrides>``; running the same command again resumes it.
Table 1's four models: ``python -m experiments.mnist -m experiment=table1`` (configs/experiment/table1.yaml).

Data parallel: ``torchrun --nproc_per_node=N -m experiments.mnist ...`` trains N processes on the same
global batches (each rank takes 1/N of ``batch_size``); only rank 0 writes files.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.solver_group import check_solver_group, regularization_hparams, solver_of
from experiments.validation import Checker, ConfigError, check_common
from neuralode.data import ImageBatches, load_mnist
from neuralode.models.mnist import MODEL_NAMES, ODE_MODELS, build_mnist_model, count_parameters
from neuralode.training import (
    StepSchedule,
    Trainer,
    TrainerConfig,
    distributed,
    resolve_device,
    run_metadata,
    seed_everything,
)
from neuralode.training.classification import classification_error, classification_loss


def validate_config(cfg: DictConfig) -> None:
    """Every setting's type and range, the solver by the library's checks; raises ConfigError. Runs before
    Hydra makes the run folder (``hydra.callbacks.validate`` in configs/mnist.yaml)."""
    check = Checker(cfg)
    check_common(check)
    check.choice("model.name", MODEL_NAMES)
    for key in ("model.channels", "model.hidden", "model.num_blocks"):
        if OmegaConf.select(cfg, key) is not None:
            check.integer(key, 1)
    if cfg.model.name in ODE_MODELS:
        check_solver_group(check, regularization="regularization")  # a failure names its key
    for key, low in (("profile.mnist.epochs", 1), ("profile.mnist.crop_padding", 0), ("batch_size", 1),
                     ("test_batch_size", 1)):  # fmt: skip
        check.integer(key, low)
    for key in ("epochs", "profile.mnist.max_train_batches", "profile.mnist.max_test_batches"):
        check.integer(key, 1, optional=True)
    for key, value in (check.get("profile.mnist.epochs_by_model") or {}).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"profile.mnist.epochs_by_model.{key}", value, "epochs must be an integer >= 1")
    for key in ("optimizer.lr", "schedule.gamma"):
        check.number(key, 0, open_low=True)
    check.number("optimizer.momentum", 0, 1, open_high=True)
    check.number("optimizer.weight_decay", 0)
    check.fractions("schedule.milestones")


def epochs_for(cfg: DictConfig) -> int:
    """``epochs`` when set, else the profile's epochs for this model."""
    profile = cfg.profile.mnist
    return int(cfg.epochs or profile.epochs_by_model.get(cfg.model.name, profile.epochs))


def build_model(cfg: DictConfig) -> torch.nn.Module:
    """The configured model; RK-Net and ODE-Net take the solver group (its gradient tells them apart)."""
    model, ode = cfg.model, cfg.model.name in ODE_MODELS
    return build_mnist_model(
        model.name, channels=model.get("channels", 64), hidden=model.get("hidden", 300),
        num_blocks=model.get("num_blocks", 6), solver=solver_of(cfg, "regularization") if ode else None,
    )  # fmt: skip


def hparams(cfg: DictConfig, epochs: int) -> dict[str, Any]:
    """The settings that define a run (a checkpoint only resumes a run with the same ones)."""
    mnist = cfg.profile.mnist
    flat = {
        "profile": cfg.profile.name, "model": cfg.model.name, "seed": cfg.seed, "epochs": epochs,
        "batch_size": cfg.batch_size, **{f"optimizer.{k}": v for k, v in cfg.optimizer.items()},
        "schedule.milestones": str(list(cfg.schedule.milestones)), "schedule.gamma": cfg.schedule.gamma,
        "crop_padding": mnist.crop_padding, "max_train_batches": mnist.max_train_batches,
        **{f"model.{k}": v for k, v in cfg.model.items() if k not in ("name", "label")},
    }  # fmt: skip
    if cfg.model.name in ODE_MODELS:
        flat.update({f"solver.{k}": v if isinstance(v, int | float | str) else str(v)
                     for k, v in OmegaConf.to_container(cfg.solver).items() if k != "name"})  # fmt: skip
        flat.update(regularization_hparams(cfg, "regularization"))
    return {k: (str(v) if v is None else v) for k, v in flat.items()}


def run(cfg: DictConfig, run_dir: str) -> dict[str, Any]:
    """Train (or resume) the configured model in ``run_dir``; returns the result written to result.json."""
    validate_config(cfg)
    device = distributed.init_distributed(resolve_device(cfg.device))
    run_dir = distributed.broadcast_object(str(run_dir))  # the same folder even if its name had a timestamp
    main, epochs, profile = distributed.is_main(), epochs_for(cfg), cfg.profile.mnist
    seed_everything(cfg.seed)
    train = ImageBatches(
        *load_mnist(cfg.data_dir, train=True), cfg.batch_size, shuffle=True, seed=cfg.seed, device=device,
        crop_padding=profile.crop_padding, max_batches=profile.max_train_batches,
        rank=distributed.rank(), world_size=distributed.world_size(),
    )  # fmt: skip
    test = ImageBatches(*load_mnist(cfg.data_dir, train=False), cfg.test_batch_size,
                        max_batches=profile.max_test_batches, device=device)  # fmt: skip
    model = build_model(cfg).to(device)
    optimizer = torch.optim.SGD(model.parameters(), **OmegaConf.to_container(cfg.optimizer))
    schedule = StepSchedule(cfg.optimizer.lr, tuple(cfg.schedule.milestones), cfg.schedule.gamma)
    metadata = {
        "experiment": "mnist", "model": cfg.model.name, "label": cfg.model.label,
        "parameters": count_parameters(model), "profile": cfg.profile.name,
        "solver": OmegaConf.to_container(cfg.solver) if cfg.model.name in ODE_MODELS else None,
        "config": OmegaConf.to_container(cfg, resolve=True), "world_size": distributed.world_size(),
        **run_metadata(device, cfg.seed),
    }  # fmt: skip

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        metrics = classification_error(model, test.epoch(0))
        return {"test_error": metrics["error"], "test_nfe_forward": metrics["nfe_forward"]}

    trainer = Trainer(
        model, optimizer, train.epoch, classification_loss, evaluate,
        TrainerConfig(epochs=epochs, batches_per_epoch=len(train), progress=cfg.progress,
                      tensorboard=cfg.tensorboard, hparams=hparams(cfg, epochs), precision=cfg.precision),
        run_dir=run_dir, device=device, lr_at=schedule, metadata=metadata,
    )  # fmt: skip
    if trainer.resumed_from is not None and main:
        print(f"resuming {run_dir} after epoch {trainer.resumed_from} of {epochs}", flush=True)
    result = trainer.fit()
    if main:
        print(f"{cfg.model.label}: test error {100 * result['final']['test_error']:.2f}% after {epochs} "
              f"epochs ({result['parameters']:,} parameters) -> {run_dir}", flush=True)  # fmt: skip
    return result


@hydra.main(version_base="1.3", config_path="../configs", config_name="mnist")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final test error (what a sweeper would minimise)."""
    return run(cfg, HydraConfig.get().runtime.output_dir)["final"]["test_error"]


if __name__ == "__main__":
    if distributed.env_rank() > 0:  # torchrun: no .hydra/ nor log of ranks > 0 (the folder name stays)
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    main()
    distributed.cleanup(synchronize=True)  # after a failure Hydra exits above; the atexit hook cleans up
