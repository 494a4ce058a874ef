"""Hydra entry points, one per experiment of the paper: ``python -m experiments.<name>``."""
