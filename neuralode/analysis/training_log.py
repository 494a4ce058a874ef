"""What a training run logged, read back for the figures: per epoch (``epochs.csv``) and per iteration
(TensorBoard), e.g. the forward NFE of panel (d) of Figure 3."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path


def read_training_series(run: str | os.PathLike[str], column: str, tag: str) -> dict[str, list[float]]:
    """One logged quantity of a run: ``epoch``/``epoch_value`` from the ``column`` of ``epochs.csv`` and
    ``iteration``/``iteration_value`` from the TensorBoard scalar ``tag``; a part that was not logged
    (no file, no such column or tag) is empty."""
    run = Path(run)
    series: dict[str, list[float]] = {"epoch": [], "epoch_value": [], "iteration": [], "iteration_value": []}
    epochs_csv = run / "epochs.csv"
    if epochs_csv.exists():
        with epochs_csv.open() as handle:
            for row in csv.DictReader(handle):
                if row.get(column) not in (None, ""):
                    series["epoch"].append(float(row["epoch"]))
                    series["epoch_value"].append(float(row[column]))
    if (run / "tb").is_dir():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
        events.Reload()
        if tag in events.Tags().get("scalars", []):
            for event in events.Scalars(tag):
                series["iteration"].append(float(event.step))
                series["iteration_value"].append(float(event.value))
    return series


def read_training_nfe(mnist_run: str | os.PathLike[str]) -> dict[str, list[float]]:
    """Forward NFE logged during the MNIST run: per epoch (``epochs.csv``) and per iteration (TensorBoard)."""
    series = read_training_series(mnist_run, "train_nfe_forward", "nfe/forward")
    return {
        "epoch": series["epoch"], "epoch_nfe": series["epoch_value"],
        "iteration": series["iteration"], "iteration_nfe": series["iteration_value"],
    }  # fmt: skip


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """The mean of each value and the ``window - 1`` before it (fewer at the start): a per-iteration
    series smoothed for plotting."""
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value - (values[index - window] if index >= window else 0.0)
        out.append(total / min(index + 1, window))
    return out
