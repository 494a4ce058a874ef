"""The one training loop every experiment uses: epochs of SGD steps, evaluation, logging, checkpoints, resume.

The loop knows nothing about the task: the experiment passes a batch source (``batches(epoch)`` must give
the same batches for the same epoch, so a resumed run repeats exactly what an uninterrupted one does),
a loss and an evaluation function. A checkpoint is written atomically after every epoch; constructing a
``Trainer`` on a run directory that holds one resumes from it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from .monitor import ode_nfe, peak_memory_mb
from .reproducibility import rng_state, set_rng_state
from .run_logger import RunLogger

Batch = Any
LossFn = Callable[[nn.Module, Batch], tuple[Tensor, Mapping[str, float]]]
"""``loss_fn(model, batch) -> (loss, extra scalars such as the batch error)``."""
EvalFn = Callable[[nn.Module], Mapping[str, float]]
"""``evaluate(model) -> metrics`` (for example ``{"test_error": ...}``), run after every epoch."""

CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"


@dataclass
class TrainerConfig:
    """How long and how verbosely to train."""

    epochs: int
    batches_per_epoch: int
    progress: bool = True
    tensorboard: bool = True
    hparams: Mapping[str, Any] = field(default_factory=dict)
    max_grad_norm: float | None = None  # clip the gradient's global norm to this before each step

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {self.batches_per_epoch}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")


class Trainer:
    """Trains ``model`` in ``run_dir``; see the module docstring.

    Per iteration it logs train loss, lr, forward/backward NFE of the model's ODE blocks, seconds per
    iteration and peak memory; per epoch the evaluation metrics and epoch means (``epochs.csv``).
    ``lr_at(progress)`` gives the learning rate at a fraction of the run, set before every step.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: Callable[[int], Iterable[Batch]],
        loss_fn: LossFn,
        evaluate: EvalFn,
        config: TrainerConfig,
        run_dir: str | Path,
        device: torch.device,
        lr_at: Callable[[float], float] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.batches, self.loss_fn, self.evaluate = batches, loss_fn, evaluate
        self.config, self.run_dir, self.device = config, Path(run_dir), device
        self.lr_at = lr_at
        self.metadata = dict(metadata or {})
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.resumed_from: int | None = None
        self._resume()

    @property
    def steps_done(self) -> int:
        return self.epoch * self.config.batches_per_epoch

    def _resume(self) -> None:
        # Load on the CPU: RNG states must stay there; load_state_dict moves the rest to the model.
        state = load_checkpoint(self.run_dir / CHECKPOINT, map_location="cpu")
        if state is None:
            return
        if state["settings"] != self._settings():
            raise ValueError(
                f"{self.run_dir / CHECKPOINT} was written by a run with different settings; use another run "
                f"directory or delete it. Checkpoint: {state['settings']}; now: {self._settings()}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        set_rng_state(state["rng"])
        self.resumed_from = self.epoch

    def _settings(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: the hparams and the length of the run."""
        cfg = self.config
        return {**cfg.hparams, "epochs": cfg.epochs, "batches_per_epoch": cfg.batches_per_epoch}

    def _checkpoint(self) -> None:
        save_checkpoint(
            self.run_dir / CHECKPOINT,
            {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "history": self.history, "rng": rng_state(),
                "settings": self._settings(),
            },
        )  # fmt: skip

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns (and writes to ``result.json``) the final-epoch metrics.

        A finished run is not touched: its ``result.json`` (with the provenance of when it was trained) is
        returned as it is.
        """
        if self.epoch >= self.config.epochs and (self.run_dir / RESULT).exists():
            return json.loads((self.run_dir / RESULT).read_text())
        logger = RunLogger(self.run_dir, start_step=self.steps_done, tensorboard=self.config.tensorboard)
        try:
            while self.epoch < self.config.epochs:
                self._train_epoch(logger)
            result = self._result()
            atomic_write_json(self.run_dir / RESULT, result)
            logger.hparams(self.config.hparams, {k: v for k, v in result["final"].items() if _is_number(v)})
        finally:
            logger.close()
        return result

    def _train_epoch(self, logger: RunLogger) -> None:
        cfg = self.config
        self.model.train()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        sums = {"loss": 0.0, "nfe_forward": 0.0, "nfe_backward": 0.0, "grad_norm": 0.0, "seconds": 0.0}
        extra_sums: dict[str, float] = {}
        count = 0
        bar = _progress(cfg, self.epoch)
        for index, batch in enumerate(self.batches(self.epoch)):
            if index >= cfg.batches_per_epoch:
                break
            step = self.steps_done + index
            lr = self._set_lr((self.epoch + index / cfg.batches_per_epoch) / cfg.epochs)
            start = time.perf_counter()
            loss, extra = self.loss_fn(self.model, batch)
            nfe_forward, _ = ode_nfe(self.model)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            _, nfe_backward = ode_nfe(self.model)
            grad_norm = nn.utils.clip_grad_norm_(
                self.model.parameters(), math.inf if cfg.max_grad_norm is None else cfg.max_grad_norm
            )
            self.optimizer.step()
            loss_value = loss.item()  # synchronises, so the time below is the step's
            seconds = time.perf_counter() - start
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"training loss is {loss_value} at epoch {self.epoch}, iteration {index}"
                )
            values = {"loss": loss_value, "nfe_forward": nfe_forward, "nfe_backward": nfe_backward,
                      "grad_norm": grad_norm.item(), "seconds": seconds}  # fmt: skip
            for key, value in values.items():
                sums[key] += value
            for key, value in extra.items():
                extra_sums[key] = extra_sums.get(key, 0.0) + float(value)
            count += 1
            logger.scalars(
                {"train/loss": loss_value, "train/lr": lr, "nfe/forward": nfe_forward,
                 "nfe/backward": nfe_backward, "time/seconds_per_iteration": seconds,
                 "memory/peak_mb": peak_memory_mb(self.device), "train/grad_norm": grad_norm.item(),
                 **{f"train/{k}": float(v) for k, v in extra.items()}},
                step,
            )  # fmt: skip
            if bar is not None:
                bar.set_postfix(loss=f"{loss_value:.3f}", nfe=f"{nfe_forward}/{nfe_backward}", refresh=False)
                bar.update()
        if bar is not None:
            bar.close()
        if count == 0:
            raise ValueError(f"the batch source gave no batches for epoch {self.epoch}")
        train_peak_memory = peak_memory_mb(self.device)  # before evaluation, which may use larger batches
        self.model.eval()
        with torch.no_grad():
            metrics = dict(self.evaluate(self.model))
        row = {
            "epoch": self.epoch + 1,
            **{f"train_{k}": v / count for k, v in sums.items() if k != "seconds"},
            **{f"train_{k}": v / count for k, v in extra_sums.items()},
            "seconds_per_iteration": sums["seconds"] / count,
            "lr_end": self.optimizer.param_groups[0]["lr"],
            "peak_memory_mb": train_peak_memory,
            **metrics,
        }
        self.history.append(row)
        self.epoch += 1
        # At the epoch's last iteration: a resume purges events from its first new step on, not these.
        epoch_step = self.steps_done - 1
        logger.scalars({f"epoch/{k}": float(v) for k, v in row.items() if _is_number(v)}, epoch_step)
        logger.epochs(self.history)
        self._checkpoint()
        if self.config.progress:
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in row.items())
            print(f"epoch {self.epoch}/{cfg.epochs}: {shown}", flush=True)

    def _set_lr(self, progress: float) -> float:
        if self.lr_at is None:
            return self.optimizer.param_groups[0]["lr"]
        lr = self.lr_at(progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _result(self) -> dict[str, Any]:
        final = dict(self.history[-1])
        seconds = [row["seconds_per_iteration"] for row in self.history]
        return {
            "final": final,
            "history": self.history,
            "epochs": self.config.epochs,
            "batches_per_epoch": self.config.batches_per_epoch,
            "mean_seconds_per_iteration": sum(seconds) / len(seconds),
            "hparams": dict(self.config.hparams),
            "resumed_from_epoch": self.resumed_from,
            **self.metadata,
        }


def _progress(config: TrainerConfig, epoch: int) -> Any:
    if not config.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.batches_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
