"""Per-sample solving: each sample of a batch with its own steps, output times, tolerances and outcome
(``per_sample=True`` on the front doors)."""

from .config import PerSample, per_sample_config
from .outcome import PerSampleSolveError
from .solve import solve_per_sample

__all__ = ["PerSample", "PerSampleSolveError", "per_sample_config", "solve_per_sample"]
