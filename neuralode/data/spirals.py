"""Bidirectional 2-D spirals, the latent ODE's time series (Section 5.2 of the paper), generated from a seed.

Every spiral is an Archimedean spiral r = r0 + growth * theta / (2 pi) traced at one radian per unit of
time (theta = t), counter-clockwise or (its mirror image) clockwise, over ``turns`` turns on a dense grid. A series
is a window of ``window`` consecutive dense points from a random start, followed by ``extrapolate``
points that a model must predict; observations carry Gaussian noise. Times count from the window's
start, so all series share one time grid and a batch needs only one ODE solve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SpiralSpec:
    """What to generate; the defaults are the experiment's (the paper names none of these numbers)."""

    num_spirals: int = 1000
    num_dense: int = 500  # dense points over the whole spiral
    turns: float = 3.0  # the whole spiral: t = theta in [0, 2 pi turns]
    window: int = 100  # dense points a model may observe
    extrapolate: int = 100  # dense points after the window, to predict
    radius_start: float = 0.5
    radius_growth: float = 1.0  # radius gained per turn
    noise_std: float = 0.1

    def __post_init__(self) -> None:
        for name in ("num_spirals", "num_dense", "window", "extrapolate"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SpiralSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.window + self.extrapolate > self.num_dense:
            raise ValueError(
                f"SpiralSpec.window + extrapolate ({self.window} + {self.extrapolate}) must not exceed "
                f"num_dense ({self.num_dense}); raise num_dense or shorten the windows"
            )
        if self.turns <= 0 or self.noise_std < 0 or self.radius_start < 0:
            raise ValueError("SpiralSpec.turns must be > 0, and noise_std, radius_start >= 0")


@dataclass(frozen=True)
class Spirals:
    """A set of series on a shared time grid.

    ``times`` is ``(window + extrapolate,)``; ``truth`` and ``noisy`` are ``(n, window + extrapolate, 2)``;
    ``clockwise`` is ``(n,)`` bool; ``start`` is each window's first index on the dense spiral.
    """

    times: Tensor
    truth: Tensor
    noisy: Tensor
    clockwise: Tensor
    start: Tensor
    window: int

    def __len__(self) -> int:
        return self.truth.shape[0]

    def subset(self, index: Tensor | slice) -> Spirals:
        """The series at ``index`` (same grid)."""
        return Spirals(
            self.times, self.truth[index], self.noisy[index], self.clockwise[index], self.start[index], self.window
        )


def dense_spiral(spec: SpiralSpec, clockwise: bool) -> tuple[Tensor, Tensor]:
    """``(t, xy)`` of one whole noiseless spiral on the dense grid, float64."""
    t = torch.linspace(0.0, 2 * math.pi * spec.turns, spec.num_dense, dtype=torch.float64)
    radius = spec.radius_start + spec.radius_growth * t / (2 * math.pi)
    x, y = radius * torch.cos(t), radius * torch.sin(t)
    if clockwise:
        x = -x  # the mirror image turns the other way
    return t, torch.stack([x, y], dim=-1)


def make_spirals(spec: SpiralSpec, seed: int) -> Spirals:
    """``spec.num_spirals`` series, alternately counter-clockwise and clockwise, deterministic in ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    n, length = spec.num_spirals, spec.window + spec.extrapolate
    t, counter = dense_spiral(spec, clockwise=False)
    _, clock = dense_spiral(spec, clockwise=True)
    clockwise = torch.arange(n) % 2 == 1
    start = torch.randint(0, spec.num_dense - length + 1, (n,), generator=generator)
    index = start[:, None] + torch.arange(length)
    truth = torch.where(clockwise[:, None, None], clock[index], counter[index])
    noise = torch.randn(truth.shape, generator=generator, dtype=torch.float64) * spec.noise_std
    times = t[:length] - t[0]
    return Spirals(
        times.float(), truth.float(), (truth + noise).float(), clockwise, start, spec.window
    )


def observation_index(num_series: int, window: int, num_observed: int, seed: int) -> Tensor:
    """``(num_series, num_observed)`` sorted indices into the window, drawn without replacement per series."""
    if not 1 <= num_observed <= window:
        raise ValueError(f"num_observed must be in [1, window={window}], got {num_observed}")
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(num_series, window, generator=generator)
    return scores.argsort(dim=1)[:, :num_observed].sort(dim=1).values


def split(spirals: Spirals, test_fraction: float) -> tuple[Spirals, Spirals]:
    """(train, test): the last ``test_fraction`` of the series are held out (both directions in each)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = max(1, round(len(spirals) * test_fraction))
    n_train = len(spirals) - n_test
    return spirals.subset(slice(0, n_train)), spirals.subset(slice(n_train, None))


def event_intensity(truth: Tensor, peak_rate: float = 20.0, sharpness: float = 2.0) -> Tensor:
    """The synthetic events' true intensity, lambda(t) = peak_rate * sigmoid(sharpness * x(t)): ``(n, T)``.

    Events come mostly while a spiral is on the right (x > 0), so the intensity rises and falls with each
    turn, and a model can only get it right by tracking the latent state.
    """
    return peak_rate * torch.sigmoid(sharpness * truth[..., 0])


def sample_events(intensity: Tensor, times: Tensor, seed: int) -> Tensor:
    """Event counts per grid time from a Poisson process with ``intensity`` (n, T) on ``times`` (T,).

    The count in each grid cell (t_{i-1}, t_i] is Poisson with mean lambda(t_i) dt (the intensity is taken
    as constant over a cell; the grid is fine enough that a cell rarely holds two events).
    """
    generator = torch.Generator().manual_seed(seed)
    dt = torch.diff(times, prepend=times[:1])
    return torch.poisson(intensity * dt, generator=generator)
