"""Gradients of per-sample fixed-grid solves (issue 21): odeint_adjoint and odeint_checkpoint with
per_sample=True and euler, midpoint, heun2, heun3, rk4, in float64.

References: the joint odeint_adjoint of each sample alone (the same backward grid: dyadic times, so
each sample's forward grid reversed is the joint solve's backward grid), direct backprop through the
per-sample fixed-grid solve (equal for the checkpoint; the adjoint converges to it at the method's
order), gradcheck.
"""

from __future__ import annotations

import pytest
import torch

import neuralode as nd
from neuralode import SolveStats, odeint

from .conftest import FIXED_METHODS

F64 = torch.float64
H = 1 / 32  # dyadic: grid points and output times are exact, so grids coincide where they should
# per-sample rows, mixed directions, every time on the H grid of its row
T_ROWS = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.25, -0.5], [0.0, 0.125, 0.25]], dtype=F64)


class TimeField(torch.nn.Module):
    """A small MLP field of (y, t), row by row."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layers = (torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        self.net = torch.nn.Sequential(*layers).to(F64)

    def forward(self, t, y):
        return self.net(torch.cat([y, t[:, None]], dim=1))


def grads_of(solve, func, y0, t, params, **kwargs):
    """(ys, dL/dy0, dL/dt, dL/dparams) for a fixed weighting of the outputs."""
    y = y0.detach().clone().requires_grad_(True)
    tt = t.detach().clone().requires_grad_(True)
    ys = solve(func, y, tt, **kwargs)
    weights = torch.linspace(-1.0, 2.0, ys.numel(), dtype=F64).reshape(ys.shape)
    g = torch.autograd.grad((ys * weights).sum(), (y, tt, *params))
    return ys.detach(), g[0], g[1], g[2:]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ----- odeint_adjoint -----


@pytest.mark.parametrize("options", [None, {"step_size": H}])
@pytest.mark.parametrize("method", FIXED_METHODS)
def test_adjoint_equals_each_samples_joint_adjoint(method, options):
    """Per sample: dL/dy0 and dL/dt its own joint adjoint's; dL/dtheta the sum of theirs."""
    field = TimeField()
    params = tuple(field.parameters())
    y0 = torch.randn(3, 2, dtype=F64)
    stats = SolveStats()
    ys, g_y0, g_t, g_p = grads_of(nd.odeint_adjoint, field, y0, T_ROWS, params, method=method,
                                  options=options, per_sample=True, stats=stats)  # fmt: skip
    weights = torch.linspace(-1.0, 2.0, ys.numel(), dtype=F64).reshape(ys.shape)
    total = [torch.zeros_like(p) for p in params]
    for b in range(3):
        y = y0[b].clone().requires_grad_(True)
        t = T_ROWS[b].clone().requires_grad_(True)
        solo = nd.odeint_adjoint(lambda t, y: field(t.reshape(1), y[None])[0], y, t, method=method,
                                 options=options, adjoint_params=params)  # fmt: skip
        torch.testing.assert_close(ys[:, b], solo.detach(), rtol=1e-13, atol=1e-14)
        gy, gt, *gp = torch.autograd.grad((solo * weights[:, b]).sum(), (y, t, *params))
        torch.testing.assert_close(g_y0[b], gy, rtol=1e-11, atol=1e-13)
        torch.testing.assert_close(g_t[b], gt, rtol=1e-11, atol=1e-13)
        total = [s + g for s, g in zip(total, gp, strict=True)]
    for got, want in zip(g_p, total, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-13)
    steps = stats.backward.n_steps
    assert steps.shape == (3,)
    if options is not None:  # each sample's own grid: 32, 48 and 8 steps of H
        assert steps.tolist() == [32, 48, 8]


@pytest.mark.parametrize("shared", [False, True])
def test_adjoint_converges_to_direct_backprop_at_the_methods_order(shared):
    """rk4: halving the step divides the adjoint's distance from direct backprop by about 16, and at
    H / 2 it is below 1e-10 (y0, t, every parameter); output times off the grid (0.3, 0.7) included."""
    field = TimeField(1)
    params = tuple(field.parameters())
    y0 = torch.randn(3, 2, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64) if shared else T_ROWS
    errors = []
    for h in (4 * H, 2 * H, H):
        opts = {"method": "rk4", "options": {"step_size": h}, "per_sample": True}
        direct = grads_of(odeint, field, y0, t, params, **opts)
        adjoint = grads_of(nd.odeint_adjoint, field, y0, t, params, **opts)
        assert torch.equal(direct[0], adjoint[0])
        pairs = zip([*direct[1:3], *direct[3]], [*adjoint[1:3], *adjoint[3]], strict=True)
        errors.append(max(relative(a, d) for d, a in pairs))
    assert errors[1] < errors[0] / 10 and errors[2] < errors[1] / 10, errors
    assert errors[2] < 1e-9, errors
    if shared:
        assert direct[2].shape == (3,)


def test_adjoint_with_output_times_off_the_grid_matches_direct_backprop():
    """Output times between grid points: the backward grid is cut there (state jumps), and the
    gradients approach direct backprop as the step shrinks (linear interpolation: second order)."""
    field = TimeField(2)
    params = tuple(field.parameters())
    y0 = torch.randn(2, 2, dtype=F64)
    t = torch.tensor([[0.0, 0.3, 0.7], [0.9, 0.2, -0.45]], dtype=F64)
    errors = []
    for h in (0.02, 0.01):
        opts = {"method": "rk4", "options": {"step_size": h}, "per_sample": True}
        direct = grads_of(odeint, field, y0, t, params, **opts)
        adjoint = grads_of(nd.odeint_adjoint, field, y0, t, params, **opts)
        pairs = zip([direct[1], *direct[3]], [adjoint[1], *adjoint[3]], strict=True)
        errors.append(max(relative(a, d) for d, a in pairs))
    assert errors[1] < errors[0] / 3 and errors[1] < 1e-4, errors


def test_adjoint_gradcheck():
    """y' = -k y + sin(t) with one k per row, rk4 on H: y0 and k by finite differences (dL/dt is the
    continuous rule f(t, y), not the derivative of the grid's interpolant: checked above instead)."""
    t = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.75, 0.0]], dtype=F64)

    def run(y0, k):
        f = lambda t, y: -k[:, None] * y + torch.sin(t)[:, None]  # noqa: E731
        return nd.odeint_adjoint(f, y0, t, method="rk4", options={"step_size": H}, per_sample=True,
                                 adjoint_params=(k,))  # fmt: skip

    y0 = torch.tensor([[1.0], [-0.5]], dtype=F64, requires_grad=True)
    k = torch.tensor([0.7, 1.3], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (y0, k), atol=1e-7, rtol=1e-5)


def test_a_samples_adjoint_gradient_does_not_depend_on_its_batch():
    field = TimeField(3)
    opts = {"method": "heun3", "options": {"step_size": 0.05}, "per_sample": True}

    def grads(y0, t):
        y, tt = y0.clone().requires_grad_(True), t.clone().requires_grad_(True)
        ys = nd.odeint_adjoint(field, y, tt, **opts)
        return torch.autograd.grad(ys.square().sum() + ys[-1].sum(), (y, tt))

    y0 = torch.randn(3, 2, dtype=F64)
    g_y0, g_t = grads(y0, T_ROWS)
    for b in range(3):
        gy, gt = grads(y0[b : b + 1], T_ROWS[b : b + 1])
        torch.testing.assert_close(gy[0], g_y0[b], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(gt[0], g_t[b], rtol=1e-12, atol=1e-14)


# ----- odeint_checkpoint -----


@pytest.mark.parametrize("every", [1, 3, 10_000])
@pytest.mark.parametrize("options", [None, {"step_size": 0.07}])
@pytest.mark.parametrize("method", FIXED_METHODS)
def test_checkpoint_equals_direct_backprop(method, options, every):
    field = TimeField(4)
    params = tuple(field.parameters())
    y0 = torch.randn(3, 2, dtype=F64)
    t = torch.tensor([[0.0, 0.3, 0.9, 1.0], [2.0, 1.5, 1.0, 0.0], [0.0, 0.1, 0.2, 0.3]], dtype=F64)
    stats = SolveStats()
    direct = grads_of(odeint, field, y0, t, params, method=method, options=options, per_sample=True)
    ckpt = grads_of(nd.odeint_checkpoint, field, y0, t, params, method=method, options=options,
                    per_sample=True, checkpoint_every=every, stats=stats)  # fmt: skip
    assert torch.equal(direct[0], ckpt[0])
    for d, c in zip([*direct[1:3], *direct[3]], [*ckpt[1:3], *ckpt[3]], strict=True):
        torch.testing.assert_close(c, d, rtol=1e-11, atol=1e-13)
    steps = stats.forward.n_steps
    assert torch.equal(stats.backward.n_steps, steps)
    width = int(steps.max())
    assert stats.forward.n_checkpoints == -(-width // every)


def test_checkpoint_shared_t_tuple_state():
    k = torch.tensor([0.5, 2.0], dtype=F64, requires_grad=True)

    def f(t, y):
        x, v = y
        return v, -k[:, None] * x - 0.1 * v * torch.cos(t)[:, None]

    x0 = torch.tensor([[1.0, 0.0], [0.5, 0.2]], dtype=F64, requires_grad=True)
    v0 = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.1], dtype=F64, requires_grad=True)
    results = []
    checkpointed = {"adjoint_params": (k,), "checkpoint_every": 2}
    for solve, extra in ((odeint, {}), (nd.odeint_checkpoint, checkpointed)):
        x, v = solve(f, (x0, v0), t, method="midpoint", options={"step_size": 0.1}, per_sample=True, **extra)
        results.append(torch.autograd.grad(x.square().sum() + v.sum(), (x0, v0, k, t)))
    for d, c in zip(*results, strict=True):
        torch.testing.assert_close(c, d, rtol=1e-11, atol=1e-13)
    assert results[0][3].shape == (3,)


# ----- refused -----


def test_a_backward_method_of_the_other_kind_is_refused():
    y0, t = torch.ones(2, 1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match="adjoint_method='dopri5' must be a fixed-grid method"):
        nd.odeint_adjoint(lambda t, y: -y, y0, t, method="rk4", adjoint_method="dopri5", per_sample=True,
                          adjoint_params=())  # fmt: skip
    with pytest.raises(ValueError, match="adjoint_method='rk4' must be an adaptive method"):
        nd.odeint_adjoint(lambda t, y: -y, y0, t, method="dopri5", adjoint_method="rk4", per_sample=True,
                          adjoint_params=())  # fmt: skip


# ----- events on a fixed grid -----

G = 9.81
HEIGHTS = [1.0, 2.0, 0.5, 3.0, 0.05]


class Balls(torch.nn.Module):
    """y = (height, velocity) per sample, falling with gravity g (a parameter)."""

    def __init__(self, g: float = G) -> None:
        super().__init__()
        self.g = torch.nn.Parameter(torch.tensor(g, dtype=F64))

    def forward(self, t, y):
        return torch.stack([y[:, 1], -self.g * torch.ones_like(y[:, 1])], dim=1)


def ground(t, y):
    return y[:, 0]


def dropped(heights) -> torch.Tensor:
    return torch.tensor([[h, 0.0] for h in heights], dtype=F64)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("interface", [odeint, nd.odeint_adjoint], ids=["odeint", "adjoint"])
def test_falling_balls_on_a_fixed_grid_hit_the_ground_at_sqrt_2h_over_g(interface, reverse):
    """rk4 is exact on a parabola and so is the cubic Hermite interpolant the event is located on:
    event_t = sqrt(2 h / g) (backwards: its negative), dtau/dh = 1 / sqrt(2 g h), dtau/dg = -tau / 2g,
    and the impact speed sqrt(2 g h)."""
    func = Balls()
    y0 = dropped(HEIGHTS).requires_grad_(True)
    extra = {"adjoint_params": (func.g,)} if interface is nd.odeint_adjoint else {}
    stats = SolveStats()
    event_t, ys = nd.odeint_event(func, y0, 0.0, event_fn=ground, reverse_time=reverse, per_sample=True,
                                  odeint_interface=interface, method="rk4", stats=stats,
                                  options={"step_size": 0.05, "interp": "cubic"}, **extra)  # fmt: skip
    sign = -1.0 if reverse else 1.0
    exact = [sign * (2 * h / G) ** 0.5 for h in HEIGHTS]
    assert event_t.shape == (5,) and ys.shape == (2, 5, 2)
    assert event_t.tolist() == pytest.approx(exact, abs=1e-12)
    assert ys[1, :, 1].tolist() == pytest.approx([-sign * (2 * G * h) ** 0.5 for h in HEIGHTS], abs=1e-11)
    assert stats.status == ("success",) * 5
    assert stats.forward.n_steps.tolist() == [int(abs(e) // 0.05) + 1 for e in exact]  # each its own steps
    d_y0, d_g = torch.autograd.grad(event_t.sum(), (y0, func.g))
    assert d_y0[:, 0].tolist() == pytest.approx([sign / (2 * G * h) ** 0.5 for h in HEIGHTS], rel=1e-9)
    assert float(d_g) == pytest.approx(sum(-e / (2 * G) for e in exact), rel=1e-9)


@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("method", FIXED_METHODS)
def test_each_sample_matches_the_joint_fixed_grid_event(method, interp):
    """The joint engine's grid t0 + k h, its crossing test and its interpolant, per sample: the same
    event time and state; the per-sample start times differ."""
    t0 = torch.tensor([0.0, 0.3, -1.0, 2.0, 0.1], dtype=F64)
    options = {"step_size": 0.1, "interp": interp}
    event_t, ys = nd.odeint_event(Balls(), dropped(HEIGHTS), t0, event_fn=ground, per_sample=True,
                                  method=method, options=options)  # fmt: skip
    for b, h in enumerate(HEIGHTS):
        joint_t, joint_ys = nd.odeint_event(
            lambda t, y: torch.stack([y[1], -G * torch.ones_like(y[1])]), dropped([h])[0], t0[b],
            event_fn=lambda t, y: y[0], method=method, options=options,
        )  # fmt: skip
        # to rounding: the stages and the cubic weights are summed in another order than the joint's
        assert event_t[b].item() == pytest.approx(joint_t.item(), abs=1e-14)
        torch.testing.assert_close(ys[:, b], joint_ys, rtol=1e-14, atol=1e-15)
    if interp == "linear" and method == "rk4":  # linear interpolation: off by at most g h^2 / (8 v)
        for e, s, h in zip(event_t.tolist(), t0.tolist(), HEIGHTS, strict=True):
            assert abs(e - s - (2 * h / G) ** 0.5) <= G * 0.1**2 / (8 * (2 * G * h) ** 0.5) * 1.01


def test_fixed_grid_event_gradcheck():
    """y' = -k y^2 + 0.1 sin t per sample, event y = level: y0, k and level by finite differences
    (rk4, cubic Hermite, a small step: the implicit-function gradient is the continuous one)."""

    def run(y0, k, level):
        def f(t, y):
            return -k[:, None] * y * y + torch.sin(t)[:, None] * 0.1

        options = {"step_size": 0.01, "interp": "cubic"}
        event_t, ys = nd.odeint_event(f, y0, 0.0, event_fn=lambda t, y: y[:, 0] - level, per_sample=True,
                                      method="rk4", options=options)  # fmt: skip
        return event_t, ys[1]

    y0 = torch.tensor([[1.0], [2.0], [1.5]], dtype=F64, requires_grad=True)
    k = torch.tensor([1.0, 0.5, 2.0], dtype=F64, requires_grad=True)
    level = torch.tensor(0.6, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (y0, k, level), atol=1e-6)


def test_fixed_grid_event_alone_and_failures():
    """A sample's event is the one it has alone, bit for bit; one that never crosses fails by
    on_failure, with max_num_steps steps taken."""
    levels = torch.tensor([0.5, -1.0, 0.25], dtype=F64)
    y0 = torch.ones(3, 1, dtype=F64)
    opts = {"method": "heun3", "options": {"step_size": 0.05, "max_num_steps": 200}}
    with pytest.raises(nd.PerSampleSolveError, match=r"^1 of 3 samples failed: sample 1 "):
        nd.odeint_event(lambda t, y: -y, y0, 0.0, event_fn=lambda t, y: y[:, 0] - levels, per_sample=True,
                        **opts)  # fmt: skip
    stats = SolveStats()
    event_t, ys = nd.odeint_event(lambda t, y: -y, y0, 0.0, event_fn=lambda t, y: y[:, 0] - levels,
                                  per_sample=nd.PerSample(on_failure="nan"), stats=stats, **opts)  # fmt: skip
    assert stats.status == ("success", "max_num_steps", "success")
    assert int(stats.forward.n_steps[1]) == 200 and torch.isnan(event_t[1])
    for b in (0, 2):
        level = levels[b]
        alone_t, alone_ys = nd.odeint_event(lambda t, y: -y, y0[b : b + 1], 0.0, per_sample=True,
                                            event_fn=lambda t, y, c=level: y[:, 0] - c, **opts)  # fmt: skip
        assert event_t[b].item() == alone_t[0].item()
        assert torch.equal(ys[:, b], alone_ys[:, 0])
        assert event_t[b].item() == pytest.approx(-torch.log(levels[b]).item(), abs=1e-3)
