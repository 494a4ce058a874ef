"""Latent ODE time series (Table 2): ``python -m experiments.latent_ode net=latent_ode num_observed=30``.

Thin: builds the seeded spiral data and the latent ODE (its solver from the ``solver`` group) or the RNN
baseline through :mod:`neuralode.tasks.spirals`, and runs the shared :class:`neuralode.training.Trainer`.
Each epoch ends with the predictive RMSE on held-out spirals at the ``extrapolate`` grid times after the
observed window (the paper's metric). ``latent_ode.event_rate=true`` adds the Poisson process likelihood
on synthetic events. A run lives in ``runs/latent_ode/<profile>/<net>/n<num_observed>/<overrides>``; the
same command resumes it.
"""

from __future__ import annotations

from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.solver_group import check_solver_group, regularization_hparams, solver_hparams
from experiments.validation import Checker, ConfigError, check_common
from neuralode.models.bptt import STRATEGIES
from neuralode.models.mnist import count_parameters
from neuralode.models.rnn_baseline import CELLS
from neuralode.tasks import spiral_settings as task
from neuralode.tasks.spirals import evaluate_on
from neuralode.training import (
    StepSchedule,
    Trainer,
    TrainerConfig,
    resolve_device,
    run_metadata,
    seed_everything,
)


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The settings that define a run (a checkpoint only resumes a run with the same ones)."""
    flat = {
        "profile": cfg.profile.name, "net": cfg.net, "num_observed": cfg.num_observed, "seed": cfg.seed,
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.optimizer.lr,
        "max_grad_norm": cfg.optimizer.max_grad_norm, "train_prefix": str(list(task.train_prefix_of(cfg))),
        "schedule.milestones": str(list(cfg.schedule.milestones)), "schedule.gamma": cfg.schedule.gamma,
        **{f"data.{k}": v for k, v in cfg.data.items() if k != "events"},
    }  # fmt: skip
    if cfg.net == "latent_ode":
        keys = ("latent_dim", "encoder_hidden", "encoder_cell", "dynamics_hidden", "decoder_hidden",
                "decoder_activation", "event_rate")  # fmt: skip
        flat.update({**{k: cfg.latent_ode[k] for k in keys}, **solver_hparams(cfg),
                     **regularization_hparams(cfg, "regularization")})  # fmt: skip
        flat["likelihood_std"] = task.likelihood_std_of(cfg)
    else:
        flat.update({"rnn.hidden": cfg.rnn.hidden, "rnn.cell": cfg.rnn.cell,
                     **{f"rnn.bptt.{k}": v for k, v in cfg.rnn.bptt.items()}})  # fmt: skip
    return {k: (str(v) if v is None else v) for k, v in flat.items()}


def validate_config(cfg: DictConfig) -> None:
    """Every setting's type and range, the solver group by the library's checks, then the rules across
    keys (:func:`neuralode.tasks.spiral_settings.check_settings`); raises ConfigError. Runs before Hydra
    makes the run folder (``hydra.callbacks.validate``)."""
    check = Checker(cfg)
    check_common(check)
    check.choice("net", task.NETS)
    for key in ("num_observed", "epochs", "batch_size", "data.num_spirals", "data.num_dense", "data.window",
                "data.extrapolate", "latent_ode.latent_dim", "latent_ode.encoder_hidden", "rnn.bptt.tau",
                "latent_ode.dynamics_hidden", "latent_ode.decoder_hidden", "rnn.hidden"):  # fmt: skip
        check.integer(key, 1)
    for key, choices in (("rnn.bptt.strategy", STRATEGIES), ("rnn.cell", sorted(CELLS)),
                         ("latent_ode.encoder_cell", sorted(CELLS))):  # fmt: skip
        check.choice(key, choices)
    check.integer("data.seed", 0, 2**32 - 1)
    check.integer("num_threads", 1, optional=True)
    check.number("data.test_fraction", 0, 1, open_low=True, open_high=True)
    for key in ("data.turns", "data.noise_std", "data.radius_growth"):
        check.number(key, 0)
    for key in ("data.radius_start", "optimizer.lr", "schedule.gamma"):
        check.number(key, 0, open_low=True)
    for key in ("optimizer.max_grad_norm", "latent_ode.likelihood_std"):
        check.number(key, 0, open_low=True, optional=True)
    check.number("rnn.bptt.keep_probability", 0, 1, open_low=True)
    check.fractions("schedule.milestones")
    check.boolean("latent_ode.event_rate")
    if cfg.net == "latent_ode":
        check_solver_group(check, regularization="regularization")
    try:
        task.check_settings(cfg)
    except (TypeError, ValueError) as error:  # its messages start with the key: "num_observed must be ..."
        key = str(error).split(" ")[0].split("=")[0]
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        raise ConfigError(key, value, str(error)) from None


def run(cfg: DictConfig, run_dir: str) -> dict[str, Any]:
    """Train (or resume) the configured model in ``run_dir``; returns the result written to result.json."""
    validate_config(cfg)
    if cfg.num_threads is not None:
        torch.set_num_threads(int(cfg.num_threads))
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    train, test = task.series_from_settings(cfg, device)
    model = task.model_from_settings(cfg).to(device)
    n_train, batch_size = len(train.spirals), min(cfg.batch_size, len(train.spirals))
    batches_per_epoch = n_train // batch_size

    def batches(epoch: int):
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(n_train, generator=generator).to(device)
        return (order[i * batch_size : (i + 1) * batch_size] for i in range(batches_per_epoch))

    metadata = {
        "experiment": "latent_ode", "net": cfg.net, "num_observed": cfg.num_observed,
        "parameters": count_parameters(model), "profile": cfg.profile.name,
        "bptt": OmegaConf.to_container(cfg.rnn.bptt) if cfg.net == "rnn" else None,
        "config": OmegaConf.to_container(cfg, resolve=True), **run_metadata(device, cfg.seed),
    }  # fmt: skip
    trainer = Trainer(
        model, torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr), batches,
        task.loss_from_settings(cfg, train),
        lambda model: {f"test_{k}": v for k, v in evaluate_on(model, test).items()},
        TrainerConfig(epochs=cfg.epochs, batches_per_epoch=batches_per_epoch, progress=cfg.progress,
                      tensorboard=cfg.tensorboard, hparams=hparams(cfg),
                      max_grad_norm=cfg.optimizer.max_grad_norm, precision=cfg.precision),
        run_dir=run_dir, device=device, metadata=metadata,
        lr_at=StepSchedule(cfg.optimizer.lr, tuple(cfg.schedule.milestones), cfg.schedule.gamma),
    )  # fmt: skip
    if trainer.resumed_from is not None:
        print(f"resuming {run_dir} after epoch {trainer.resumed_from} of {cfg.epochs}", flush=True)
    result = trainer.fit()
    rmse = result["final"]["test_rmse_extrapolation"]
    print(f"{cfg.net} n={cfg.num_observed}: extrapolation RMSE {rmse:.4f} "
          f"after {cfg.epochs} epochs -> {run_dir}", flush=True)  # fmt: skip
    return result


@hydra.main(version_base="1.3", config_path="../configs", config_name="latent_ode")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final extrapolation RMSE (what a sweeper would minimise)."""
    from hydra.core.hydra_config import HydraConfig

    return run(cfg, HydraConfig.get().runtime.output_dir)["final"]["test_rmse_extrapolation"]


if __name__ == "__main__":
    main()
