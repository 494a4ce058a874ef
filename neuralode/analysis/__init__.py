"""Measurements of trained models: how error, time and NFE depend on the solver tolerance (Figure 3).

The figure itself is drawn by scripts/make_figure3.py from the measured points.
"""

from .tolerance_sweep import SweepPoint as SweepPoint
from .tolerance_sweep import adjoint_variants as adjoint_variants
from .tolerance_sweep import at_tolerance as at_tolerance
from .tolerance_sweep import fit_ratio as fit_ratio
from .tolerance_sweep import measure_tolerance as measure_tolerance
from .tolerance_sweep import reference_outputs as reference_outputs
from .training_log import read_training_nfe as read_training_nfe
from .training_log import read_training_series as read_training_series
from .training_log import running_mean as running_mean
