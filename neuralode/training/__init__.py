"""The shared training machinery of the experiments: one loop, atomic checkpoints, logging, provenance."""

from .checkpoint import (
    CheckpointCorruptError,
    CheckpointWriteError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from .loop import Trainer, TrainerConfig
from .lr_schedule import StepSchedule
from .monitor import current_rss_mb, ode_nfe, peak_memory_mb, peak_rss_mb, reset_peak_rss
from .reproducibility import resolve_device, run_metadata, seed_everything
from .run_logger import RunLogger, write_csv

__all__ = [
    "CheckpointCorruptError",
    "CheckpointWriteError",
    "RunLogger",
    "StepSchedule",
    "Trainer",
    "TrainerConfig",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "current_rss_mb",
    "load_checkpoint",
    "ode_nfe",
    "peak_memory_mb",
    "peak_rss_mb",
    "remove_stale_temp_files",
    "reset_peak_rss",
    "resolve_device",
    "run_metadata",
    "save_checkpoint",
    "seed_everything",
    "write_csv",
]
