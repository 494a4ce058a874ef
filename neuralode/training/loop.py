"""The one training loop every experiment uses: epochs of SGD steps, evaluation, logging, checkpoints, resume.

The loop knows nothing about the task: the experiment passes a batch source (``batches(epoch)`` must give
the same batches for the same epoch, so a resumed run repeats exactly what an uninterrupted one does),
a loss and an evaluation function. A checkpoint is written atomically after every epoch; constructing a
``Trainer`` on a run directory that holds one resumes from it.

Under ``torchrun`` (a process group joined with :func:`neuralode.training.distributed.init_distributed`)
the model is wrapped in ``DistributedDataParallel`` and each rank's batch source must give its own shard
of every global batch (``ImageBatches(rank=..., world_size=...)``). DDP averages the gradients, so with
equal shards and a mean loss every step equals the single-process one. The loss and the extra scalars
are averaged over ranks before logging; NFE are logged as the mean over ranks plus ``*_max``; seconds per
iteration, an epoch's wall and CPU time and peak memory are the maximum over ranks. Evaluation runs on
rank 0 only, on the unwrapped model, and its metrics are broadcast so every rank keeps the same history.
Only rank 0 writes files (TensorBoard, ``epochs.csv``, ``checkpoint.pt``, ``result.json``) and prints;
every rank resumes from the checkpoint, which holds the unwrapped model's state, so a run may resume with
another number of processes.
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

from . import distributed as dist
from .checkpoint import atomic_write_json, load_checkpoint, remove_stale_temp_files, save_checkpoint
from .monitor import ode_nfe, peak_memory_mb
from .reproducibility import rng_state, set_rng_state
from .run_logger import RunLogger

Batch = Any
LossFn = Callable[[nn.Module, Batch], tuple[Tensor, Mapping[str, float]]]
"""``loss_fn(model, batch) -> (loss, extra scalars such as the batch error)``."""
EvalFn = Callable[[nn.Module], Mapping[str, float]]
"""``evaluate(model) -> metrics`` (for example ``{"test_error": ...}``), run after every epoch."""

CHECKPOINT = "checkpoint.pt"
PRECISIONS = ("fp32", "bf16")
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
    precision: str = "fp32"  # "bf16": forward passes under torch.autocast (see neuralode._setup.precision)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {self.batches_per_epoch}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if self.precision == "fp16":
            raise ValueError(
                "precision='fp16' is refused: float16 needs loss scaling (a GradScaler) to keep small "
                "gradients from flushing to zero, which this training loop does not do. Use "
                "precision='bf16' (float32's exponent range, no scaling needed) or 'fp32'"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


class Trainer:
    """Trains ``model`` in ``run_dir``; see the module docstring.

    Per iteration it logs train loss, lr, forward/backward NFE of the model's ODE blocks, seconds per
    iteration and peak memory; per epoch the evaluation metrics and epoch means (``epochs.csv``), and the
    epoch's training wall time ``wall_s`` and process CPU time ``cpu_s`` (its iterations, batch preparation
    included, evaluation excluded; that is ``eval_wall_s``).
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
        if dist.env_world_size() > 1 and not dist.is_distributed():
            raise RuntimeError(
                "started by torchrun (WORLD_SIZE > 1) but no process group: call "
                "neuralode.training.distributed.init_distributed(device) first and shard the batches, or "
                "every process would train alone and write the same files"
            )
        self._resume()
        self.world_size = dist.world_size()
        self.main = dist.is_main()
        self.ddp_model: nn.Module = self.model
        if dist.is_distributed():
            ids = [device.index] if device.type == "cuda" and device.index is not None else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    @property
    def steps_done(self) -> int:
        return self.epoch * self.config.batches_per_epoch

    def _resume(self) -> None:
        if dist.env_rank() == 0:  # the run's only writer: what a killed write left behind is stale
            remove_stale_temp_files(self.run_dir / CHECKPOINT)
        # Load on the CPU: RNG states must stay there; load_state_dict moves the rest to the model. A damaged
        # file raises CheckpointCorruptError (naming it and how to start over) rather than resume wrongly.
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
        """What a checkpoint must match to be resumed: the hparams, the length of the run and (when not
        the default fp32, so older checkpoints still resume) the precision."""
        cfg = self.config
        precision = {} if cfg.precision == "fp32" else {"precision": cfg.precision}
        return {**cfg.hparams, "epochs": cfg.epochs, "batches_per_epoch": cfg.batches_per_epoch, **precision}

    def _autocast(self) -> Any:
        """The forward passes' precision: bfloat16 autocast for "bf16" (the ODE solvers keep their own
        arithmetic in float32 under it), nothing for "fp32"."""
        return torch.autocast(
            self.device.type if self.device.type == "cuda" else "cpu",
            dtype=torch.bfloat16,
            enabled=self.config.precision == "bf16",
        )

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
        logger = _logger(self.run_dir, self.steps_done, self.config.tensorboard, self.main)
        try:
            while self.epoch < self.config.epochs:
                self._train_epoch(logger)
            result = self._result()
            if self.main:
                atomic_write_json(self.run_dir / RESULT, result)
            logger.hparams(self.config.hparams, {k: v for k, v in result["final"].items() if _is_number(v)})
        finally:
            logger.close()
        dist.barrier()  # result.json exists before any rank returns
        return result

    def _train_epoch(self, logger: RunLogger | _NoLogger) -> None:
        cfg = self.config
        self.ddp_model.train()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        sums = {"loss": 0.0, "nfe_forward": 0.0, "nfe_backward": 0.0, "grad_norm": 0.0, "seconds": 0.0}
        if self.world_size > 1:
            sums.update(nfe_forward_max=0.0, nfe_backward_max=0.0)
        extra_sums: dict[str, float] = {}
        count = 0
        bar = _progress(cfg, self.epoch) if self.main else None
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        for index, batch in enumerate(self.batches(self.epoch)):
            if index >= cfg.batches_per_epoch:
                break
            step = self.steps_done + index
            lr = self._set_lr((self.epoch + index / cfg.batches_per_epoch) / cfg.epochs)
            start = time.perf_counter()
            with self._autocast():
                loss, extra = self.loss_fn(self.ddp_model, batch)
            nfe_forward, _ = ode_nfe(self.model)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # under DDP this also averages the gradients over ranks
            _, nfe_backward = ode_nfe(self.model)
            grad_norm = nn.utils.clip_grad_norm_(
                self.model.parameters(), math.inf if cfg.max_grad_norm is None else cfg.max_grad_norm
            )
            self.optimizer.step()
            loss_value = loss.item()  # synchronises, so the time below is the step's
            seconds = time.perf_counter() - start
            values = {"loss": loss_value, "nfe_forward": nfe_forward, "nfe_backward": nfe_backward,
                      "grad_norm": grad_norm.item(), "seconds": seconds}  # fmt: skip
            extra = {k: float(v) for k, v in extra.items()}
            if self.world_size > 1:  # every rank takes part before any may stop, or the others would hang
                values, extra = self._reduce_step(values, extra)
            loss_value, nfe_forward, nfe_backward = (
                values[k] for k in ("loss", "nfe_forward", "nfe_backward")
            )
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"training loss is {loss_value} at epoch {self.epoch}, iteration {index}"
                )
            for key in sums:
                sums[key] += values[key]
            for key, value in extra.items():
                extra_sums[key] = extra_sums.get(key, 0.0) + float(value)
            count += 1
            logger.scalars(
                {"train/loss": loss_value, "train/lr": lr, "nfe/forward": nfe_forward,
                 "nfe/backward": nfe_backward, "time/seconds_per_iteration": values["seconds"],
                 "memory/peak_mb": values.get("peak_mb", peak_memory_mb(self.device)),
                 "train/grad_norm": values["grad_norm"],
                 **{f"nfe/{k[4:]}": v for k, v in values.items() if k.endswith("_max")},
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
        # The epoch's training time (its iterations and their batches); CPU time is this process's, all
        # threads together, so on a multi-threaded CPU it may exceed the wall time.
        times = {"wall": time.perf_counter() - wall_start, "cpu": time.process_time() - cpu_start}
        train_peak_memory = peak_memory_mb(self.device)  # before evaluation, which may use larger batches
        if self.world_size > 1:  # the slowest rank's times
            reduced = dist.reduce_max({"peak": train_peak_memory, **times})
            train_peak_memory, times = reduced["peak"], {k: reduced[k] for k in times}
        self.ddp_model.eval()
        metrics: dict[str, Any] | None = None
        eval_start = time.perf_counter()
        if self.main:  # the unwrapped model: DDP's forward would wait for the other ranks
            with torch.no_grad(), self._autocast():
                metrics = dict(self.evaluate(self.model))
        metrics = dist.broadcast_object(metrics)
        eval_wall = time.perf_counter() - eval_start
        row = {
            "epoch": self.epoch + 1,
            **{f"train_{k}": v / count for k, v in sums.items() if k != "seconds"},
            **{f"train_{k}": v / count for k, v in extra_sums.items()},
            "seconds_per_iteration": sums["seconds"] / count,
            "wall_s": times["wall"],
            "cpu_s": times["cpu"],
            "eval_wall_s": eval_wall,
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
        if self.main:
            self._checkpoint()
        if self.config.progress and self.main:
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in row.items())
            print(f"epoch {self.epoch}/{cfg.epochs}: {shown}", flush=True)

    def _reduce_step(
        self, values: dict[str, float], extra: dict[str, float]
    ) -> tuple[dict[str, float], dict[str, float]]:
        """One step's scalars over ranks: loss and extras averaged, NFE mean and max, time and memory max."""
        means = dist.reduce_metrics({"loss": values["loss"], **{f"extra/{k}": v for k, v in extra.items()}})
        nfe = dist.reduce_nfe(values["nfe_forward"], values["nfe_backward"])
        maxima = dist.reduce_max({"seconds": values["seconds"], "peak_mb": peak_memory_mb(self.device)})
        reduced = {**values, "loss": means["loss"], **nfe, **maxima}  # grad_norm: the same on every rank
        return reduced, {k[len("extra/") :]: v for k, v in means.items() if k.startswith("extra/")}

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
            # the whole run's training time (a resumed run's epochs each count once; older checkpoints'
            # rows without the columns count 0, so the sums are None unless every epoch has them)
            "train_wall_s": _total(self.history, "wall_s"),
            "train_cpu_s": _total(self.history, "cpu_s"),
            "hparams": dict(self.config.hparams),
            "resumed_from_epoch": self.resumed_from,
            **self.metadata,
        }


class _NoLogger:
    """What ranks other than 0 log to: nothing."""

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Discard."""

    def epochs(self, history: Any) -> None:
        """Discard."""

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Discard."""

    def close(self) -> None:
        """Nothing to close."""


def _logger(run_dir: Path, start_step: int, tensorboard: bool, main: bool) -> RunLogger | _NoLogger:
    """A :class:`RunLogger` on rank 0, a :class:`_NoLogger` elsewhere."""
    return RunLogger(run_dir, start_step=start_step, tensorboard=tensorboard) if main else _NoLogger()


def _progress(config: TrainerConfig, epoch: int) -> Any:
    if not config.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.batches_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)


def _total(history: list[dict[str, Any]], key: str) -> float | None:
    """The sum of ``key`` over the epochs; None when some epoch lacks it (a checkpoint from before it)."""
    if not all(key in row for row in history):
        return None
    return sum(row[key] for row in history)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
