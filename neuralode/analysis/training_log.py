"""The forward NFE a training run logged (panel (d) of Figure 3): per epoch and per iteration."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def read_training_nfe(mnist_run: str | os.PathLike[str]) -> dict[str, list[float]]:
    """Forward NFE logged during the MNIST run: per epoch (``epochs.csv``) and per iteration (TensorBoard)."""
    run = Path(mnist_run)
    series: dict[str, list[float]] = {"epoch": [], "epoch_nfe": [], "iteration": [], "iteration_nfe": []}
    epochs_csv = run / "epochs.csv"
    if epochs_csv.exists():
        with epochs_csv.open() as handle:
            for row in csv.DictReader(handle):
                series["epoch"].append(float(row["epoch"]))
                series["epoch_nfe"].append(float(row["train_nfe_forward"]))
    if (run / "tb").is_dir():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
        events.Reload()
        if "nfe/forward" in events.Tags().get("scalars", []):
            for event in events.Scalars("nfe/forward"):
                series["iteration"].append(float(event.step))
                series["iteration_nfe"].append(float(event.value))
    return series
