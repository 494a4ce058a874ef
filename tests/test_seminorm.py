"""The adjoint's seminorm (``adjoint_options={"norm": "seminorm"}``) must not cost more than the norm.

Two causes made it cost more (issue 15): DOP853 blended its 5th- and 3rd-order estimates after taking
the maximum over tensors, so dropping the parameter tensors could raise the error ratio of a step (the
blend falls as the 3rd-order estimate grows); and each backward interval overshot its end with a step
carried from the previous interval, where a larger (seminorm) step was rejected more often.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import neuralode
from neuralode._setup.norms import RMSNorm
from neuralode.solvers import SOLVERS
from neuralode.solvers.adaptive import AdaptiveRKSolver
from neuralode.solvers.runge_kutta import DeviceTableau

METHODS = ("dopri5", "dopri8", "bosh3", "tsit5")


@settings(max_examples=60)
@given(
    method=st.sampled_from(METHODS),
    n=st.integers(1, 4),
    n_params=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    seed=st.integers(0, 10_000),
    spread=st.floats(-3.0, 3.0),
    dt=st.floats(1e-3, 2.0),
)
def test_seminorm_ratio_never_above_the_norm_on_a_step(method, n, n_params, seed, spread, dt):
    """On the same step, the seminorm's error ratio is at most the norm's (for DOP853's blended
    estimate too): the seminorm only drops tensors from the maximum."""
    gen = torch.Generator().manual_seed(seed)
    dtab = DeviceTableau(SOLVERS[method].tableau, torch.float64, torch.device("cpu"))
    segments = (n, n, *n_params)
    size = sum(segments)
    scales = torch.cat([torch.full((s,), 10.0 ** (spread * i)) for i, s in enumerate(segments)])
    K_t = torch.randn(size, dtab.num_stages, generator=gen, dtype=torch.float64) * scales[:, None]
    y_abs = torch.rand(size, generator=gen, dtype=torch.float64)
    y1_abs = torch.rand(size, generator=gen, dtype=torch.float64)
    ratio = {}
    for name, norm in (("rms", RMSNorm(segments)), ("semi", RMSNorm(segments, use=(0, 1)))):
        ratio[name] = AdaptiveRKSolver._error_ratio(dtab, K_t, y_abs, y1_abs, dt, 1e-6, 1e-8, norm, True)
    assert ratio["semi"] <= ratio["rms"] * (1 + 1e-12)


def _mlp_case(seed, method, rtol, atol, dtype, batch, nt, hidden, T):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 2)).to(
        dtype
    )
    y0 = torch.randn(batch, 2, dtype=dtype)
    t = torch.linspace(0, T, nt, dtype=dtype)
    params = tuple(net.parameters())
    out = {}
    for norm in ("rms", "seminorm"):
        stats = neuralode.SolveStats()
        ys = neuralode.odeint_adjoint(
            lambda t, y: net(y),
            y0,
            t,
            rtol=rtol,
            atol=atol,
            method=method,
            adjoint_options={"norm": norm},
            adjoint_params=params,
            stats=stats,
        )
        grads = torch.autograd.grad(ys.pow(2).sum(), params)
        out[norm] = (stats.backward, grads)
    return net, y0, t, out


# Cases where the seminorm cost more on the old code (backward NFE default norm vs seminorm, before).
REGRESSIONS = [
    ("dopri8", 927, torch.float64, 5.47e-7, 2.03e-4, 4, 5, 4, 0.5),  # 65 vs 77
    ("dopri8", 891, torch.float32, 1.52e-6, 1.59e-5, 2, 6, 16, 3.0),  # 105 vs 117
    ("dopri8", 626, torch.float64, 3.34e-7, 5.91e-7, 5, 3, 16, 3.0),  # 69 vs 81
    ("tsit5", 245, torch.float64, 2.41e-6, 1.17e-6, 3, 6, 16, 3.0),  # 54 vs 72
    ("tsit5", 469, torch.float32, 1.48e-6, 6.15e-5, 5, 5, 4, 3.0),  # 47 vs 53
]


@pytest.mark.parametrize(
    ("method", "seed", "dtype", "rtol", "atol", "batch", "nt", "hidden", "T"), REGRESSIONS
)
def test_seminorm_backward_nfe_not_above_the_norm_on_known_cases(
    method, seed, dtype, rtol, atol, batch, nt, hidden, T
):
    _, _, _, out = _mlp_case(seed, method, rtol, atol, dtype, batch, nt, hidden, T)
    assert out["seminorm"][0].nfe <= out["rms"][0].nfe


@settings(max_examples=14)
@given(
    method=st.sampled_from(METHODS),
    seed=st.integers(0, 1000),
    log_rtol=st.floats(-7.0, -3.0),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    batch=st.integers(1, 4),
    nt=st.integers(2, 5),
    T=st.sampled_from([0.5, 1.0, 3.0]),
)
def test_seminorm_backward_cost_and_gradients(method, seed, log_rtol, dtype, batch, nt, T):
    """The strongest statement that holds on this family: the seminorm
    never takes more accepted backward steps than the norm, and at most two more rejected ones (a
    larger proposed step can fail where the norm's smaller one did not: a step-size controller is
    not monotone in the error norm). Its gradients match a tight float64 reference to tolerance."""
    rtol = 10.0**log_rtol
    if dtype == torch.float32:
        rtol = max(rtol, 1e-5)
    net, y0, t, out = _mlp_case(seed, method, rtol, rtol * 1e-2, dtype, batch, nt, 8, T)
    semi, rms = out["seminorm"][0], out["rms"][0]
    assert semi.n_accepted <= rms.n_accepted
    assert semi.n_rejected <= rms.n_rejected + 2

    net64 = net.double()
    params = tuple(net64.parameters())
    ys = neuralode.odeint(lambda t, y: net64(y), y0.double(), t.double(), rtol=1e-11, atol=1e-13)
    reference = torch.autograd.grad(ys.pow(2).sum(), params)
    scale = max(float(g.abs().max()) for g in reference)
    tol = 300 * rtol * max(1.0, scale) + (1e-4 if dtype == torch.float32 else 0.0) * scale
    for g, ref in zip(out["seminorm"][1], reference, strict=True):
        err = float((g.double() - ref).abs().max())
        assert err <= tol, (err, tol)
    assert math.isfinite(scale)
