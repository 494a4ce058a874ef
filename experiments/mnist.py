"""MNIST classification (Table 1): ``python -m experiments.mnist model=odenet solver=dopri5 profile=quick``.

Thin: turns the Hydra config into a model, batches and the shared :class:`neuralode.training.Trainer`.
A run lives in ``runs/mnist/<profile>/<model>/<overrides>``; running the same command again resumes it.

Data parallel: ``torchrun --nproc_per_node=N -m experiments.mnist ...`` trains with N processes on the
same global batches (``batch_size`` is the global batch; each rank takes 1/N of it). Every rank writes
to rank 0's run folder, but only rank 0 writes files: ranks > 0 run Hydra without its ``.hydra`` folder
and log file.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.validation import Checker, ConfigError, check_common
from neuralode.data import ImageBatches, load_mnist
from neuralode.models.mnist import MODEL_NAMES, build_mnist_model, count_parameters
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
    """Every setting's type and range, and the solver through the library's checks; raises ConfigError.

    Runs before Hydra makes the run folder (``hydra.callbacks.validate`` in configs/mnist.yaml)."""
    check = Checker(cfg)
    check_common(check)
    check.choice("model.name", MODEL_NAMES)
    for key in ("model.channels", "model.hidden", "model.num_blocks"):
        if OmegaConf.select(cfg, key) is not None:
            check.integer(key, 1)
    if cfg.model.name in ("odenet", "rknet"):
        check.solver("solver", adjoint=cfg.model.name == "odenet")
    check.integer("epochs", 1, optional=True)
    check.integer("profile.mnist.epochs", 1)
    for key, value in (check.get("profile.mnist.epochs_by_model") or {}).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"profile.mnist.epochs_by_model.{key}", value, "epochs must be an integer >= 1")
    check.integer("profile.mnist.max_train_batches", 1, optional=True)
    check.integer("profile.mnist.max_test_batches", 1, optional=True)
    check.integer("profile.mnist.crop_padding", 0)
    check.integer("batch_size", 1)
    check.integer("test_batch_size", 1)
    check.number("optimizer.lr", 0, open_low=True)
    check.number("optimizer.momentum", 0, 1, open_high=True)
    check.number("optimizer.weight_decay", 0)
    check.fractions("schedule.milestones")
    check.number("schedule.gamma", 0, open_low=True)


def epochs_for(cfg: DictConfig) -> int:
    """``epochs`` when set, else the profile's epochs for this model."""
    if cfg.epochs is not None:
        return int(cfg.epochs)
    profile = cfg.profile.mnist
    return int(profile.epochs_by_model.get(cfg.model.name, profile.epochs))


def build_model(cfg: DictConfig) -> torch.nn.Module:
    """The configured MNIST model (solver settings apply to ODE-Net and RK-Net)."""
    model = cfg.model
    return build_mnist_model(
        model.name,
        channels=model.get("channels", 64),
        hidden=model.get("hidden", 300),
        num_blocks=model.get("num_blocks", 6),
        method=cfg.solver.method,
        rtol=cfg.solver.rtol,
        atol=cfg.solver.atol,
        options=OmegaConf.to_container(cfg.solver.options) or None,
        adjoint_options=OmegaConf.to_container(cfg.solver.adjoint_options) or None,
    )


def hparams(cfg: DictConfig, epochs: int) -> dict[str, Any]:
    """The settings that define a run (a checkpoint only resumes a run with the same ones)."""
    flat = {
        "profile": cfg.profile.name, "model": cfg.model.name, "seed": cfg.seed, "epochs": epochs,
        "batch_size": cfg.batch_size, **{f"optimizer.{k}": v for k, v in cfg.optimizer.items()},
        "schedule.milestones": str(list(cfg.schedule.milestones)), "schedule.gamma": cfg.schedule.gamma,
        "crop_padding": cfg.profile.mnist.crop_padding,
        "max_train_batches": cfg.profile.mnist.max_train_batches,
        **{f"model.{k}": v for k, v in cfg.model.items() if k not in ("name", "label", "gradient")},
    }  # fmt: skip
    if cfg.model.name in ("odenet", "rknet"):
        flat.update({
            "solver.method": cfg.solver.method, "solver.rtol": cfg.solver.rtol,
            "solver.atol": cfg.solver.atol,
            "solver.options": str(OmegaConf.to_container(cfg.solver.options)),
            "solver.adjoint_options": str(OmegaConf.to_container(cfg.solver.adjoint_options)),
        })  # fmt: skip
    return {k: (str(v) if v is None else v) for k, v in flat.items()}


def run(cfg: DictConfig, run_dir: str) -> dict[str, Any]:
    """Train (or resume) the configured model in ``run_dir``; returns the result written to result.json."""
    validate_config(cfg)
    device = distributed.init_distributed(resolve_device(cfg.device))
    run_dir = distributed.broadcast_object(str(run_dir))  # the same folder even if its name had a timestamp
    main = distributed.is_main()
    epochs = epochs_for(cfg)
    profile = cfg.profile.mnist
    seed_everything(cfg.seed)
    train_images, train_labels = load_mnist(cfg.data_dir, train=True)
    test_images, test_labels = load_mnist(cfg.data_dir, train=False)
    train = ImageBatches(
        train_images, train_labels, cfg.batch_size, shuffle=True, crop_padding=profile.crop_padding,
        max_batches=profile.max_train_batches, seed=cfg.seed, device=device,
        rank=distributed.rank(), world_size=distributed.world_size(),
    )  # fmt: skip
    test = ImageBatches(
        test_images, test_labels, cfg.test_batch_size, max_batches=profile.max_test_batches, device=device
    )
    model = build_model(cfg).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum,
        weight_decay=cfg.optimizer.weight_decay,
    )  # fmt: skip
    schedule = StepSchedule(cfg.optimizer.lr, tuple(cfg.schedule.milestones), cfg.schedule.gamma)
    metadata = {
        "experiment": "mnist", "model": cfg.model.name, "label": cfg.model.label,
        "parameters": count_parameters(model), "profile": cfg.profile.name,
        "solver": OmegaConf.to_container(cfg.solver) if cfg.model.name in ("odenet", "rknet") else None,
        "gradient": cfg.model.get("gradient"), "config": OmegaConf.to_container(cfg, resolve=True),
        "world_size": distributed.world_size(),
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
    final = result["final"]
    if main:
        print(f"{cfg.model.label}: test error {100 * final['test_error']:.2f}% after {epochs} epochs "
              f"({result['parameters']:,} parameters) -> {run_dir}", flush=True)  # fmt: skip
    return result


@hydra.main(version_base="1.3", config_path="../configs", config_name="mnist")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final test error (what a sweeper would minimise)."""
    from hydra.core.hydra_config import HydraConfig

    return run(cfg, HydraConfig.get().runtime.output_dir)["final"]["test_error"]


def _quiet_hydra_on_other_ranks() -> None:
    """Under torchrun, ranks > 0 keep Hydra from writing ``.hydra/`` and the log file into the run folder.

    Hydra overrides are not part of ``override_dirname``, so the run folder's name does not change.
    """
    if distributed.env_rank() > 0:
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


if __name__ == "__main__":
    _quiet_hydra_on_other_ranks()
    main()
    distributed.cleanup(synchronize=True)  # after a failure Hydra exits above; the atexit hook cleans up
