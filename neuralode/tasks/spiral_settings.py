"""Table 2's task as a run's config describes it (``configs/latent_ode.yaml``, resolved, as a mapping).

The series, the net, the loss and the cross-key rules, read from one settings mapping, so that the
experiment and ``scripts/plot_latent_ode.py`` (which reloads a finished run's config) build the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..data.spirals import SpiralSpec
from ..models.bptt import BPTT
from ..models.latent_ode import LatentODE
from ..models.rnn_baseline import GapRNN
from ..solver_config import SolverConfig
from .spirals import SeriesSet, load_series, make_loss

NETS = ("latent_ode", "rnn")
SPEC_KEYS = ("num_spirals", "num_dense", "turns", "window", "extrapolate", "radius_start", "radius_growth",
             "noise_std")  # fmt: skip


def series_from_settings(settings: Mapping[str, Any], device: torch.device) -> tuple[SeriesSet, SeriesSet]:
    """(train, test) series as ``data``, ``num_observed`` and ``latent_ode.event_rate`` say."""
    data = settings["data"]
    spec = SpiralSpec(**{key: data[key] for key in SPEC_KEYS})
    events = None
    if settings["latent_ode"]["event_rate"]:
        events = (data["events"]["peak_rate"], data["events"]["sharpness"])
    return load_series(spec, settings["num_observed"], data["seed"], data["test_fraction"], device, events)


def model_from_settings(settings: Mapping[str, Any]) -> nn.Module:
    """The latent ODE (its sizes under ``latent_ode``, its solver the ``solver`` group with the
    ``regularization`` group, if any) or the RNN baseline (``rnn``), as ``net`` says."""
    if settings["net"] == "latent_ode":
        m = settings["latent_ode"]
        solver = {**settings["solver"], "regularization": settings.get("regularization")}
        return LatentODE(
            m["latent_dim"], 2, m["encoder_hidden"], m["dynamics_hidden"], m["decoder_hidden"],
            solver=SolverConfig.from_dict(solver), event_rate=m["event_rate"],
            encoder_cell=m["encoder_cell"], decoder_activation=m["decoder_activation"],
        )  # fmt: skip
    if settings["net"] == "rnn":
        return GapRNN(2, settings["rnn"]["hidden"], settings["rnn"]["cell"])
    raise ValueError(f"net must be one of {NETS}, got {settings['net']!r}")


def bptt_of(settings: Mapping[str, Any]) -> BPTT:
    """The RNN baseline's BPTT strategy (``rnn.bptt``)."""
    bptt = settings["rnn"]["bptt"]
    return BPTT(bptt["strategy"], bptt["tau"], bptt["keep_probability"])


def train_prefix_of(settings: Mapping[str, Any]) -> tuple[float, float]:
    """The net's range of the visible share of the window during training (``<net>.train_prefix``)."""
    low, high = settings[settings["net"]]["train_prefix"]
    return float(low), float(high)


def likelihood_std_of(settings: Mapping[str, Any]) -> float:
    """The observation model's noise std (``latent_ode.likelihood_std``; null: the data's)."""
    std = settings["latent_ode"]["likelihood_std"]
    return float(settings["data"]["noise_std"] if std is None else std)


def loss_from_settings(
    settings: Mapping[str, Any], train: SeriesSet
) -> Callable[[nn.Module, Tensor], tuple[Tensor, dict[str, float]]]:
    """:func:`~neuralode.tasks.spirals.make_loss` with the settings' noise std, prefix and BPTT."""
    return make_loss(train, likelihood_std_of(settings), train_prefix_of(settings), bptt_of(settings))


def check_settings(settings: Mapping[str, Any]) -> None:
    """The rules across keys, before any data or training; a ValueError whose message starts with the
    key and says the fix."""
    net, window, observed = settings["net"], settings["data"]["window"], settings["num_observed"]
    if net not in NETS:
        raise ValueError(f"net must be one of {NETS}, got {net!r} (e.g. net=latent_ode)")
    if not 2 <= observed <= window:
        raise ValueError(f"num_observed must be in [2, data.window={window}], got {observed}")
    if settings["latent_ode"]["event_rate"] and net != "latent_ode":
        raise ValueError("latent_ode.event_rate=true needs net=latent_ode")
    low, high = train_prefix_of(settings)
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(
            f"{net}.train_prefix must be [low, high] with 0 < low <= high <= 1, got {[low, high]}"
        )
    bptt_of(settings)  # validates the strategy
