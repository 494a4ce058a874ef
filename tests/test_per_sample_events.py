"""Per-sample events (issue 21): every sample stops at its own first crossing of event_fn, with
gradients through each event time; checked against closed forms, the joint odeint_event, finite
differences (gradcheck) and the sample solved alone."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuralode import PerSample, PerSampleSolveError, SolveStats, odeint, odeint_adjoint, odeint_event
from neuralode.odeint import odeint_checkpoint

F64 = torch.float64
G = 9.81
TOL = {"rtol": 1e-10, "atol": 1e-12}


class Balls(torch.nn.Module):
    """y = (height, velocity) per sample, falling with gravity g (a parameter)."""

    def __init__(self, g: float = G) -> None:
        super().__init__()
        self.g = torch.nn.Parameter(torch.tensor(g, dtype=F64))

    def forward(self, t, y):
        return torch.stack([y[:, 1], -self.g * torch.ones_like(y[:, 1])], dim=1)


def ground(t, y):
    return y[:, 0]


def hit_time(h, v, g=G, reverse=False):
    """h + v t - g t^2 / 2 = 0: the positive root forwards, the negative one backwards."""
    root = math.sqrt(v * v + 2 * g * h)
    return (v - root) / g if reverse else (v + root) / g


def balls(h, v):
    return torch.stack([torch.as_tensor(h, dtype=F64), torch.as_tensor(v, dtype=F64)], dim=1)


H = [1.0, 2.0, 0.5, 3.0, 0.05]
V = [0.0, 1.0, -2.0, 4.0, 0.3]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dopri8", "bosh3"])
@pytest.mark.parametrize("interface", [odeint, odeint_adjoint], ids=["odeint", "adjoint"])
def test_falling_balls_hit_the_ground_at_their_closed_form_times(interface, method, reverse):
    stats = SolveStats()
    event_t, ys = odeint_event(Balls(), balls(H, V), 0.0, event_fn=ground, reverse_time=reverse,
                               odeint_interface=interface, method=method, per_sample=True, stats=stats,
                               **TOL)  # fmt: skip
    exact = [hit_time(h, v, reverse=reverse) for h, v in zip(H, V, strict=True)]
    assert event_t.shape == (5,) and ys.shape == (2, 5, 2)
    assert event_t.tolist() == pytest.approx(exact, abs=1e-9)
    torch.testing.assert_close(ys[0], balls(H, V), rtol=0, atol=0)
    assert ys[1, :, 0].abs().max() < 1e-9
    speed = [v - G * te for v, te in zip(V, exact, strict=True)]
    assert ys[1, :, 1].tolist() == pytest.approx(speed, abs=1e-8)
    assert stats.status == ("success",) * 5


def test_each_sample_matches_the_joint_odeint_event():
    event_t, ys = odeint_event(Balls(), balls(H, V), 0.0, event_fn=ground, per_sample=True, **TOL)
    for b, (h, v) in enumerate(zip(H, V, strict=True)):
        joint_t, joint_ys = odeint_event(
            lambda t, y: torch.stack([y[1], -G * torch.ones_like(y[1])]), torch.tensor([h, v], dtype=F64),
            0.0, event_fn=lambda t, y: y[0], **TOL,
        )  # fmt: skip
        assert event_t[b].item() == pytest.approx(joint_t.item(), abs=1e-11)
        torch.testing.assert_close(ys[:, b], joint_ys, rtol=0, atol=1e-10)


@given(
    h=st.lists(st.floats(0.01, 10.0), min_size=2, max_size=5),
    g=st.floats(1.0, 20.0),
    compact=st.booleans(),
)
@settings(max_examples=15, deadline=None)
def test_a_sample_does_not_depend_on_its_batch_companions(h, g, compact):
    """Bit for bit: each sample's event time and state equal those of the sample solved alone."""
    config = PerSample(compact=compact)
    y0 = balls(h, [0.0] * len(h))
    event_t, ys = odeint_event(Balls(g), y0, 0.0, event_fn=ground, per_sample=config, rtol=1e-8, atol=1e-10)
    for b in range(len(h)):
        alone_t, alone_ys = odeint_event(Balls(g), y0[b : b + 1], 0.0, event_fn=ground, per_sample=config,
                                         rtol=1e-8, atol=1e-10)  # fmt: skip
        assert event_t[b].item() == alone_t[0].item()
        assert torch.equal(ys[:, b], alone_ys[:, 0])
        assert event_t[b].item() == pytest.approx(math.sqrt(2 * h[b] / g), abs=1e-7)


def test_finished_samples_stop_stepping():
    """With compaction, a sample that found its event early costs fewer evaluations than a late one."""
    stats = SolveStats()
    odeint_event(Balls(), balls([0.01, 100.0], [0.0, 0.0]), 0.0, event_fn=ground,
                 per_sample=PerSample(compact=True), stats=stats, **TOL)  # fmt: skip
    nfe, steps = stats.forward.nfe.tolist(), stats.forward.n_steps.tolist()
    assert steps[0] < steps[1] and nfe[0] < nfe[1]


@pytest.mark.parametrize("interface", [odeint, odeint_adjoint], ids=["odeint", "adjoint"])
def test_event_time_and_state_gradients_match_the_closed_form(interface):
    """tau = (v + s) / g, s = sqrt(v^2 + 2 g h); v(tau) = -s."""
    func = Balls()
    y0 = balls(H, V).requires_grad_(True)
    extra = {"adjoint_params": (func.g,)} if interface is odeint_adjoint else {}
    event_t, ys = odeint_event(func, y0, 0.0, event_fn=ground, per_sample=True, odeint_interface=interface,
                               **TOL, **extra)  # fmt: skip
    d_y0, d_g = torch.autograd.grad(event_t.sum(), (y0, func.g), retain_graph=True)
    s = [math.sqrt(v * v + 2 * G * h) for h, v in zip(H, V, strict=True)]
    assert d_y0[:, 0].tolist() == pytest.approx([1 / si for si in s], rel=1e-6)
    d_v = [(1 + v / si) / G for v, si in zip(V, s, strict=True)]
    assert d_y0[:, 1].tolist() == pytest.approx(d_v, rel=1e-6)
    exact_g = sum(-(v + si) / G**2 + h / (G * si) for h, v, si in zip(H, V, s, strict=True))
    assert float(d_g) == pytest.approx(exact_g, rel=1e-6)
    # the impact speed -s: d/dh = -g / s, d/dv = -v / s, d/dg = -h / s
    d_y0, d_g = torch.autograd.grad(ys[1, :, 1].sum(), (y0, func.g))
    assert d_y0[:, 0].tolist() == pytest.approx([-G / si for si in s], rel=1e-6)
    assert d_y0[:, 1].tolist() == pytest.approx([-v / si for v, si in zip(V, s, strict=True)], rel=1e-6)
    assert float(d_g) == pytest.approx(sum(-h / si for h, si in zip(H, s, strict=True)), rel=1e-6)


@pytest.mark.parametrize("interface", [odeint, odeint_adjoint], ids=["odeint", "adjoint"])
def test_gradcheck_of_per_sample_event_times(interface):
    """A nonlinear field (y' = -k y^2 + sin t per sample) and an event_fn with its own parameter."""

    def run(y0, k, level):
        def f(t, y):
            return -k[:, None] * y * y + torch.sin(t)[:, None] * 0.1

        extra = {"adjoint_params": (k,)} if interface is odeint_adjoint else {}
        event_t, ys = odeint_event(f, y0, 0.0, event_fn=lambda t, y: y[:, 0] - level, per_sample=True,
                                   odeint_interface=interface, **TOL, **extra)  # fmt: skip
        return event_t, ys[1]

    y0 = torch.tensor([[1.0], [2.0], [1.5]], dtype=F64, requires_grad=True)
    k = torch.tensor([1.0, 0.5, 2.0], dtype=F64, requires_grad=True)
    level = torch.tensor(0.6, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (y0, k, level), atol=1e-6)


def test_gradient_with_respect_to_per_sample_start_times():
    """Autonomous balls: starting later shifts each event time by as much, the impact state not at all."""
    t0 = torch.tensor([0.0, 0.3, -1.0], dtype=F64, requires_grad=True)
    event_t, ys = odeint_event(Balls(), balls(H[:3], V[:3]), t0, event_fn=ground, per_sample=True, **TOL)
    exact = [s + hit_time(h, v) for s, h, v in zip([0.0, 0.3, -1.0], H, V, strict=False)]
    assert event_t.tolist() == pytest.approx(exact, abs=1e-9)
    (d_t0,) = torch.autograd.grad(event_t.sum(), t0, retain_graph=True)
    assert d_t0.tolist() == pytest.approx([1.0] * 3, abs=1e-8)
    (d_t0,) = torch.autograd.grad(ys[1, :, 1].sum(), t0)
    assert d_t0.tolist() == pytest.approx([0.0] * 3, abs=1e-8)


def test_the_first_of_several_event_entries_ends_each_sample():
    """(B, 2) values: the apex (v = 0) comes first for a ball thrown up, the ground for one thrown down."""
    y0 = (torch.tensor([[1.0], [1.0]], dtype=F64), torch.tensor([[2.0], [-1.0]], dtype=F64))

    def f(t, y):
        return (y[1], -G * torch.ones_like(y[1]))

    event_t, (h, v) = odeint(f, y0, torch.tensor([0.0], dtype=F64), per_sample=True, **TOL,
                             event_fn=lambda t, y: torch.cat([y[0], y[1]], dim=1))  # fmt: skip
    assert event_t.tolist() == pytest.approx([2.0 / G, hit_time(1.0, -1.0)], abs=1e-9)
    assert h.shape == v.shape == (2, 2, 1)
    assert abs(float(v[1, 0, 0])) < 1e-9 and abs(float(h[1, 1, 0])) < 1e-9


def test_a_sample_that_never_crosses_fails_by_on_failure():
    """y' = -y decays towards 0: sample 1's level -1 is never crossed; the others are returned with
    on_failure='nan'."""
    y0 = torch.ones(3, 1, dtype=F64)
    levels = torch.tensor([0.5, -1.0, 0.25], dtype=F64)

    def event_fn(t, y):
        return y[:, 0] - levels

    match = r"^1 of 3 samples failed: sample 1 .*event_fn never"
    with pytest.raises(PerSampleSolveError, match=match) as info:
        odeint_event(lambda t, y: -y, y0, 0.0, event_fn=event_fn, per_sample=True)
    assert info.value.samples == [1] and info.value.reasons == ["max_num_steps"]
    stats = SolveStats()
    event_t, ys = odeint_event(lambda t, y: -y, y0, 0.0, event_fn=event_fn, stats=stats,
                               per_sample=PerSample(on_failure="nan"), options={"max_num_steps": 50},
                               **TOL)  # fmt: skip
    assert stats.status == ("success", "max_num_steps", "success")
    assert math.isnan(event_t[1]) and bool(ys[1, 1].isnan().all())
    assert [event_t[0].item(), event_t[2].item()] == pytest.approx([math.log(2), math.log(4)], abs=1e-9)
    assert ys[1, [0, 2], 0].tolist() == pytest.approx([0.5, 0.25], abs=1e-10)
    assert int(stats.forward.n_steps[1]) == 50
    torch.testing.assert_close(ys[0], y0, rtol=0, atol=0)


def test_a_resting_sample_stops_before_its_time_overflows():
    y0 = torch.tensor([[1.0], [1.0]], dtype=F64)
    stats = SolveStats()
    event_t, _ = odeint_event(lambda t, y: torch.cat([-torch.ones_like(y[:1]), torch.zeros_like(y[1:])]), y0,
                              0.0, event_fn=lambda t, y: y[:, 0] - 0.5, stats=stats,
                              per_sample=PerSample(on_failure="nan"))  # fmt: skip
    assert event_t[0].item() == pytest.approx(0.5, abs=1e-9) and math.isnan(event_t[1])
    assert stats.status == ("success", "max_num_steps")


BAD = [
    ({"t": torch.tensor([0.0, 1.0, 2.0], dtype=F64)}, ValueError, r"^with event_fn, t must be \[t0\] or"),
    ({"event_fn": 3}, TypeError, r"^event_fn must be callable"),
    ({"event_fn": lambda t, y: y[:1, 0]}, ValueError, r"must return shape \(B,\) or \(B, K\) with B = 2"),
    ({"event_fn": lambda t, y: y[:, 0] > 0}, TypeError, r"must return a real floating-point tensor"),
    ({"event_fn": lambda t, y: y[:, 0] * math.nan}, ValueError, r"NaN or infinite values"),
    ({"method": "rk4"}, ValueError, r"fixed-grid method 'rk4' needs options=\{'step_size': h\}"),
    ({"method": "explicit_adams"}, ValueError, r"method='explicit_adams' does not support per_sample=True"),
]


@pytest.mark.parametrize(("change", "exc", "match"), BAD)
def test_bad_per_sample_event_input_is_refused_before_any_step(change, exc, match):
    calls = []

    def f(t, y):
        calls.append(t)
        return -y

    args = {"t": torch.tensor([0.0], dtype=F64), "event_fn": lambda t, y: y[:, 0] - 0.5, **change}
    with pytest.raises(exc, match=match):
        odeint(f, torch.ones(2, 1, dtype=F64), per_sample=True, **args)
    assert not calls


def test_odeint_event_start_times_and_checkpoint_are_checked():
    with pytest.raises(ValueError, match=r"t0 must be a single time \(or, with per_sample=True, a \(B,\)"):
        odeint_event(Balls(), balls(H, V), torch.zeros(2, 2, dtype=F64), event_fn=ground, per_sample=True)
    with pytest.raises(ValueError, match=r"shape \(T,\) \(shared\) or \(B, T\)"):
        odeint_event(Balls(), balls(H, V), torch.zeros(3, dtype=F64), event_fn=ground, per_sample=True)
    with pytest.raises(ValueError, match=r"does not support event_fn"):
        odeint_checkpoint(Balls(), balls(H, V), torch.tensor([0.0], dtype=F64), event_fn=ground,
                          per_sample=True, adjoint_params=())  # fmt: skip


@pytest.mark.parametrize("interface", [odeint, odeint_adjoint], ids=["odeint", "adjoint"])
def test_gradients_of_the_found_events_with_a_failed_sample(interface):
    """y' = -y, event y = c: tau = log(y0 / c), so d(tau + y(tau))/dy0 = 1 / y0; sample 1 never crosses."""
    levels = torch.tensor([0.5, -1.0, 0.25], dtype=F64)
    y0 = torch.tensor([[1.0], [1.0], [2.0]], dtype=F64, requires_grad=True)
    extra = {"adjoint_params": ()} if interface is odeint_adjoint else {}
    event_t, ys = odeint_event(lambda t, y: -y, y0, 0.0, event_fn=lambda t, y: y[:, 0] - levels,
                               per_sample=PerSample(on_failure="nan"), odeint_interface=interface, **TOL,
                               **extra)  # fmt: skip
    found = [0, 2]
    (grad,) = torch.autograd.grad(event_t[found].sum() + ys[1, found, 0].sum(), y0)
    assert grad[:, 0].tolist() == pytest.approx([1.0, 0.0, 0.5], rel=1e-7, abs=1e-12)


def test_a_sample_starting_on_the_event_surface_waits_for_its_next_crossing():
    """Ball 0 starts on the ground moving up: its event is the landing at 2 v / g (the joint rule)."""
    event_t, _ = odeint_event(Balls(), balls([0.0, 1.0], [2.0, 0.0]), 0.0, event_fn=ground, per_sample=True,
                              **TOL)  # fmt: skip
    assert event_t.tolist() == pytest.approx([4.0 / G, math.sqrt(2.0 / G)], abs=1e-9)
