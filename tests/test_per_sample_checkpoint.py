"""odeint_checkpoint(..., per_sample=True) (issue 21): the forward values of odeint(per_sample=True) bit
for bit, and its gradients (direct backprop through the per-sample steps) to rounding, in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuralode import PerSample, PerSampleSolveError, SolveStats, odeint
from neuralode.odeint import odeint_checkpoint

F64 = torch.float64


def make_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(F64)


def field(net, mu):
    """A per-row stiffness mu and a time-dependent forcing: the samples take different steps."""
    return lambda t, y: net(y) * mu[:, None] + torch.sin(3 * t)[:, None]


def both(func, y0, t, params, every=1, per_sample=True, **kwargs):
    """(ys, grads) of odeint and of odeint_checkpoint for a fixed weighting of the outputs, and the
    checkpointed solve's stats."""
    results = []
    stats = SolveStats()
    for solve in ("direct", "checkpoint"):
        y = y0.detach().clone().requires_grad_(True)
        tt = t.detach().clone().requires_grad_(t.requires_grad)
        if solve == "direct":
            ys = odeint(func, y, tt, per_sample=per_sample, **kwargs)
        else:
            ys = odeint_checkpoint(func, y, tt, checkpoint_every=every, adjoint_params=tuple(params),
                                   stats=stats, per_sample=per_sample, **kwargs)  # fmt: skip
        weights = torch.linspace(-1.0, 2.0, ys.numel(), dtype=F64).reshape(ys.shape)
        inputs = (y, *params, *([tt] if t.requires_grad else []))
        grads = torch.autograd.grad((ys * weights).sum(), inputs)
        results.append((ys.detach(), grads))
    return results, stats


def assert_same(results):
    (ys_a, g_a), (ys_b, g_b) = results
    assert torch.equal(ys_a, ys_b)
    for a, b in zip(g_a, g_b, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("every", [1, 3, 10_000])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "dopri8", "fehlberg2", "adaptive_heun"])
def test_checkpointed_gradients_equal_direct_backprop(method, every):
    net = make_net()
    mu = torch.tensor([0.5, 2.0, 5.0], dtype=F64)
    y0 = torch.randn(3, 3, dtype=F64)
    t = torch.tensor([0.0, 0.3, 1.0, 1.7], dtype=F64)
    params = list(net.parameters())
    tol = 1e-4 if method in ("fehlberg2", "adaptive_heun") else 1e-6  # low orders: fewer steps
    results, stats = both(field(net, mu), y0, t, params, every, rtol=tol, atol=tol / 10, method=method)
    assert_same(results)
    assert stats.forward.n_checkpoints >= 1
    assert bool((stats.backward.n_steps == stats.forward.n_accepted).all())
    if every == 1:
        # one state per lockstep step that some sample accepted
        forward = stats.forward
        assert int(forward.n_accepted.max()) <= forward.n_checkpoints <= int(forward.n_steps.max())


@given(
    mu=st.lists(st.floats(0.1, 4.0), min_size=1, max_size=4),
    every=st.integers(1, 5),
    compact=st.booleans(),
    backwards=st.lists(st.booleans(), min_size=4, max_size=4),
)
@settings(max_examples=12, deadline=None)
def test_per_sample_times_tolerances_and_t_gradients(mu, every, compact, backwards):
    """(B, T) output times in both directions, (B,) tolerances, dL/dt, compaction: as direct backprop."""
    batch = len(mu)
    net = make_net(1)
    mu_t = torch.tensor(mu, dtype=F64)
    sign = torch.tensor([-1.0 if b else 1.0 for b in backwards[:batch]], dtype=F64)
    t = (sign[:, None] * torch.tensor([0.0, 0.4, 0.9], dtype=F64)).requires_grad_(True)
    rtol = torch.logspace(-7, -5, batch, dtype=F64)
    y0 = torch.linspace(-1.0, 1.0, 3 * batch, dtype=F64).reshape(batch, 3)
    config = PerSample(compact=compact, with_rows=True)

    def func(t, y, rows):  # compaction: per-sample tensors indexed by the running rows
        return net(y) * mu_t[rows, None] + torch.sin(3 * t)[:, None]

    results, _ = both(func, y0, t, list(net.parameters()), every, config, rtol=rtol, atol=1e-8)
    assert_same(results)


def test_tuple_state_and_with_rows():
    k = torch.tensor([1.0, 3.0], dtype=F64, requires_grad=True)

    class Field(torch.nn.Module):
        def forward(self, t, y, rows):
            return (-k[rows, None] * y[0] * y[1], k[rows] * y[0].sum(1))

    def run(solve, **kwargs):
        y0 = (torch.ones(2, 2, dtype=F64).requires_grad_(True), torch.ones(2, dtype=F64))
        t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
        ys = solve(Field(), y0, t, per_sample=PerSample(with_rows=True), rtol=1e-7, atol=1e-9, **kwargs)
        loss = ys[0].sum() + (ys[1] ** 2).sum()
        return [y.detach() for y in ys], torch.autograd.grad(loss, (y0[0], k))

    (ys_a, g_a), (ys_b, g_b) = run(odeint), run(odeint_checkpoint, adjoint_params=(k,), checkpoint_every=2)
    for a, b in zip([*ys_a, *g_a], [*ys_b, *g_b], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-11, atol=1e-13)


def test_failures_follow_on_failure():
    def f(t, y):
        return y * y  # blows up at t = 1 / y0: sample 1 (y0 = 2) by t = 0.5, sample 0 not before t = 1

    y0 = torch.tensor([[0.5], [2.0]], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    with pytest.raises(PerSampleSolveError) as info:
        odeint_checkpoint(f, y0, t, per_sample=True, adjoint_params=())
    assert info.value.samples == [1]
    ys = odeint_checkpoint(f, y0, t, per_sample=PerSample(on_failure="nan"), adjoint_params=(), rtol=1e-9)
    assert bool(ys[2, 1].isnan().all()) and not bool(ys[:, 0].isnan().any())
    (grad,) = torch.autograd.grad(ys[:, 0].sum() + ys[:2, 1].sum(), y0)
    # y = y0 / (1 - y0 t): dy/dy0 = 1 / (1 - y0 t)^2
    exact = [sum(1 / (1 - y * s) ** 2 for s in times) for y, times in ((0.5, [0, 0.4, 1.0]), (2.0, [0, 0.4]))]
    assert grad[:, 0].tolist() == pytest.approx(exact, rel=1e-6)


def test_an_adams_method_is_refused_before_work():
    """(The explicit fixed-grid methods are checkpointed per sample: test_per_sample_fixed_grid.py.)"""
    with pytest.raises(ValueError, match=r"method='explicit_adams' does not support per_sample=True"):
        odeint_checkpoint(lambda t, y: -y, torch.ones(2, 1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                          method="explicit_adams", per_sample=True, adjoint_params=())  # fmt: skip
