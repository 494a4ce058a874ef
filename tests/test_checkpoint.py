"""odeint_checkpoint: the gradients of direct backprop through the solver, replayed piece by piece from
checkpoints; its memory proxy (states stored), stats, and input validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from neuralode import SolveStats, odeint, odeint_adjoint, odeint_checkpoint
from tests.problems import Oscillator


class MLPField(nn.Module):
    """A small time-dependent tanh MLP vector field."""

    def __init__(self, dim: int = 2, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t, y):
        return self.net(torch.cat([y, t.expand(*y.shape[:-1], 1)], dim=-1))


class CountingField(nn.Module):
    """dy/dt = -y, counting its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return -y


def make_problem(seed: int = 0):
    torch.manual_seed(seed)
    func = MLPField().double()
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 0.35, 1.1, 2.0], dtype=torch.float64, requires_grad=True)
    return func, y0, t


def loss_of(ys):
    return (ys**2).sum() + ys[2].sin().sum()


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


CASES = [
    ("dopri5", None),
    ("tsit5", None),
    ("bosh3", None),
    ("rk4", {"step_size": 0.07}),  # 29 steps; output times fall inside steps (linear interpolation)
    ("dopri5", {"step_t": torch.tensor([0.5, 1.5]), "controller": "pi"}),  # steps that land on given times
]


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize(("method", "options"), CASES)
def test_gradients_equal_direct_backprop(method, options, every):
    func, y0, t = make_problem()
    inputs = (y0, t, *func.parameters())
    kwargs = {"rtol": 1e-8, "atol": 1e-10, "method": method, "options": options}
    ys_direct = odeint(func, y0, t, **kwargs)
    direct = torch.autograd.grad(loss_of(ys_direct), inputs)
    stats = SolveStats()
    ys = odeint_checkpoint(func, y0, t, checkpoint_every=every, stats=stats, **kwargs)
    checkpoint = torch.autograd.grad(loss_of(ys), inputs)
    assert stats.forward.n_checkpoints >= 3  # several pieces, with outputs inside them
    assert rel(ys.detach(), ys_direct.detach()) < 1e-12
    for name, d, c in zip(["y0", "t", *(f"param{i}" for i in range(len(inputs) - 2))], direct, checkpoint):
        assert rel(c, d) < 1e-10, name


def test_backwards_in_time_and_cubic_interpolation_match_direct():
    func, y0, _ = make_problem(1)
    t = torch.tensor([1.0, 0.3, -0.5], dtype=torch.float64)
    params = tuple(func.parameters())
    for method, options in (("dopri5", None), ("rk4", {"step_size": 0.1, "interp": "cubic"})):
        kwargs = {"method": method, "options": options}
        d = torch.autograd.grad(loss_of(odeint(func, y0, t, **kwargs)), (y0, *params))
        c = torch.autograd.grad(
            loss_of(odeint_checkpoint(func, y0, t, checkpoint_every=2, **kwargs)), (y0, *params)
        )
        for x, y in zip(d, c):
            assert rel(y, x) < 1e-10, method


def test_loose_tolerance_gradient_has_no_reconstruction_error():
    """dy/dt = -k y on [0, 5], dy(5)/dk = -5 exp(-5 k): the adjoint reconstructs the decaying state
    backwards (errors grow like exp(k t)); the checkpointed gradient is direct backprop's, and closer."""

    class Decay(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.k = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

        def forward(self, t, y):
            return -self.k * y

    exact = -5.0 * math.exp(-10.0)
    t = torch.tensor([0.0, 5.0], dtype=torch.float64)
    grads = {}
    for solve in (odeint, odeint_adjoint, odeint_checkpoint):
        func = Decay()
        y = solve(func, torch.ones(1, dtype=torch.float64), t, rtol=1e-4, atol=1e-7)[-1, 0]
        (grads[solve.__name__],) = torch.autograd.grad(y, func.k)
    error = {name: abs(float(g) - exact) / abs(exact) for name, g in grads.items()}
    assert abs(float(grads["odeint_checkpoint"] - grads["odeint"])) < 1e-10 * abs(exact)
    assert error["odeint_checkpoint"] < error["odeint_adjoint"] / 5


def test_gradcheck_fixed_grid():
    """y0 and parameters (t's gradient is the exact flow's, as odeint's, not the discrete solve's)."""
    torch.manual_seed(2)
    func = MLPField(hidden=4).double()
    names = [name for name, _ in func.named_parameters()]
    y0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.45, 1.0], dtype=torch.float64)

    def fn(y0, *params):
        def field(s, y):
            return torch.func.functional_call(func, dict(zip(names, params, strict=True)), (s, y))

        options = {"step_size": 0.2}
        return odeint_checkpoint(
            field, y0, t, method="rk4", options=options, checkpoint_every=2, adjoint_params=params
        )

    params = [p.detach().clone().requires_grad_(True) for p in func.parameters()]
    assert torch.autograd.gradcheck(fn, (y0, *params))


def test_gradcheck_adaptive_y0_and_parameters():
    """The step sequence is piecewise constant in the inputs: tight tolerances keep it fixed under the
    finite differences."""
    torch.manual_seed(3)
    func = MLPField(hidden=4).double()
    names = [name for name, _ in func.named_parameters()]
    y0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)

    def fn(y0, *params):
        def field(s, y):
            return torch.func.functional_call(func, dict(zip(names, params, strict=True)), (s, y))

        return odeint_checkpoint(
            field, y0, t, rtol=1e-10, atol=1e-11, checkpoint_every=3, adjoint_params=params
        )

    params = [p.detach().clone().requires_grad_(True) for p in func.parameters()]
    assert torch.autograd.gradcheck(fn, (y0, *params))


def test_tuple_state_matches_direct():
    func = Oscillator()
    x0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([0.0, 0.2], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 4, dtype=torch.float64)
    grads = []
    for solve, kwargs in ((odeint, {}), (odeint_checkpoint, {"checkpoint_every": 2})):
        x, v = solve(func, (x0, v0), t, rtol=1e-6, atol=1e-8, **kwargs)
        assert x.shape == (4, 2) and v.shape == (4, 2)
        grads.append(torch.autograd.grad((x**2).sum() + v.sum(), (x0, v0, func.k)))
    for d, c in zip(*grads):
        assert rel(c, d) < 1e-10


@pytest.mark.parametrize("every", [1, 2, 3, 7, 100])
def test_stored_states_are_one_per_checkpoint(every):
    """The memory proxy: ceil(steps / checkpoint_every) states are kept for the backward pass."""
    func, y0, t = make_problem()
    stats = SolveStats()
    ys = odeint_checkpoint(
        func, y0, t, method="rk4", options={"step_size": 0.1}, checkpoint_every=every, stats=stats
    )
    assert stats.forward.n_accepted == 20
    assert stats.forward.n_checkpoints == math.ceil(20 / every)
    loss_of(ys).backward()
    assert stats.backward.n_checkpoints == 0


def test_stats_forward_and_backward():
    func, y0, t = make_problem()
    stats = SolveStats()
    ys = odeint_checkpoint(func, y0, t, checkpoint_every=2, stats=stats)
    direct = SolveStats()
    odeint(func, y0.detach(), t.detach(), stats=direct)
    assert stats.forward.nfe == direct.forward.nfe and stats.forward.n_steps == direct.forward.n_steps
    assert stats.backward.nfe == 0  # nothing ran backward yet
    loss_of(ys).backward()
    # the replay takes exactly the accepted steps, with no error control: no more evaluations than forward
    assert stats.backward.n_accepted == stats.backward.n_steps == stats.forward.n_accepted
    assert stats.backward.n_rejected == 0
    assert 0 < stats.backward.nfe <= stats.forward.nfe + len(t)


def test_no_checkpoints_are_kept_without_gradients():
    func, y0, t = make_problem()
    stats = SolveStats()
    with torch.no_grad():
        ys = odeint_checkpoint(func, y0, t, stats=stats)
    assert stats.forward.n_checkpoints == 0 and stats.forward.n_accepted > 0
    torch.testing.assert_close(ys, odeint(func, y0, t).detach(), rtol=0, atol=1e-14)


def test_a_single_output_time_returns_y0():
    func, y0, _ = make_problem()
    t = torch.tensor([0.5], dtype=torch.float64)
    ys = odeint_checkpoint(func, y0, t)
    assert torch.equal(ys[0], y0)
    (g,) = torch.autograd.grad(ys.sum(), y0)
    assert torch.equal(g, torch.ones_like(y0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"checkpoint_every": 1.5}, "checkpoint_every"),
        ({"checkpoint_every": True}, "checkpoint_every"),
        ({"event_fn": lambda t, y: y.sum()}, "event_fn"),
        ({"method": "implicit_euler", "options": {"step_size": 0.1}}, "supported"),
        ({"method": "explicit_adams", "options": {"step_size": 0.1}}, "supported"),
        ({"method": "scipy_solver"}, "supported"),
        ({"options": {"jump_t": torch.tensor([0.5])}}, "jump_t"),
        ({"rtol": -1.0}, "rtol"),
    ],
)
def test_bad_input_raises_before_any_evaluation(kwargs, match):
    func = CountingField()
    with pytest.raises(ValueError, match=match):
        odeint_checkpoint(func, torch.ones(2), torch.tensor([0.0, 1.0]), **kwargs)
    assert func.calls == 0


def test_plain_function_needs_adjoint_params():
    with pytest.raises(ValueError, match="adjoint_params"):
        odeint_checkpoint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]))
