"""Hydra entry points, one per experiment of the paper: ``python -m experiments.<name>``."""

from omegaconf import OmegaConf

# Run folders are named from the overrides (configs use ${run_tag:${hydra.job.override_dirname}}):
# the same command finds, and resumes, the same run; no overrides is "default".
OmegaConf.register_new_resolver("run_tag", lambda overrides: overrides or "default", replace=True)
