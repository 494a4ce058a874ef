"""Measurements of trained models: how error, time and NFE depend on the solver tolerance (Figure 3)."""

from .tolerance_sweep import SweepPoint as SweepPoint
from .tolerance_sweep import fit_ratio as fit_ratio
from .tolerance_sweep import measure_tolerance as measure_tolerance
from .tolerance_sweep import reference_outputs as reference_outputs
