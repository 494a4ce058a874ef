"""Normalizing flows for Section 4 of the paper: planar flows, continuous normalizing flows, 2-D targets."""

from .base import standard_normal_logprob
from .cnf import CNF, TRACE_METHODS, CNFDynamics
from .densities import DATASETS, ENERGIES, energy, log_normalizer, sample_dataset
from .fields import ConcatMLPField, HyperPlanarField
from .planar import PlanarFlow, PlanarLayer
from .trace import NOISE_KINDS, exact_trace, hutchinson_trace, sample_noise

__all__ = [
    "CNF",
    "DATASETS",
    "ENERGIES",
    "NOISE_KINDS",
    "TRACE_METHODS",
    "CNFDynamics",
    "ConcatMLPField",
    "HyperPlanarField",
    "PlanarFlow",
    "PlanarLayer",
    "energy",
    "exact_trace",
    "hutchinson_trace",
    "log_normalizer",
    "sample_dataset",
    "sample_noise",
    "standard_normal_logprob",
]
