"""Table 2's task: forecast held-out spirals from irregular observations (latent ODE vs RNN baseline).

The series set (spirals, observed positions, optional Poisson events), the training loss with its
random visible prefix, the prediction past the observed window and its RMSE: what the latent ODE
experiment trains and scores, and what ``scripts/plot_latent_ode.py`` draws from a finished run.
:mod:`neuralode.tasks.spiral_settings` builds them from a run's config.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data.spirals import (
    Spirals,
    SpiralSpec,
    event_intensity,
    make_spirals,
    observation_index,
    sample_events,
    split,
)
from ..models.bptt import BPTT
from ..models.latent_ode import LatentODE


@dataclass(frozen=True)
class SeriesSet:
    """Spirals with the observed positions of each, and event counts when the Poisson head is on."""

    spirals: Spirals
    index: Tensor  # (n, num_observed) positions in the window
    events: Tensor | None  # (n, window) counts
    intensity: Tensor | None  # (n, window + extrapolate) true intensity

    def observed(self, rows: Tensor | slice = slice(None)) -> tuple[Tensor, Tensor]:
        """(x, index) of the observations of ``rows``."""
        index = self.index[rows]
        noisy = self.spirals.noisy[rows]
        return noisy.gather(1, index.unsqueeze(-1).expand(-1, -1, noisy.shape[-1])), index


def load_series(
    spec: SpiralSpec,
    num_observed: int,
    seed: int,
    test_fraction: float,
    device: torch.device,
    events: tuple[float, float] | None = None,
) -> tuple[SeriesSet, SeriesSet]:
    """(train, test) series generated from ``seed``; the test spirals are never trained on. ``events``:
    (peak rate, sharpness) of the synthetic Poisson events (none by default)."""
    spirals = make_spirals(spec, seed)
    index = observation_index(len(spirals), spec.window, num_observed, seed + 1)
    counts = intensity = None
    if events is not None:
        intensity = event_intensity(spirals.truth, *events)
        counts = sample_events(intensity[:, : spec.window], spirals.times[: spec.window], seed + 2)
    train, test = split(spirals, test_fraction)
    n_train = len(train)

    def series(part: Spirals, rows: slice) -> SeriesSet:
        moved = Spirals(*(v.to(device) if isinstance(v, Tensor) else v for v in vars(part).values()))
        pick = lambda v: None if v is None else v[rows].to(device)  # noqa: E731
        return SeriesSet(moved, index[rows].to(device), pick(counts), pick(intensity))

    return series(train, slice(0, n_train)), series(test, slice(n_train, None))


def make_loss(
    train: SeriesSet, likelihood_std: float, train_prefix: tuple[float, float], bptt: BPTT
) -> Callable[[nn.Module, Tensor], tuple[Tensor, dict[str, float]]]:
    """``loss_fn(model, rows)`` for the shared Trainer: -ELBO per series, or the RNN's prediction MSE.

    Each batch, a net sees only a random prefix of the window (a share drawn from ``train_prefix``) and
    is scored on all of it: the latent ODE's encoder reads the prefix, the RNN forecasts past it
    free-running. A share of 1 is the plain ELBO, and teacher forcing for the RNN.
    """
    times, window = train.spirals.times, train.spirals.window
    low, high = (float(v) for v in train_prefix)

    def loss_fn(model: nn.Module, rows: Tensor) -> tuple[Tensor, dict[str, float]]:
        x, index = train.observed(rows)
        visible = low + (high - low) * torch.rand(()).item()  # this batch's visible share of the window
        mask = None  # the whole window: no masking work in the recurrent loops
        if visible < 1.0:
            mask = index < max(1, round(visible * window))
            mask[:, 0] = True
        if isinstance(model, LatentODE):
            reach = int(index.max()) + 1 if train.events is None else window
            events = None if train.events is None else train.events[rows]
            terms = model.elbo(x, index, times[:reach], likelihood_std, events, encoder_mask=mask)
            if not model.last_penalties:
                return -terms.elbo, terms.scalars()
            penalty = model.last_regularization  # the solver's regularization: its weighted penalties
            return -terms.elbo + penalty, {**terms.scalars(), "regularization": penalty.item()}
        predictions = model.teacher_forced(x, times[index], bptt, mask=mask)
        mse = torch.mean((predictions - x[:, 1:]) ** 2)
        return mse, {"mse": mse.item()}

    return loss_fn


def predict(model: nn.Module, series: SeriesSet) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Predictions at the grid times after the window ``(n, extrapolate, 2)``; for the latent ODE also its
    reconstruction of the window ``(n, window, 2)`` and latent path, from the same single solve."""
    x, index = series.observed()
    times, window = series.spirals.times, series.spirals.window
    if isinstance(model, LatentODE):
        decoded, path = model.predict(x, index, times)
        return decoded[:, window:], decoded[:, :window], path
    return model.forecast(x, times[index], times[window:]), None, None


def rmse(a: Tensor, b: Tensor) -> float:
    """Root mean square of the difference."""
    return math.sqrt(torch.mean((a - b) ** 2).item())


def evaluate_on(model: nn.Module, series: SeriesSet) -> dict[str, float]:
    """Predictive RMSE on the extrapolated points (against the true and the noisy spiral), NFE and more."""
    window = series.spirals.window
    predicted, reconstruction, path = predict(model, series)
    metrics = {
        "rmse_extrapolation": rmse(predicted, series.spirals.truth[:, window:]),
        "rmse_extrapolation_noisy": rmse(predicted, series.spirals.noisy[:, window:]),
    }
    if isinstance(model, LatentODE):
        metrics["rmse_window"] = rmse(reconstruction, series.spirals.truth[:, :window])
        metrics["nfe_forward"] = model.nfe_forward
        if series.intensity is not None:  # inside the window (events seen) and after it (extrapolated)
            inferred = model.intensity(path)
            metrics["rmse_intensity_window"] = rmse(inferred[:, :window], series.intensity[:, :window])
            metrics["rmse_intensity_extrapolation"] = rmse(inferred[:, window:], series.intensity[:, window:])
    return metrics
