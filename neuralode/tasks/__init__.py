"""The experiments' tasks as library code: the data, losses and scores entry points and scripts share."""

from .spiral_settings import NETS, model_from_settings, series_from_settings
from .spirals import SeriesSet, evaluate_on, load_series, make_loss, predict, rmse

__all__ = [
    "NETS",
    "SeriesSet",
    "evaluate_on",
    "load_series",
    "make_loss",
    "model_from_settings",
    "predict",
    "rmse",
    "series_from_settings",
]
