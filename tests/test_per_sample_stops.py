"""options jump_t / step_t with per_sample=True (issue 21): every sample's steps end on each stop inside
its own span, func is seen from inside the step at a jump_t and evaluated again after it, as in the
joint engine. References: each sample solved alone in joint mode with the same options (same steps,
answers and gradients to rounding or tolerance), the closed-form solution, direct backprop for the
adjoint and the checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

import neuralode as nd
from neuralode import SolveStats, odeint
from neuralode.solvers import SOLVERS

from .conftest import EXPLICIT_ADAPTIVE_METHODS

F64 = torch.float64
T = torch.linspace(0.0, 2.0, 5, dtype=F64)
JUMP = {"jump_t": torch.tensor([1.0], dtype=F64)}
BOTH = {"jump_t": torch.tensor([1.0, 5.0], dtype=F64), "step_t": torch.tensor([0.3, 1.0, 1.37], dtype=F64)}


def switched(k: torch.Tensor, per_sample: bool = True):
    """y' = -k y^2 + 3 k [t >= 1]: func jumps at t = 1 (one k per row, or a single k)."""
    if per_sample:
        return lambda t, y: -k[:, None] * y * y + (t >= 1.0).to(y.dtype)[:, None] * 3.0 * k[:, None]
    return lambda t, y: -k * y * y + (t >= 1.0).to(y.dtype) * 3.0 * k


def switched_rows(k: torch.Tensor):
    """switched for PerSample(compact=True, with_rows=True): func is given the rows it evaluates."""
    return lambda t, y, rows: -k[rows, None] * y * y + (t >= 1.0).to(y.dtype)[:, None] * 3.0 * k[rows, None]


K = torch.tensor([0.5, 1.0, 2.0], dtype=F64)


def exact(k: float, t: float) -> float:
    """switched's solution from y(0) = 1: 1 / (1 + k t) before t = 1, then the Riccati solution
    sqrt(3) tanh(sqrt(3) k (t - 1) + atanh(y(1) / sqrt(3)))."""
    if t < 1.0:
        return 1.0 / (1.0 + k * t)
    r = math.sqrt(3.0)
    return r * math.tanh(r * k * (t - 1.0) + math.atanh(1.0 / (1.0 + k) / r))


@pytest.mark.parametrize("options", [JUMP, {"step_t": BOTH["step_t"]}, BOTH], ids=["jump", "step", "both"])
@pytest.mark.parametrize("method", EXPLICIT_ADAPTIVE_METHODS)
def test_each_sample_takes_its_solo_joint_steps(method, options):
    # the second-order pairs at a looser tolerance: at 1e-8 adaptive_heun takes 10,000-25,000 steps a row
    tableau = SOLVERS[method].tableau
    rtol = 1e-5 if tableau.order <= 2 else 1e-8
    y0 = torch.ones(3, 1, dtype=F64)
    stats = SolveStats()
    # compact: func sees only the rows that step (its evaluations per row are then the solo solve's)
    ys = odeint(switched_rows(K), y0, T, rtol=rtol, atol=rtol / 10, method=method, options=options,
                per_sample=nd.PerSample(compact=True, with_rows=True), stats=stats)  # fmt: skip
    for b in range(3):
        solo_stats = SolveStats()
        solo = odeint(switched(K[b], False), y0[b], T, rtol=rtol, atol=rtol / 10, method=method,
                      options=options, stats=solo_stats)  # fmt: skip
        assert int(stats.forward.n_steps[b]) == solo_stats.forward.n_steps
        assert int(stats.forward.n_accepted[b]) == solo_stats.forward.n_accepted
        # the evaluations too, where the engine spends none on rows that do not need them (without FSAL
        # every running row gets f(t1, y1) when any row accepts; dopri8's interpolant's extra stages)
        if tableau.fsal and not (tableau.dense is not None and tableau.dense.extra_c):
            assert int(stats.forward.nfe[b]) == solo_stats.forward.nfe
        # to rounding, accumulated over the steps that cross a discontinuity without a jump_t
        torch.testing.assert_close(ys[:, b], solo, rtol=1e-10, atol=1e-11)


def test_a_jump_saves_the_rejections_a_discontinuity_costs():
    """Without jump_t the error test rejects step after step where func jumps (30-40 per row here); with
    it every row's steps end on t = 1 and only the smooth pieces are stepped over. The saving is about
    the same for every row, not a fixed fraction of its steps: the row with k = 2 needs about 58 accepted
    steps on the smooth pieces anyway (113 steps without jump_t, 60 with it, alone in joint mode too)."""
    y0 = torch.ones(3, 1, dtype=F64)
    counts, ends = [], []
    for options in (None, JUMP):
        stats = SolveStats()
        ys = odeint(switched(K), y0, T, rtol=1e-8, atol=1e-9, options=options, per_sample=True, stats=stats)
        counts.append((stats.forward.n_steps, stats.forward.n_rejected))
        ends.append(ys[-1, :, 0])
        for b in range(3):  # the reference: each sample alone in joint mode, with the same options
            solo = SolveStats()
            odeint(switched(K[b], False), y0[b], T, rtol=1e-8, atol=1e-9, options=options, stats=solo)
            assert (int(stats.forward.n_steps[b]), int(stats.forward.n_rejected[b])) == (
                solo.forward.n_steps,
                solo.forward.n_rejected,
            )
    (steps, rejected), (steps_jump, rejected_jump) = counts
    assert bool((rejected_jump * 10 < rejected).all()), counts
    assert bool((steps_jump + rejected - rejected_jump <= steps).all()), counts  # no step spent elsewhere
    truth = torch.tensor([exact(float(k), 2.0) for k in K], dtype=F64)
    torch.testing.assert_close(ends[1], truth, rtol=1e-7, atol=1e-8)


def test_stops_outside_a_samples_span_are_ignored_and_directions_differ():
    """Row 0 forwards over every stop but 5 (1.37 is its end: not a stop); row 1 backwards over
    [-0.3, 0.25], no stop inside (the solve without options); row 2 backwards across the jump, with an
    output time on the stop 1.37."""
    t = torch.tensor([[0.0, 0.5, 1.37], [0.25, 0.0, -0.3], [2.0, 1.37, 0.5]], dtype=F64)
    y0 = torch.ones(3, 1, dtype=F64)
    stats = SolveStats()
    ys = odeint(switched(K), y0, t, rtol=1e-9, atol=1e-10, options=BOTH, per_sample=True, stats=stats)
    for b in range(3):
        solo_stats = SolveStats()
        solo = odeint(
            switched(K[b], False), y0[b], t[b], rtol=1e-9, atol=1e-10, options=BOTH, stats=solo_stats
        )
        assert int(stats.forward.n_steps[b]) == solo_stats.forward.n_steps
        torch.testing.assert_close(ys[:, b], solo, rtol=1e-12, atol=1e-13)
    plain = odeint(switched(K), y0, t, rtol=1e-9, atol=1e-10, per_sample=True)
    assert torch.equal(ys[:, 1], plain[:, 1])  # bit for bit: row 1 has no stop
    assert ys[2, 0, 0].item() == pytest.approx(exact(0.5, 1.37), rel=1e-8)


def grads(solve, k, y0, t, per_sample=True, **kwargs):
    kk, yy, tt = (x.clone().requires_grad_(True) for x in (k, y0, t))
    extra = {} if solve is odeint else {"adjoint_params": (kk,)}
    if per_sample:
        extra["per_sample"] = True
    ys = solve(switched(kk, per_sample), yy, tt, rtol=1e-10, atol=1e-10, options=BOTH, **extra, **kwargs)
    return torch.autograd.grad(ys.square().sum(), (yy, kk, tt))


def test_adjoint_with_stops_matches_direct_backprop_and_each_solo_adjoint():
    """The backward solve stops at the same times; after a jump (backwards: before it) the parameter
    integral's first stage is evaluated where the state's derivative was, just past the jump."""
    y0 = torch.ones(3, 1, dtype=F64)
    t = torch.tensor([[0.0, 0.5, 1.5, 2.0], [0.0, 0.7, 1.2, 2.5], [2.0, 1.5, 0.5, 0.0]], dtype=F64)
    direct = grads(odeint, K, y0, t)
    adjoint = grads(nd.odeint_adjoint, K, y0, t)
    for d, a in zip(direct, adjoint, strict=True):
        assert float((d - a).norm() / d.norm()) < 1e-8
    for b in range(3):
        solo = grads(nd.odeint_adjoint, K[b], y0[b], t[b], per_sample=False)
        for s, a in zip(solo, adjoint, strict=True):
            torch.testing.assert_close(a[b], s, rtol=1e-8, atol=1e-9)


def test_an_event_after_a_jump_matches_the_solo_joint_event():
    """y' = -1 before t = 1, +2 after it: the level 0.5 is crossed before the jump; 1.2 before it (row
    0) or after it (rows 1 and 2)."""
    y0 = torch.tensor([[0.8], [0.6], [0.9]], dtype=F64)

    def f(t, y):
        return torch.where(t[:, None] >= 1.0, 2.0, -1.0) * torch.ones_like(y)

    event_t, _ = nd.odeint_event(f, y0, 0.0, event_fn=lambda t, y: y[:, 0] - 0.5, per_sample=True,
                                  options=JUMP, rtol=1e-10, atol=1e-10)  # fmt: skip
    exact = [0.3, 0.1, 0.4]
    assert event_t.tolist() == pytest.approx(exact, abs=1e-9)
    levels = torch.tensor([[2.0], [0.6], [0.5]], dtype=F64)
    event_t, _ = nd.odeint_event(f, levels, 0.0, event_fn=lambda t, y: y[:, 0] - 1.2, per_sample=True,
                                  options=JUMP, rtol=1e-10, atol=1e-10)  # fmt: skip
    for b in range(3):
        solo_t, _ = nd.odeint_event(
            lambda t, y: torch.where(t >= 1.0, 2.0, -1.0) * torch.ones_like(y), levels[b], 0.0,
            event_fn=lambda t, y: y[0] - 1.2, options=JUMP, rtol=1e-10, atol=1e-10,
        )  # fmt: skip
        assert event_t[b].item() == pytest.approx(solo_t.item(), abs=1e-10)
    # 2 falls to 1.2 at t = 0.8; 0.6 falls to -0.4 at t = 1 and rises to 1.2 at 1.8; 0.5: -0.5, 1.85
    assert event_t.tolist() == pytest.approx([0.8, 1.8, 1.85], abs=1e-9)


@pytest.mark.parametrize("options", [{"step_t": BOTH["step_t"]}, BOTH], ids=["step", "both"])
def test_checkpoint_replays_the_stops_and_jumps_as_direct_backprop(options):
    """Every recorded step is replayed as it was taken: at a jump_t its last stages from inside the step
    and the next derivative from past the jump, where a piece starts just after one (every = 1: each
    piece one step) and inside a piece (every = 1000: one piece). Row 2 runs backwards, so f at t = 1
    itself, or the FSAL stage from inside the step, would be the wrong side's."""
    y0 = torch.ones(3, 1, dtype=F64)
    t = torch.tensor([[0.0, 0.5, 1.5, 2.0], [0.0, 0.7, 1.2, 2.5], [2.0, 1.5, 0.5, 0.0]], dtype=F64)
    results = []
    for solve, extra in (
        (odeint, {}),
        *((nd.odeint_checkpoint, {"checkpoint_every": e}) for e in (1, 4, 1000)),
    ):
        kk, yy = K.clone().requires_grad_(True), y0.clone().requires_grad_(True)
        extra = {**extra, "adjoint_params": (kk,)} if extra else extra
        ys = solve(switched(kk), yy, t, rtol=1e-9, atol=1e-9, options=options, per_sample=True, **extra)
        results.append((ys.detach(), *torch.autograd.grad(ys.square().sum(), (yy, kk))))
    direct = results[0]
    assert bool(direct[2].abs().min() > 0.01)
    for replayed in results[1:]:
        assert torch.equal(replayed[0], direct[0])  # the same solve, bit for bit
        for d, c in zip(direct[1:], replayed[1:], strict=True):
            torch.testing.assert_close(c, d, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"jump_t": [1.0]}, r"options\['jump_t'\] must be a 1-D tensor of times"),
        ({"step_t": torch.ones(2, 2, dtype=F64)}, r"options\['step_t'\] must be a 1-D tensor of times"),
        ({"step_t": torch.tensor(1.0, dtype=F64)}, r"options\['step_t'\] must be a 1-D tensor of times"),
        ({"jump_t": torch.tensor([1.0, float("nan")])}, r"options\['jump_t'\] contains NaN or infinite"),
        ({"step_t": torch.tensor([float("inf")])}, r"options\['step_t'\] contains NaN or infinite"),
    ],
)
@pytest.mark.parametrize("solve", [odeint, nd.odeint_adjoint, nd.odeint_checkpoint])
def test_bad_stops_are_named_before_func_is_called(solve, options, match):
    calls = []

    def f(t, y):
        calls.append(t)
        return -y

    extra = {} if solve is odeint else {"adjoint_params": ()}
    with pytest.raises(ValueError, match=match):
        solve(f, torch.ones(3, 1, dtype=F64), T, options=options, per_sample=True, **extra)
    if solve is nd.odeint_adjoint:  # and in adjoint_options, for the backward solve
        with pytest.raises(ValueError, match=match.replace("options", "adjoint_options")):
            solve(f, torch.ones(3, 1, dtype=F64), T, adjoint_options=options, per_sample=True, **extra)
    assert calls == []
