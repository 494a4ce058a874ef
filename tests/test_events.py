"""Events: a bouncing ball against its closed form, both directions in time, with gradients."""

from __future__ import annotations

import math

import pytest
import torch

from neuralode import odeint, odeint_adjoint, odeint_event

F64 = torch.float64
H0, V0, G = 1.0, 2.0, 9.81


def ball(g):
    return lambda t, y: torch.stack([y[1], -g * torch.ones_like(y[1])])


def ground(t, y):
    return y[0]


def exact_hit(h0=H0, v0=V0, g=G, reverse=False):
    """The time h0 + v0 t - g t^2 / 2 = 0 forwards (the positive root) or backwards (negative)."""
    root = math.sqrt(v0 * v0 + 2 * g * h0)
    return (v0 - root) / g if reverse else (v0 + root) / g


METHODS = [
    ("dopri5", None),
    ("tsit5", None),
    ("rk4", {"step_size": 0.05, "interp": "cubic"}),
    ("explicit_adams", {"step_size": 0.05, "interp": "cubic"}),
    ("radauIIA5", {"step_size": 0.05, "interp": "cubic"}),
]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize(("method", "options"), METHODS)
@pytest.mark.parametrize("solve", [odeint, odeint_adjoint], ids=["odeint", "adjoint"])
def test_bouncing_ball_event_time_matches_the_closed_form(solve, method, options, reverse):
    y0 = torch.tensor([H0, V0], dtype=F64)
    t = torch.tensor([0.0, -1.0 if reverse else 1.0], dtype=F64)
    kwargs = {"adjoint_params": ()} if solve is odeint_adjoint else {}
    event_t, ys = solve(ball(G), y0, t, event_fn=ground, method=method, options=options, **kwargs)
    assert ys.shape == (2, 2)
    assert float(event_t) == pytest.approx(exact_hit(reverse=reverse), abs=1e-10)
    assert abs(float(ys[-1, 0])) < 1e-9
    assert float(ys[-1, 1]) == pytest.approx(V0 - G * exact_hit(reverse=reverse), abs=1e-8)
    torch.testing.assert_close(ys[0], y0)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_odeint_event_convenience_form(reverse):
    y0 = torch.tensor([H0, V0], dtype=F64)
    event_t, _ = odeint_event(
        ball(G), y0, torch.tensor(0.0, dtype=F64), event_fn=ground, reverse_time=reverse
    )
    assert float(event_t) == pytest.approx(exact_hit(reverse=reverse), abs=1e-10)


@pytest.mark.parametrize(
    ("method", "options"), [("dopri5", None), ("rk4", {"step_size": 0.05, "interp": "cubic"})]
)
@pytest.mark.parametrize("solve", [odeint, odeint_adjoint], ids=["odeint", "adjoint"])
def test_gradcheck_of_the_event_time(solve, method, options):
    class Ball(torch.nn.Module):
        def __init__(self, g):
            super().__init__()
            self.g = g

        def forward(self, t, y):
            return torch.stack([y[1], -self.g * torch.ones_like(y[1])])

    def event_time(y0, g, floor):
        extra = {"adjoint_params": (g,)} if solve is odeint_adjoint else {}
        t = torch.tensor([0.0, 1.0], dtype=F64)
        event_t, ys = solve(Ball(g), y0, t, event_fn=lambda t, y: y[0] - floor, method=method,
                            options=options, rtol=1e-10, atol=1e-12, **extra)  # fmt: skip
        return event_t, ys[-1]

    y0 = torch.tensor([H0, V0], dtype=F64, requires_grad=True)
    g = torch.tensor(G, dtype=F64, requires_grad=True)
    floor = torch.tensor(0.2, dtype=F64, requires_grad=True)  # a parameter of event_fn itself
    assert torch.autograd.gradcheck(event_time, (y0, g, floor), atol=1e-6)
    # and against the closed form dtau/dh0 = 1 / sqrt(v0^2 + 2 g (h0 - floor))
    event_t, _ = event_time(y0, g, floor)
    (d_h0,) = torch.autograd.grad(event_t, y0)
    assert float(d_h0[0]) == pytest.approx(1 / math.sqrt(V0**2 + 2 * G * (H0 - 0.2)), rel=1e-6)


def test_event_on_a_tuple_state_with_a_vector_event_fn():
    """The first of several events ends the solve (here the ball reaches its apex before the ground)."""
    y0 = (torch.tensor([H0], dtype=F64), torch.tensor([V0], dtype=F64))

    def f(t, y):
        return (y[1], -G * torch.ones_like(y[1]))

    event_t, (h, v) = odeint(
        f, y0, torch.tensor([0.0], dtype=F64), event_fn=lambda t, y: torch.cat([y[0], y[1]])
    )
    assert float(event_t) == pytest.approx(V0 / G, abs=1e-10)
    assert h.shape == v.shape == (2, 1)
    assert abs(float(v[-1, 0])) < 1e-9


def test_event_t_with_more_than_two_times_raises_before_work():
    with pytest.raises(ValueError, match=r"^with event_fn, t must be \[t0\] or \[t0, t1\]"):
        odeint(ball(G), torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0, 2.0], dtype=F64), event_fn=ground)


def test_event_with_grid_constructor_raises_and_asks_for_step_size():
    with pytest.raises(ValueError, match=r"needs options=\{'step_size': h\}"):
        odeint(ball(G), torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), event_fn=ground,
               method="rk4", options={"grid_constructor": lambda f, y, t: t})  # fmt: skip


@pytest.mark.parametrize("solve", [odeint, odeint_adjoint], ids=["odeint", "adjoint"])
def test_gradient_with_respect_to_the_start_time(solve):
    """The ball is autonomous: starting later shifts the event by the same amount, the state not at all."""
    t = torch.tensor([0.3, 1.0], dtype=F64, requires_grad=True)
    kwargs = {"adjoint_params": ()} if solve is odeint_adjoint else {}
    event_t, ys = solve(ball(G), torch.tensor([H0, V0], dtype=F64), t, event_fn=ground, **kwargs)
    assert float(event_t.detach()) == pytest.approx(0.3 + exact_hit(), abs=1e-10)
    (d_t,) = torch.autograd.grad(event_t, t, retain_graph=True)
    assert d_t.tolist() == pytest.approx([1.0, 0.0], abs=1e-8)
    (d_v,) = torch.autograd.grad(ys[-1, 1], t)
    assert d_v.tolist() == pytest.approx([0.0, 0.0], abs=1e-8)


# ----- issue 16: every event search ends, with a clear error -----

import time  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from neuralode import EventNotFoundError, MaxStepsExceededError, SolveStats  # noqa: E402

NEVER = [
    ("dopri5", None),
    ("tsit5", None),
    ("rk4", {"step_size": 0.1}),
    ("euler", {"step_size": 0.1}),
    ("scipy_solver", {"solver": "RK45"}),
]


@pytest.mark.parametrize(("method", "options"), NEVER, ids=[m for m, _ in NEVER])
def test_an_event_that_is_never_reached_fails_fast_saying_so(method, options):
    # the example: y decays to 0, y[0] + 1 never changes sign (181 s and 6,000,002 evaluations before)
    stats = SolveStats()
    start = time.perf_counter()
    with pytest.raises(
        EventNotFoundError, match=r"^event_fn never changed sign: .*max_num_steps=1,000 steps"
    ) as info:
        odeint(lambda t, y: -y, torch.tensor([1.0, 2.0]), torch.tensor([0.0]), method=method,
               options=options, event_fn=lambda t, y: y[0] + 1, stats=stats)  # fmt: skip
    assert time.perf_counter() - start < 5.0  # about 0.1 s on a quiet machine
    assert isinstance(info.value, MaxStepsExceededError)
    assert stats.forward.n_steps <= 1_000
    assert "direction" in str(info.value) and f"t={info.value.t!r}" in str(info.value)


@pytest.mark.parametrize(("method", "options"), NEVER, ids=[m for m, _ in NEVER])
@given(n=st.integers(1, 60), backwards=st.booleans())
@settings(max_examples=10)
def test_max_num_steps_bounds_every_event_search(method, options, n, backwards):
    stats = SolveStats()
    t = torch.tensor([0.0, -1.0 if backwards else 1.0])
    with pytest.raises(EventNotFoundError, match=f"max_num_steps={n} steps"):
        odeint(lambda t, y: torch.cos(t) * torch.ones_like(y), torch.tensor([0.5]), t, method=method,
               options={**(options or {}), "max_num_steps": n}, event_fn=lambda t, y: y[0] + 10,
               stats=stats)  # fmt: skip
    assert stats.forward.n_steps <= n


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "dopri8"])
def test_a_resting_state_without_crossing_stops_before_time_overflows(dtype, method):
    # dy/dt = 0: the step grew tenfold per step until "value cannot be converted to type float without
    # overflow"
    with pytest.raises(EventNotFoundError, match=r"time would overflow") as info:
        odeint(lambda t, y: torch.zeros_like(y), torch.tensor([1.0, 2.0], dtype=dtype), torch.tensor([0.0]),
               method=method, event_fn=lambda t, y: y[0] + 1)  # fmt: skip
    assert math.isfinite(info.value.t) and abs(info.value.t) < torch.finfo(dtype).max


def test_a_resting_state_on_a_fixed_grid_stops_before_time_overflows():
    with pytest.raises(EventNotFoundError, match=r"time would overflow"):
        odeint(lambda t, y: torch.zeros_like(y), torch.tensor([1.0]), torch.tensor([0.0]), method="euler",
               options={"step_size": 1e36, "max_num_steps": 10_000},
               event_fn=lambda t, y: y[0] + 1)  # fmt: skip


BAD_EVENT_OUTPUTS = [
    (lambda t, y: y[:0], ValueError, r"^event_fn returned an empty tensor"),
    (lambda t, y: y[0] * float("nan"), ValueError, r"^event_fn returned NaN or infinite values"),
    (lambda t, y: y * float("inf"), ValueError, r"^event_fn returned NaN or infinite values"),
    (lambda t, y: torch.tensor(1), TypeError, r"^event_fn must return a real floating-point tensor"),
    (lambda t, y: y > 0, TypeError, r"^event_fn must return a real floating-point tensor"),
    (lambda t, y: y.to(torch.complex64), TypeError, r"^event_fn must return a real floating-point tensor"),
    (lambda t, y: 1.0, TypeError, r"^event_fn must return a tensor"),
]


@pytest.mark.parametrize("method", ["dopri5", "rk4", "scipy_solver"])
@pytest.mark.parametrize(("event_fn", "exc", "match"), BAD_EVENT_OUTPUTS)
def test_a_bad_event_fn_output_is_refused_at_its_first_call(method, event_fn, exc, match):
    # an empty or NaN event_fn hung (about 800k calls in 20 s)
    calls = []

    def f(t, y):
        calls.append(t)
        return -y

    options = {"step_size": 0.1} if method == "rk4" else None
    with pytest.raises(exc, match=match):
        odeint(f, torch.tensor([1.0, 2.0]), torch.tensor([0.0]), method=method, options=options,
               event_fn=event_fn)  # fmt: skip
    assert len(calls) <= 1  # at most the one evaluation that some solvers take before starting
