"""Run logging: TensorBoard scalars and hparams, plus an epoch table as CSV that survives resumes."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of dicts as CSV (columns in first-seen order), written atomically."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


class RunLogger:
    """Scalars to TensorBoard (``<run_dir>/tb``) when it is installed; the epoch table to ``epochs.csv``.

    ``start_step`` purges TensorBoard events at or after that step, so a resumed run does not show the
    interrupted epoch twice.
    """

    def __init__(
        self, run_dir: str | os.PathLike[str], start_step: int = 0, tensorboard: bool = True
    ) -> None:
        self.run_dir = Path(run_dir)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is a pinned dependency
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step or None)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Log each ``name: value`` at ``step``."""
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def epochs(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Rewrite ``epochs.csv`` from the whole history (atomically, so it always matches the checkpoint)."""
        write_csv(self.run_dir / "epochs.csv", history)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """The run's hyperparameters beside its final metrics, for TensorBoard's HPARAMS tab."""
        if self.writer is not None:
            clean = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in hparams.items()}
            self.writer.add_hparams(clean, {f"hparam/{k}": v for k, v in metrics.items()}, run_name=".")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
