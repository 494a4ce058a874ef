"""Latent ODE time series (Table 2): ``python -m experiments.latent_ode net=latent_ode num_observed=30``.

Thin: builds the seeded spiral data, the latent ODE or the RNN baseline, and runs the shared
:class:`neuralode.training.Trainer`. Each epoch ends with the predictive RMSE on held-out spirals at the
``extrapolate`` grid times after the observed window (the paper's metric). ``event_rate=true`` adds the
Poisson process likelihood on synthetic events. A run lives in
``runs/latent_ode/<profile>/<net>/n<num_observed>/<overrides>``; the same command resumes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.validation import Checker, ConfigError, check_common
from neuralode.data.spirals import (
    Spirals,
    SpiralSpec,
    event_intensity,
    make_spirals,
    observation_index,
    sample_events,
    split,
)
from neuralode.models.bptt import BPTT, STRATEGIES
from neuralode.models.latent_ode import LatentODE
from neuralode.models.mnist import count_parameters
from neuralode.models.rnn_baseline import CELLS, GapRNN
from neuralode.training import (
    StepSchedule,
    Trainer,
    TrainerConfig,
    resolve_device,
    run_metadata,
    seed_everything,
)

MODELS = ("latent_ode", "rnn")


@dataclass(frozen=True)
class SeriesSet:
    """Spirals with the observed positions of each, and event counts when the Poisson head is on."""

    spirals: Spirals
    index: torch.Tensor  # (n, num_observed) positions in the window
    events: torch.Tensor | None  # (n, window) counts
    intensity: torch.Tensor | None  # (n, window + extrapolate) true intensity

    def observed(self, rows: torch.Tensor | slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, index) of the observations of ``rows``."""
        index = self.index[rows]
        noisy = self.spirals.noisy[rows]
        return noisy.gather(1, index.unsqueeze(-1).expand(-1, -1, noisy.shape[-1])), index


def spiral_spec(cfg: DictConfig) -> SpiralSpec:
    """The data settings of the config."""
    data = cfg.data
    return SpiralSpec(
        num_spirals=data.num_spirals, num_dense=data.num_dense, turns=data.turns, window=data.window,
        extrapolate=data.extrapolate, radius_start=data.radius_start, radius_growth=data.radius_growth,
        noise_std=data.noise_std,
    )  # fmt: skip


def load_series(cfg: DictConfig, device: torch.device) -> tuple[SeriesSet, SeriesSet]:
    """(train, test) series, generated from ``data.seed`` (the test spirals are never trained on)."""
    spec = spiral_spec(cfg)
    spirals = make_spirals(spec, cfg.data.seed)
    index = observation_index(len(spirals), spec.window, cfg.num_observed, cfg.data.seed + 1)
    events = intensity = None
    if cfg.latent_ode.event_rate:
        intensity = event_intensity(spirals.truth, cfg.data.events.peak_rate, cfg.data.events.sharpness)
        events = sample_events(intensity[:, : spec.window], spirals.times[: spec.window], cfg.data.seed + 2)
    train, test = split(spirals, cfg.data.test_fraction)
    n_train = len(train)

    def series(part: Spirals, rows: slice) -> SeriesSet:
        moved = Spirals(*(v.to(device) if isinstance(v, torch.Tensor) else v for v in vars(part).values()))
        pick = lambda v: None if v is None else v[rows].to(device)  # noqa: E731
        return SeriesSet(moved, index[rows].to(device), pick(events), pick(intensity))

    return series(train, slice(0, n_train)), series(test, slice(n_train, None))


def build_model(cfg: DictConfig) -> torch.nn.Module:
    """The configured latent ODE (paper sizes) or RNN baseline."""
    if cfg.net == "latent_ode":
        m = cfg.latent_ode
        return LatentODE(
            m.latent_dim, 2, m.encoder_hidden, m.dynamics_hidden, m.decoder_hidden, method=m.solver.method,
            rtol=m.solver.rtol, atol=m.solver.atol, options=OmegaConf.to_container(m.solver.options) or None,
            adjoint=m.adjoint, event_rate=m.event_rate, encoder_cell=m.encoder_cell,
            decoder_activation=m.decoder_activation,
        )  # fmt: skip
    if cfg.net == "rnn":
        return GapRNN(2, cfg.rnn.hidden, cfg.rnn.cell)
    raise ValueError(f"net must be one of {MODELS}, got {cfg.net!r}")


def bptt_of(cfg: DictConfig) -> BPTT:
    """The RNN baseline's BPTT strategy."""
    return BPTT(cfg.rnn.bptt.strategy, cfg.rnn.bptt.tau, cfg.rnn.bptt.keep_probability)


def train_prefix(cfg: DictConfig) -> tuple[float, float]:
    """The configured net's range of the visible share of the window during training."""
    low, high = (cfg.latent_ode if cfg.net == "latent_ode" else cfg.rnn).train_prefix
    return float(low), float(high)


def likelihood_std(cfg: DictConfig) -> float:
    """The observation model's noise std (the data's by default)."""
    std = cfg.latent_ode.likelihood_std
    return float(cfg.data.noise_std if std is None else std)


def make_loss(cfg: DictConfig, train: SeriesSet):
    """``loss_fn(model, rows)`` for the shared Trainer: -ELBO per series, or the RNN's prediction MSE.

    Each batch, a net sees only a random prefix of the window (a share drawn from its ``train_prefix``) and
    is scored on all of it: the latent ODE's encoder reads the prefix, the RNN forecasts past it
    free-running. A share of 1 is the plain ELBO, and teacher forcing for the RNN.
    """
    times = train.spirals.times
    std = likelihood_std(cfg)
    bptt = bptt_of(cfg)

    low, high = (float(v) for v in train_prefix(cfg))
    window = train.spirals.window

    def loss_fn(model: torch.nn.Module, rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        x, index = train.observed(rows)
        visible = low + (high - low) * torch.rand(()).item()  # this batch's visible share of the window
        mask = None  # the whole window: no masking work in the recurrent loops
        if visible < 1.0:
            mask = index < max(1, round(visible * window))
            mask[:, 0] = True
        if isinstance(model, LatentODE):
            reach = int(index.max()) + 1 if train.events is None else window
            events = None if train.events is None else train.events[rows]
            terms = model.elbo(x, index, times[:reach], std, events, encoder_mask=mask)
            return -terms.elbo, terms.scalars()
        predictions = model.teacher_forced(x, times[index], bptt, mask=mask)
        mse = torch.mean((predictions - x[:, 1:]) ** 2)
        return mse, {"mse": mse.item()}

    return loss_fn


def predict(
    model: torch.nn.Module, series: SeriesSet
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Predictions at the grid times after the window ``(n, extrapolate, 2)``; for the latent ODE also its
    reconstruction of the window ``(n, window, 2)`` and latent path, from the same single solve."""
    x, index = series.observed()
    times, window = series.spirals.times, series.spirals.window
    if isinstance(model, LatentODE):
        decoded, path = model.predict(x, index, times)
        return decoded[:, window:], decoded[:, :window], path
    return model.forecast(x, times[index], times[window:]), None, None


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root mean square of the difference."""
    return math.sqrt(torch.mean((a - b) ** 2).item())


def evaluate_on(model: torch.nn.Module, series: SeriesSet) -> dict[str, float]:
    """Predictive RMSE on the extrapolated points (against the true and the noisy spiral), NFE and more."""
    window = series.spirals.window
    predicted, reconstruction, path = predict(model, series)
    metrics = {
        "rmse_extrapolation": rmse(predicted, series.spirals.truth[:, window:]),
        "rmse_extrapolation_noisy": rmse(predicted, series.spirals.noisy[:, window:]),
    }
    if isinstance(model, LatentODE):
        metrics["rmse_window"] = rmse(reconstruction, series.spirals.truth[:, :window])
        metrics["nfe_forward"] = model.nfe_forward
        if series.intensity is not None:  # inside the window (events seen) and after it (extrapolated)
            inferred = model.intensity(path)
            metrics["rmse_intensity_window"] = rmse(inferred[:, :window], series.intensity[:, :window])
            metrics["rmse_intensity_extrapolation"] = rmse(inferred[:, window:], series.intensity[:, window:])
    return metrics


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The settings that define a run (a checkpoint only resumes a run with the same ones)."""
    flat = {
        "profile": cfg.profile.name, "net": cfg.net, "num_observed": cfg.num_observed, "seed": cfg.seed,
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.optimizer.lr,
        "max_grad_norm": cfg.optimizer.max_grad_norm, "train_prefix": str(list(train_prefix(cfg))),
        "schedule.milestones": str(list(cfg.schedule.milestones)), "schedule.gamma": cfg.schedule.gamma,
        **{f"data.{k}": v for k, v in cfg.data.items() if k != "events"},
    }  # fmt: skip
    if cfg.net == "latent_ode":
        m = cfg.latent_ode
        flat.update({
            "latent_dim": m.latent_dim, "encoder_hidden": m.encoder_hidden, "encoder_cell": m.encoder_cell,
            "dynamics_hidden": m.dynamics_hidden, "decoder_hidden": m.decoder_hidden,
            "decoder_activation": m.decoder_activation,
            "solver.method": m.solver.method, "solver.rtol": m.solver.rtol, "solver.atol": m.solver.atol,
            "adjoint": m.adjoint, "event_rate": m.event_rate, "likelihood_std": likelihood_std(cfg),
        })  # fmt: skip
    else:
        flat.update({"rnn.hidden": cfg.rnn.hidden, "rnn.cell": cfg.rnn.cell,
                     **{f"rnn.bptt.{k}": v for k, v in cfg.rnn.bptt.items()}})  # fmt: skip
    return {k: (str(v) if v is None else v) for k, v in flat.items()}


def check_config(cfg: DictConfig) -> None:
    """Bad settings fail here, before any data or training, with the fix in the message."""
    if cfg.net not in MODELS:
        raise ValueError(f"net must be one of {MODELS}, got {cfg.net!r} (e.g. net=latent_ode)")
    if not 2 <= cfg.num_observed <= cfg.data.window:
        raise ValueError(
            f"num_observed must be in [2, data.window={cfg.data.window}], got {cfg.num_observed}"
        )
    if cfg.latent_ode.event_rate and cfg.net != "latent_ode":
        raise ValueError("latent_ode.event_rate=true needs net=latent_ode")
    for name in ("epochs", "batch_size"):
        if cfg[name] < 1:
            raise ValueError(f"{name} must be >= 1, got {cfg[name]}")
    low, high = train_prefix(cfg)
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(
            f"{cfg.net}.train_prefix must be [low, high] with 0 < low <= high <= 1, got {[low, high]}"
        )
    bptt_of(cfg)  # validates the strategy


def validate_config(cfg: DictConfig) -> None:
    """Every setting's type and range, the solver by the library's checks, then :func:`check_config`;
    raises ConfigError. Runs before Hydra makes the run folder (``hydra.callbacks.validate``)."""
    check = Checker(cfg)
    check_common(check)
    check.choice("net", MODELS)
    sizes = ("num_observed", "epochs", "batch_size", "data.num_spirals", "data.num_dense", "data.window",
             "data.extrapolate", "latent_ode.latent_dim", "latent_ode.encoder_hidden", "rnn.bptt.tau",
             "latent_ode.dynamics_hidden", "latent_ode.decoder_hidden", "rnn.hidden")  # fmt: skip
    for key in sizes:
        check.integer(key, 1)
    check.choice("rnn.bptt.strategy", STRATEGIES)
    check.choice("rnn.cell", sorted(CELLS))
    check.choice("latent_ode.encoder_cell", sorted(CELLS))
    check.integer("data.seed", 0, 2**32 - 1)
    check.integer("num_threads", 1, optional=True)
    check.number("data.test_fraction", 0, 1, open_low=True, open_high=True)
    for key in ("data.turns", "data.noise_std", "data.radius_growth"):
        check.number(key, 0)
    check.number("data.radius_start", 0, open_low=True)
    check.number("optimizer.lr", 0, open_low=True)
    check.number("optimizer.max_grad_norm", 0, open_low=True, optional=True)
    check.number("latent_ode.likelihood_std", 0, open_low=True, optional=True)
    check.number("rnn.bptt.keep_probability", 0, 1, open_low=True)
    check.fractions("schedule.milestones")
    check.number("schedule.gamma", 0, open_low=True)
    for key in ("latent_ode.adjoint", "latent_ode.event_rate"):
        check.boolean(key)
    if cfg.net == "latent_ode":
        check.solver("latent_ode.solver")
    try:
        check_config(cfg)
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
    train, test = load_series(cfg, device)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    n_train, batch_size = len(train.spirals), min(cfg.batch_size, len(train.spirals))
    batches_per_epoch = n_train // batch_size

    def batches(epoch: int):
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(n_train, generator=generator).to(device)
        return (order[i * batch_size : (i + 1) * batch_size] for i in range(batches_per_epoch))

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {f"test_{k}": v for k, v in evaluate_on(model, test).items()}

    metadata = {
        "experiment": "latent_ode", "net": cfg.net, "num_observed": cfg.num_observed,
        "parameters": count_parameters(model), "profile": cfg.profile.name,
        "bptt": OmegaConf.to_container(cfg.rnn.bptt) if cfg.net == "rnn" else None,
        "config": OmegaConf.to_container(cfg, resolve=True), **run_metadata(device, cfg.seed),
    }  # fmt: skip
    trainer = Trainer(
        model, optimizer, batches, make_loss(cfg, train), evaluate,
        TrainerConfig(epochs=cfg.epochs, batches_per_epoch=batches_per_epoch, progress=cfg.progress,
                      tensorboard=cfg.tensorboard, hparams=hparams(cfg),
                      max_grad_norm=cfg.optimizer.max_grad_norm, precision=cfg.precision),
        run_dir=run_dir, device=device, metadata=metadata,
        lr_at=StepSchedule(cfg.optimizer.lr, tuple(cfg.schedule.milestones), cfg.schedule.gamma),
    )  # fmt: skip
    if trainer.resumed_from is not None:
        print(f"resuming {run_dir} after epoch {trainer.resumed_from} of {cfg.epochs}", flush=True)
    result = trainer.fit()
    final = result["final"]
    print(f"{cfg.net} n={cfg.num_observed}: extrapolation RMSE {final['test_rmse_extrapolation']:.4f} "
          f"after {cfg.epochs} epochs -> {run_dir}", flush=True)  # fmt: skip
    return result


@hydra.main(version_base="1.3", config_path="../configs", config_name="latent_ode")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final extrapolation RMSE (what a sweeper would minimise)."""
    from hydra.core.hydra_config import HydraConfig

    return run(cfg, HydraConfig.get().runtime.output_dir)["final"]["test_rmse_extrapolation"]


if __name__ == "__main__":
    main()
