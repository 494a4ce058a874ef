"""Latent ODE parts: the spiral data, the ELBO, the RNN baseline and its BPTT strategies, the Poisson head."""

from __future__ import annotations

import math

import pytest
import torch

from neuralode import Adjoint, Direct, SolverConfig
from neuralode.data.spirals import (
    SpiralSpec,
    event_intensity,
    make_spirals,
    observation_index,
    sample_events,
    split,
)
from neuralode.models.bptt import BPTT
from neuralode.models.latent_ode import LatentODE, gaussian_log_likelihood, kl_standard_normal
from neuralode.models.rnn_baseline import GapRNN

SMALL = SpiralSpec(num_spirals=20, num_dense=120, turns=1.5, window=30, extrapolate=20)


def test_spirals_are_deterministic_with_the_stated_shapes():
    a, b = make_spirals(SMALL, seed=3), make_spirals(SMALL, seed=3)
    assert torch.equal(a.noisy, b.noisy) and torch.equal(a.start, b.start)
    assert not torch.equal(a.noisy, make_spirals(SMALL, seed=4).noisy)
    assert a.times.shape == (50,) and a.truth.shape == (20, 50, 2) and a.noisy.shape == (20, 50, 2)
    assert a.times[0] == 0 and torch.all(torch.diff(a.times) > 0)
    assert int(a.clockwise.sum()) == 10  # half of each direction
    residual = a.noisy - a.truth
    assert abs(residual.std().item() - SMALL.noise_std) < 0.02


def test_spiral_directions_match_their_labels():
    spirals = make_spirals(SMALL, seed=0)
    p, v = spirals.truth[:, :-1], torch.diff(spirals.truth, dim=1)
    angular = (p[..., 0] * v[..., 1] - p[..., 1] * v[..., 0]).mean(dim=1)  # > 0: counter-clockwise
    assert torch.all((angular < 0) == spirals.clockwise)


def test_observation_index_is_sorted_distinct_and_inside_the_window():
    index = observation_index(50, 30, 12, seed=1)
    assert index.shape == (50, 12)
    assert torch.all(torch.diff(index, dim=1) > 0) and index.min() >= 0 and index.max() < 30
    assert torch.equal(index, observation_index(50, 30, 12, seed=1))
    with pytest.raises(ValueError, match="num_observed"):
        observation_index(5, 30, 31, seed=0)


def test_bad_spec_and_split_fail_with_the_field_named():
    with pytest.raises(ValueError, match="num_dense"):
        SpiralSpec(num_dense=100, window=100, extrapolate=100)
    with pytest.raises(ValueError, match="test_fraction"):
        split(make_spirals(SMALL, 0), 1.5)
    train, test = split(make_spirals(SMALL, 0), 0.2)
    assert len(train) == 16 and len(test) == 4 and test.clockwise.any() and (~test.clockwise).any()


def test_likelihood_and_kl_match_torch_distributions():
    torch.manual_seed(0)
    x, mean = torch.randn(5, 3), torch.randn(5, 3)
    expected = torch.distributions.Normal(mean, 0.3).log_prob(x)
    torch.testing.assert_close(gaussian_log_likelihood(x, mean, 0.3), expected)
    mu, logvar = torch.randn(4, 2), torch.randn(4, 2)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    torch.testing.assert_close(
        kl_standard_normal(mu, logvar), torch.distributions.kl_divergence(q, p).sum(-1)
    )


def _batch(num_observed: int = 10):
    spirals = make_spirals(SMALL, seed=0)
    index = observation_index(len(spirals), SMALL.window, num_observed, seed=1)
    x = spirals.noisy.gather(1, index.unsqueeze(-1).expand(-1, -1, 2))
    return spirals, x, index


def test_elbo_terms_are_finite_and_kl_is_non_negative():
    torch.manual_seed(0)
    spirals, x, index = _batch()
    model = LatentODE(solver=SolverConfig(rtol=1e-4, atol=1e-5))
    terms = model.elbo(x, index, spirals.times[: SMALL.window], 0.1)
    for value in terms.scalars().values():
        assert math.isfinite(value)
    assert terms.kl.item() >= 0
    torch.testing.assert_close(terms.elbo, terms.log_likelihood - terms.kl)
    assert model.nfe_forward > 0


def test_adjoint_and_direct_backprop_give_the_same_elbo_gradient():
    spirals, x, index = _batch()
    grads = []
    for gradient in (Adjoint(), Direct()):
        torch.manual_seed(0)
        model = LatentODE(solver=SolverConfig(rtol=1e-11, atol=1e-11, gradient=gradient)).double()
        torch.manual_seed(1)  # the same reparameterisation noise
        terms = model.elbo(x.double(), index, spirals.times[: SMALL.window].double(), 0.1)
        grads.append(torch.autograd.grad(terms.elbo, list(model.parameters())))
    for a, b in zip(*grads, strict=True):  # both converge to the same gradient as the tolerance shrinks
        assert (a - b).norm() <= 1e-5 * a.norm()


def test_a_few_adam_steps_raise_the_elbo():
    spirals, x, index = _batch()
    times = spirals.times[: SMALL.window]
    torch.manual_seed(0)
    model = LatentODE(solver=SolverConfig(rtol=1e-3, atol=1e-4, gradient=Direct()))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def loss() -> torch.Tensor:
        torch.manual_seed(5)
        return -model.elbo(x, index, times, 0.1).elbo

    before = loss().item()
    for _ in range(30):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.8 * before


def test_poisson_head_with_a_constant_rate_gives_the_closed_form_likelihood():
    torch.manual_seed(0)
    model = LatentODE(solver=SolverConfig(rtol=1e-8, atol=1e-8), event_rate=True).double()
    with torch.no_grad():
        for p in model.log_rate.parameters():
            p.zero_()
        model.log_rate[-1].bias.fill_(math.log(3.0))  # lambda = 3 everywhere
    times = torch.linspace(0, 2, 11, dtype=torch.float64)
    path = model.solve(torch.randn(4, 4, dtype=torch.float64), times)
    events = torch.zeros(4, 11, dtype=torch.float64)
    events[:, [2, 5, 7]] = 1.0
    expected = torch.full((4,), 3 * math.log(3.0) - 3.0 * 2.0, dtype=torch.float64)
    torch.testing.assert_close(model.event_log_likelihood(path, events), expected)
    with pytest.raises(ValueError, match="event_rate=True"):
        LatentODE().event_log_likelihood(path, events)


def test_sampled_events_follow_the_intensity():
    spirals = make_spirals(SpiralSpec(num_spirals=400), seed=0)
    intensity = event_intensity(spirals.truth)
    events = sample_events(intensity, spirals.times, seed=0)
    dt = torch.diff(spirals.times, prepend=spirals.times[:1])
    expected = (intensity * dt).sum(dim=1).mean()
    observed = events.sum(dim=1).mean()
    assert abs(observed - expected) < 0.05 * expected  # counts per series: ~20, 400 series
    assert torch.equal(events, events.round()) and events.min() >= 0


def _rnn_grads(bptt: BPTT, x: torch.Tensor, times: torch.Tensor, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(0)
    model = GapRNN(hidden=5, cell="rnn").double()
    generator = torch.Generator().manual_seed(seed)
    loss = ((model.teacher_forced(x, times, bptt, generator) - x[:, 1:]) ** 2).mean()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])


def test_bptt_variants_equal_full_backprop_when_they_cover_the_sequence():
    torch.manual_seed(0)
    x, times = (
        torch.randn(3, 8, 2, dtype=torch.float64),
        torch.cumsum(torch.rand(3, 8, dtype=torch.float64), 1),
    )
    full = _rnn_grads(BPTT("full"), x, times)
    torch.testing.assert_close(_rnn_grads(BPTT("truncated", tau=8), x, times), full)
    torch.testing.assert_close(_rnn_grads(BPTT("randomized", keep_probability=1.0), x, times), full)
    assert not torch.allclose(_rnn_grads(BPTT("truncated", tau=2), x, times), full)


def test_randomized_truncation_is_unbiased():
    torch.manual_seed(0)
    x, times = (
        torch.randn(2, 6, 2, dtype=torch.float64),
        torch.cumsum(torch.rand(2, 6, dtype=torch.float64), 1),
    )
    full = _rnn_grads(BPTT("full"), x, times)
    draws = torch.stack(
        [_rnn_grads(BPTT("randomized", keep_probability=0.6), x, times, s) for s in range(1500)]
    )
    stderr = draws.std(dim=0) / math.sqrt(len(draws))
    z = (draws.mean(dim=0) - full) / stderr.clamp_min(1e-12)
    assert z.abs().max() < 5.0
    assert not torch.allclose(draws[0], full)  # a single draw is not the full gradient


def test_bptt_rejects_bad_settings():
    with pytest.raises(ValueError, match="strategy"):
        BPTT("sometimes")
    with pytest.raises(ValueError, match="tau"):
        BPTT("truncated", tau=0)
    with pytest.raises(ValueError, match="keep_probability"):
        BPTT("randomized", keep_probability=0.0)
    with pytest.raises(ValueError, match="cell"):
        GapRNN(cell="lstm")


def test_rnn_forecast_feeds_predictions_back():
    torch.manual_seed(0)
    model = GapRNN()
    x, times = torch.randn(4, 6, 2), torch.cumsum(torch.rand(4, 6), 1)
    targets = times[0, -1] + torch.linspace(0.1, 1.0, 7)
    out = model.forecast(x, times, targets)
    assert out.shape == (4, 7, 2)
    # the first forecast is the teacher-forced prediction from the same state
    extended = torch.cat([x, out[:, :1]], dim=1)
    extended_t = torch.cat([times, targets[:1].expand(4, 1)], dim=1)
    torch.testing.assert_close(model.teacher_forced(extended, extended_t)[:, -1], out[:, 0])
