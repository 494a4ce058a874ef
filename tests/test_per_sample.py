"""per_sample=True: every sample with its own steps, times, tolerances and outcome (issue 21).

References: each sample solved alone (joint mode, batch of one), SciPy's DOP853 at 1e-12, closed
forms, gradcheck and finite differences in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import neuralode as nd
from neuralode import PerSample, PerSampleSolveError, SolveStats, odeint

from .conftest import ADAPTIVE_METHODS, FIXED_METHODS

EXPLICIT_ADAPTIVE = [
    m for m in ADAPTIVE_METHODS if isinstance(nd.SOLVERS[m].tableau, nd.solvers.ButcherTableau)
]
DT = torch.float64


def vdp_field(mu: torch.Tensor):
    """Van der Pol with one mu per row (elementwise: a row's value does not depend on the others)."""

    def f(t, y):
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], dim=1)

    return f


def vdp_solo(mu: float):
    def f(t, y):
        x, v = y[0], y[1]
        return torch.stack([v, mu * (1 - x * x) * v - x])

    return f


def y0_of(batch: int) -> torch.Tensor:
    return torch.tensor([2.0, 0.0], dtype=DT).repeat(batch, 1)


T = torch.linspace(0.0, 6.0, 13, dtype=DT)


@pytest.mark.parametrize("method", EXPLICIT_ADAPTIVE)
def test_each_sample_equals_its_solo_solve(method):
    mu = torch.logspace(-1, 0.5, 5, dtype=DT)
    stats = SolveStats()
    ys = odeint(vdp_field(mu), y0_of(5), T, rtol=1e-5, atol=1e-5, method=method, per_sample=True, stats=stats)
    assert ys.shape == (13, 5, 2)
    for b in range(5):  # the batch-of-one per-sample solve is the joint solve up to rounding
        solo_stats = SolveStats()
        solo = odeint(
            vdp_solo(float(mu[b])), y0_of(1)[0], T, rtol=1e-5, atol=1e-5, method=method, stats=solo_stats
        )
        torch.testing.assert_close(ys[:, b], solo, rtol=1e-10, atol=1e-10)
        assert int(stats.forward.n_steps[b]) == solo_stats.forward.n_steps
        assert int(stats.forward.n_accepted[b]) == solo_stats.forward.n_accepted
    assert stats.status == ("success",) * 5


@settings(max_examples=12)
@given(
    st.lists(st.integers(0, 7), min_size=1, max_size=6),
    st.sampled_from(["dopri5", "tsit5", "dopri8", "fehlberg2"]),
)
def test_answer_does_not_depend_on_the_batch(members, method):
    """A sample's answer is bit for bit the same whatever samples share its batch (and in which rows)."""
    mu_all = torch.logspace(-1, 1, 8, dtype=DT)
    mu = mu_all[members]
    ys = odeint(vdp_field(mu), y0_of(len(members)), T, rtol=1e-7, atol=1e-7, method=method, per_sample=True)
    for row, b in enumerate(members):
        alone = odeint(
            vdp_field(mu_all[b : b + 1]), y0_of(1), T, rtol=1e-7, atol=1e-7, method=method, per_sample=True
        )
        assert torch.equal(ys[:, row], alone[:, 0])


def test_fewer_steps_than_joint_mode_and_accurate():
    mu = torch.logspace(-1, 1, 16, dtype=DT)
    t = torch.linspace(0.0, 10.0, 50, dtype=DT)
    per, joint = SolveStats(), SolveStats()
    ys = odeint(vdp_field(mu), y0_of(16), t, rtol=1e-6, atol=1e-6, per_sample=True, stats=per)
    odeint(vdp_field(mu), y0_of(16), t, rtol=1e-6, atol=1e-6, stats=joint)
    assert int(per.forward.n_steps.max()) < joint.forward.n_steps
    assert int(per.forward.n_steps.sum()) < 16 * joint.forward.n_steps / 2
    for b in (0, 7, 15):
        m = float(mu[b])
        ref = solve_ivp(
            lambda _, y, m=m: [y[1], m * (1 - y[0] ** 2) * y[1] - y[0]], (0, 10), [2.0, 0.0],
            method="DOP853", rtol=1e-12, atol=1e-12, t_eval=t.numpy(),
        )  # fmt: skip
        assert np.abs(ref.y.T - ys[:, b].numpy()).max() < 2e-4


def test_per_sample_output_times_and_directions():
    """t of shape (B, T): each row its own grid, forwards or backwards."""
    t = torch.tensor([[0.0, 0.5, 2.0], [1.0, 0.0, -1.5], [0.2, 0.3, 0.4]], dtype=DT)
    y0 = torch.tensor([[1.0], [2.0], [-1.0]], dtype=DT)
    rate = torch.tensor([[-0.5], [0.7], [1.3]], dtype=DT)
    ys = odeint(lambda t, y: rate * y, y0, t, rtol=1e-10, atol=1e-12, per_sample=True)
    assert ys.shape == (3, 3, 1)
    exact = y0[:, 0, None] * torch.exp(rate[:, 0, None] * (t - t[:, :1]))  # (B, T)
    torch.testing.assert_close(ys[..., 0].T, exact, rtol=1e-8, atol=1e-10)


def test_func_receives_one_time_per_sample():
    seen = []

    def f(t, y):
        seen.append(t.shape)
        return torch.cos(t)[:, None] * torch.ones_like(y)

    t = torch.tensor([[0.0, 1.0, 2.0], [0.0, -1.0, -3.0]], dtype=DT)
    ys = odeint(f, torch.zeros(2, 1, dtype=DT), t, rtol=1e-10, atol=1e-10, per_sample=True)
    assert set(seen) == {(2,)}
    torch.testing.assert_close(ys[..., 0].T, torch.sin(t), rtol=1e-7, atol=1e-8)


def test_per_sample_tolerances():
    mu = torch.tensor([1.0, 1.0, 1.0], dtype=DT)
    rtol = torch.tensor([1e-3, 1e-6, 1e-9], dtype=DT)
    stats = SolveStats()
    ys = odeint(vdp_field(mu), y0_of(3), T, rtol=rtol, atol=rtol, per_sample=True, stats=stats)
    steps = stats.forward.n_steps.tolist()
    assert steps[0] < steps[1] < steps[2]
    for b in range(3):
        solo = odeint(vdp_solo(1.0), y0_of(1)[0], T, rtol=float(rtol[b]), atol=float(rtol[b]))
        torch.testing.assert_close(ys[:, b], solo, rtol=1e-10, atol=1e-10)


def test_tuple_state_and_time_independent_func():
    y0 = (torch.ones(3, 2, dtype=DT), torch.zeros(3, dtype=DT))
    k = torch.tensor([0.5, 1.0, 2.0], dtype=DT)
    ys = odeint(
        lambda t, y: (-k[:, None] * y[0], y[0].sum(1)), y0, T, rtol=1e-10, atol=1e-12, per_sample=True
    )
    assert ys[0].shape == (13, 3, 2) and ys[1].shape == (13, 3)
    decay = torch.exp(-k[None, :] * T[:, None])
    torch.testing.assert_close(ys[0][..., 0], decay, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(ys[1], 2 * (1 - decay) / k, rtol=1e-7, atol=1e-9)


def _blow_up(t, y):  # y' = y^2 from 1: infinite at t = 1 (row 1); row 0 decays
    return torch.stack([-y[:, 0], y[:, 1] ** 2], dim=1) * torch.tensor(
        [[1.0, 0.0], [0.0, 1.0]], dtype=DT
    ).sum(0)


def test_a_failing_sample_raises_naming_it():
    y0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DT)  # sample 1 blows up at t = 1
    f = lambda t, y: torch.stack([-y[:, 0], y[:, 1] ** 2], dim=1)  # noqa: E731
    with pytest.raises(
        PerSampleSolveError, match=r"1 of 2 samples failed: sample 1 at t=(0\.99|1\.0)"
    ) as info:
        odeint(f, y0, torch.tensor([0.0, 0.5, 2.0], dtype=DT), per_sample=True)
    assert info.value.samples == [1]
    assert info.value.reasons[0] in ("step_underflow", "non_finite")


def test_on_failure_nan_returns_the_others():
    y0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]], dtype=DT)
    f = lambda t, y: torch.stack([-y[:, 0], y[:, 1] ** 2], dim=1)  # noqa: E731
    t = torch.tensor([0.0, 0.5, 2.0], dtype=DT)
    stats = SolveStats()
    ys = odeint(f, y0, t, rtol=1e-9, atol=1e-9, per_sample=PerSample(on_failure="nan"), stats=stats)
    assert stats.status[0] == "success" and stats.status[2] == "success" and stats.status[1] != "success"
    torch.testing.assert_close(ys[:, 0, 0], torch.exp(-t), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(ys[:, 2, 0], 2 * torch.exp(-t), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(ys[1, 1, 1], torch.tensor(2.0, dtype=DT), rtol=1e-7, atol=0)  # 1/(1-t) at 0.5
    assert bool(torch.isnan(ys[2, 1]).all())  # past the blow-up


def test_max_num_steps_per_sample():
    mu = torch.tensor([0.1, 10.0], dtype=DT)
    stats = SolveStats()
    ys = odeint(
        vdp_field(mu), y0_of(2), T, rtol=1e-8, atol=1e-8, options={"max_num_steps": 100},
        per_sample=PerSample(on_failure="nan"), stats=stats,
    )  # fmt: skip
    assert stats.status == ("success", "max_num_steps")
    assert int(stats.forward.n_steps[1]) == 100
    assert bool(torch.isfinite(ys[:, 0]).all()) and bool(torch.isnan(ys[-1, 1]).all())
    with pytest.raises(PerSampleSolveError, match=r"sample 1 at t=.*max_num_steps after 100 steps"):
        odeint(
            vdp_field(mu), y0_of(2), T, rtol=1e-8, atol=1e-8, options={"max_num_steps": 100}, per_sample=True
        )


def test_direct_gradients_gradcheck():
    mu = torch.tensor([0.5, 2.0], dtype=DT, requires_grad=True)
    t = torch.tensor([[0.0, 0.4, 1.0], [0.0, 0.7, 1.5]], dtype=DT, requires_grad=True)
    y0 = torch.tensor([[1.0, 0.2], [0.5, -0.3]], dtype=DT, requires_grad=True)

    def run(y0, mu, t):
        return odeint(vdp_field(mu), y0, t, rtol=1e-9, atol=1e-9, per_sample=True)

    torch.autograd.gradcheck(run, (y0, mu, t), atol=1e-5, rtol=1e-4)


def test_gradients_match_solo_solves():
    mu = torch.tensor([0.3, 3.0], dtype=DT, requires_grad=True)
    y0 = y0_of(2).requires_grad_(True)
    ys = odeint(vdp_field(mu), y0, T, rtol=1e-8, atol=1e-8, per_sample=True)
    g_y0, g_mu = torch.autograd.grad(ys[-1].pow(2).sum(), (y0, mu))
    for b in range(2):
        mb = mu.detach()[b].clone().requires_grad_(True)
        yb = y0_of(1)[0].requires_grad_(True)
        solo = odeint(
            lambda t, y, mb=mb: torch.stack([y[1], mb * (1 - y[0] ** 2) * y[1] - y[0]]),
            yb,
            T,
            rtol=1e-8,
            atol=1e-8,
        )
        gy, gm = torch.autograd.grad(solo[-1].pow(2).sum(), (yb, mb))
        torch.testing.assert_close(g_y0[b], gy, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(g_mu[b], gm, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("method", FIXED_METHODS)
def test_fixed_grid_per_sample_grids(method):
    t = torch.tensor([[0.0, 0.3, 0.9, 1.0], [2.0, 1.5, 1.0, 0.0]], dtype=DT)
    y0 = torch.tensor([[1.0], [0.5]], dtype=DT)
    f = lambda t, y: -y * torch.cos(t)[:, None]  # noqa: E731
    for options in (None, {"step_size": 0.07}, {"step_size": 0.07, "interp": "cubic"}):
        ys = odeint(f, y0, t, method=method, options=options, per_sample=True)
        for b in range(2):
            solo = odeint(lambda t, y: -y * torch.cos(t), y0[b], t[b], method=method, options=options)
            torch.testing.assert_close(ys[:, b], solo, rtol=1e-12, atol=1e-14)


def test_compaction_same_answers_fewer_evaluations():
    mu = torch.logspace(-1, 1, 6, dtype=DT)

    def f(t, y, rows):
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, mu[rows] * (1 - x * x) * v - x], dim=1)

    full, compact = SolveStats(), SolveStats()
    y_full = odeint(vdp_field(mu), y0_of(6), T, per_sample=True, stats=full)
    y_compact = odeint(f, y0_of(6), T, per_sample=PerSample(compact=True, with_rows=True), stats=compact)
    assert torch.equal(y_full, y_compact)
    assert torch.equal(full.forward.n_steps, compact.forward.n_steps)
    # dopri5 (FSAL): f(t0, y0), the initial-step selection, then 6 per attempted step, for each sample
    torch.testing.assert_close(compact.forward.nfe, 2 + 6 * compact.forward.n_steps, rtol=0, atol=0)
    assert torch.equal(full.forward.nfe, torch.full((6,), int(2 + 6 * full.forward.n_steps.max())))


def test_compaction_hands_func_fewer_rows():
    rows_seen = []
    mu = torch.tensor([0.1, 5.0], dtype=DT)

    def f(t, y, rows):
        rows_seen.append(rows.tolist())
        return vdp_field(mu[rows])(t, y)

    odeint(f, y0_of(2), T, per_sample=PerSample(compact=True, with_rows=True))
    assert [1] in rows_seen and [0, 1] in rows_seen


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"t": torch.zeros(3, 4, dtype=DT)}, ValueError, r"t must have shape \(T,\).*\(B, T\) = \(2, T\)"),
        ({"t": torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=DT)}, ValueError, "row 1 of t is not strictly"),
        ({"rtol": torch.ones(3, dtype=DT)}, ValueError, r"rtol must be a number or a \(2,\) tensor"),
        ({"method": "radauIIA5"}, ValueError, "does not support per_sample=True"),
        ({"y0": torch.ones((), dtype=DT)}, ValueError, "needs a sample dimension"),
        ({"y0": (torch.ones(2, 1, dtype=DT), torch.ones(3, dtype=DT))}, ValueError, "dim 0 of every member"),
        ({"per_sample": "yes"}, TypeError, "per_sample must be True, False or a neuralode.PerSample"),
        ({"options": {"norm": lambda e: e.abs().max()}}, ValueError, "RMS norm"),
    ],
)
def test_bad_input_is_named(kwargs, error, match):
    args = {"y0": torch.ones(2, 1, dtype=DT), "t": torch.tensor([0.0, 1.0], dtype=DT), "per_sample": True}
    args.update(kwargs)
    y0, t = args.pop("y0"), args.pop("t")
    func = (lambda t, y: tuple(-x for x in y)) if isinstance(y0, tuple) else (lambda t, y: -y)
    with pytest.raises(error, match=match):
        odeint(func, y0, t, **args)


def test_bad_per_sample_settings():
    with pytest.raises(ValueError, match="on_failure"):
        PerSample(on_failure="ignore")
    with pytest.raises(TypeError, match="compact"):
        PerSample(compact=1)


def test_scalar_func_t_is_a_clear_error():
    """A func that treats t as a scalar (joint-mode habit) is told that t is (B,)."""
    with pytest.raises(RuntimeError) as info:
        odeint(
            lambda t, y: y * t,
            torch.ones(3, 2, dtype=DT),
            torch.tensor([0.0, 1.0], dtype=DT),
            per_sample=True,
        )
    assert any("t a (B,) tensor" in note for note in getattr(info.value, "__notes__", []))


def test_single_output_time():
    y0 = torch.ones(2, 3, dtype=DT)
    ys = odeint(lambda t, y: -y, y0, torch.tensor([0.5], dtype=DT), per_sample=True)
    assert ys.shape == (1, 2, 3) and torch.equal(ys[0], y0)


def test_float32():
    mu = torch.tensor([0.5, 2.0])
    ys = odeint(
        vdp_field(mu),
        torch.tensor([[2.0, 0.0], [2.0, 0.0]]),
        T.float(),
        rtol=1e-5,
        atol=1e-5,
        per_sample=True,
    )
    assert ys.dtype == torch.float32
    solo = odeint(vdp_solo(2.0), torch.tensor([2.0, 0.0]), T.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ys[:, 1], solo, rtol=1e-4, atol=1e-4)
    assert math.isfinite(float(ys.sum()))


class _TimeField(torch.nn.Module):
    """A small MLP field of (y, t), row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
        ).double()

    def forward(self, t, y):
        return self.net(torch.cat([y, t[:, None]], dim=1))


def test_adjoint_gradients_match_direct_backprop():
    """Per-sample adjoint (each sample's backward solve with its own steps, per-sample (B, T) times, one
    row backwards in time) against backprop through the per-sample solve: y0, t and the parameters."""
    torch.manual_seed(0)
    field = _TimeField()
    y0 = torch.randn(4, 2, dtype=DT, requires_grad=True)
    t = torch.tensor(
        [[0.0, 0.5, 1.0], [0.0, 0.3, 2.0], [1.0, 0.0, -1.0], [0.0, 0.1, 0.2]], dtype=DT, requires_grad=True
    )
    results = []
    for solve in (odeint, nd.odeint_adjoint):
        stats = SolveStats()
        ys = solve(field, y0, t, rtol=1e-10, atol=1e-10, per_sample=True, stats=stats)
        loss = ys.square().sum() + ys[1].sum()
        results.append((torch.autograd.grad(loss, (y0, t, *field.parameters())), stats))
    (direct, _), (adjoint, stats) = results
    for d, a in zip(direct, adjoint, strict=True):
        assert float((d - a).norm() / d.norm()) < 1e-7
    assert stats.backward.n_steps.shape == (4,) and bool((stats.backward.n_steps > 0).all())


def test_adjoint_each_sample_backward_steps_its_own():
    """An easy sample's backward solve takes fewer steps than a hard one's, and its gradient is the one
    it has alone."""
    mu = torch.tensor([0.1, 8.0], dtype=DT, requires_grad=True)
    y0 = y0_of(2).requires_grad_(True)
    stats = SolveStats()
    ys = nd.odeint_adjoint(
        vdp_field(mu), y0, T, rtol=1e-8, atol=1e-8, per_sample=True, adjoint_params=(mu,), stats=stats
    )
    g_y0, g_mu = torch.autograd.grad(ys[-1].sum(), (y0, mu))
    assert int(stats.backward.n_steps[0]) < int(stats.backward.n_steps[1])
    m0 = mu.detach()[:1].clone().requires_grad_(True)
    y00 = y0_of(1).requires_grad_(True)
    alone = nd.odeint_adjoint(
        vdp_field(m0), y00, T, rtol=1e-8, atol=1e-8, per_sample=True, adjoint_params=(m0,)
    )
    a_y0, a_mu = torch.autograd.grad(alone[-1].sum(), (y00, m0))
    torch.testing.assert_close(g_y0[0], a_y0[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_mu[0], a_mu[0], rtol=1e-12, atol=1e-12)


def test_adjoint_gradients_of_the_other_samples_when_one_fails():
    """on_failure="nan": the failed sample's NaN states are not solved back; y = y0 / (1 - y0 t)."""
    y0 = torch.tensor([[0.5], [2.0]], dtype=DT, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=DT)
    ys = nd.odeint_adjoint(lambda t, y: y * y, y0, t, rtol=1e-9, atol=1e-10,
                           per_sample=PerSample(on_failure="nan"), adjoint_params=())  # fmt: skip
    assert bool(ys[2, 1].isnan().all())
    (grad,) = torch.autograd.grad(ys[:, 0].sum() + ys[:2, 1].sum(), y0)
    exact = [sum(1 / (1 - y * s) ** 2 for s in times) for y, times in ((0.5, [0, 0.4, 1.0]), (2.0, [0, 0.4]))]
    assert grad[:, 0].tolist() == pytest.approx(exact, rel=1e-6)


def test_unsupported_gradients_are_named():
    """Fixed-grid explicit methods have the adjoint and the checkpoint (test_per_sample_fixed_grid.py);
    Adams and implicit methods have no per-sample mode with any gradient."""
    y0, t = torch.ones(2, 1, dtype=DT), torch.tensor([0.0, 1.0], dtype=DT)
    for method in ("explicit_adams", "radauIIA3"):
        match = f"method='{method}' does not support per_sample=True"
        with pytest.raises(ValueError, match=match):
            nd.odeint_checkpoint(lambda t, y: -y, y0, t, method=method, per_sample=True, adjoint_params=())
        with pytest.raises(ValueError, match=match):
            nd.odeint_adjoint(lambda t, y: -y, y0, t, method=method, per_sample=True, adjoint_params=())


def test_answer_in_a_large_batch_equals_its_solo_solve_to_rounding():
    """In a 256-sample batch torch may order a reduction differently than for one row: equal to rounding."""
    mu = torch.logspace(-1, 1, 256, dtype=DT)
    ys = odeint(vdp_field(mu), y0_of(256), T, rtol=1e-7, atol=1e-7, per_sample=True)
    for b in (0, 97, 255):
        alone = odeint(vdp_field(mu[b : b + 1]), y0_of(1), T, rtol=1e-7, atol=1e-7, per_sample=True)
        torch.testing.assert_close(ys[:, b], alone[:, 0], rtol=1e-12, atol=1e-12)
