"""Per-sample solving: each sample of a batch with its own steps, output times, tolerances and outcome
(``per_sample=True`` on the front doors): explicit Runge-Kutta methods, adaptive (with the options
``jump_t``/``step_t`` stopping each sample inside its own span) or on each sample's fixed grid; direct
backprop, the adjoint, checkpointing and events."""

from .config import PerSample, per_sample_config
from .outcome import PerSampleSolveError
from .solve import solve_per_sample

__all__ = ["PerSample", "PerSampleSolveError", "per_sample_config", "solve_per_sample"]
