"""Learning-rate schedules as functions of the (fractional) epoch, applied every iteration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StepSchedule:
    """``lr * gamma ** k`` where k counts the milestones passed; milestones are fractions of the run.

    The paper's reference setup (lr x0.1 at epochs 60, 100, 140 of 160) is ``milestones=(0.375, 0.625,
    0.875)``; as fractions, a schedule applies unchanged to runs of any length.
    """

    lr: float
    milestones: Sequence[float] = (0.375, 0.625, 0.875)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if any(not 0 <= m <= 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(
                f"milestones must be increasing fractions of the run in [0, 1], got {self.milestones}"
            )

    def __call__(self, progress: float) -> float:
        """Learning rate at ``progress`` = fraction of the run done, in [0, 1]."""
        passed = sum(progress >= m for m in self.milestones)
        return self.lr * self.gamma**passed
