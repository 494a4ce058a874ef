"""The torchdiffeq calls of the acceptance programs (issue 15), each as a small runnable pattern.

Written for this project (no third-party code): each function makes the calls one program makes, with
the same argument kinds, shapes, dtypes and options, at toy sizes, through ``import torchdiffeq``
(the shim, when it is first on PYTHONPATH). Run as a script, it prints one line per pattern,
``PATTERN <name> OK <value>`` or ``PATTERN <name> FAIL <error>``, so one process covers them all.
"""

from __future__ import annotations

import itertools
import math
import sys
import traceback
from collections.abc import Callable

import numpy as np
import torch
import torchdiffeq
from torch import nn

PATTERNS: dict[str, Callable[[], float]] = {}


def pattern(fn: Callable[[], float]) -> Callable[[], float]:
    """Register a pattern under its function name."""
    PATTERNS[fn.__name__] = fn
    return fn


def _finite_grads(module: nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), "missing or bad grads"
    return float(sum(g.abs().sum() for g in grads))


class _MLPField(nn.Module):
    def __init__(self, dim: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        self.nfe = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.net(y**3)


@pattern
def ode_demo() -> float:
    """examples/ode_demo.py: batched (M, D) y0, a short t, default method; odeint and odeint_adjoint."""
    true_a = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])
    t = torch.linspace(0.0, 25.0, 100)
    with torch.no_grad():
        true_y = torchdiffeq.odeint(
            lambda t, y: torch.mm(y**3, true_a), torch.tensor([[2.0, 0.0]]), t, method="dopri5"
        )
    total = 0.0
    for solve in (torchdiffeq.odeint, torchdiffeq.odeint_adjoint):
        func = _MLPField()
        s = torch.from_numpy(np.array([3, 17, 40], dtype=np.int64))
        batch_y = torch.stack([true_y[s + i] for i in range(10)], dim=0)
        pred = solve(func, true_y[s], t[:10]).to("cpu")
        loss = torch.mean(torch.abs(pred - batch_y))
        loss.backward()
        total += loss.item() + 0 * _finite_grads(func)
    return total


class _ConcatConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim + 1, dim, 3, 1, 1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([torch.ones_like(x[:, :1, :, :]) * t, x], 1))


class _ConvField(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(2, dim)
        self.conv = _ConcatConv(dim)
        self.nfe = 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.conv(t, torch.relu(self.norm(x)))


@pattern
def odenet_mnist() -> float:
    """examples/odenet_mnist.py: conv field with t as a channel, t = tensor([0, 1]).type_as(x), out[1]."""
    func = _ConvField()
    x = torch.randn(3, 4, 5, 5)
    integration_time = torch.tensor([0, 1]).float().type_as(x)
    out = torchdiffeq.odeint_adjoint(func, x, integration_time, rtol=1e-3, atol=1e-3)[1]
    nfe_forward, func.nfe = func.nfe, 0
    out.square().mean().backward()
    assert nfe_forward > 0 and func.nfe > 0, (nfe_forward, func.nfe)
    return float(out.square().mean()) + 0 * _finite_grads(func)


class _HyperCNF(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.width = width
        self.hyper = nn.Linear(1, 3 * width * 2 + width)

    def forward(self, t: torch.Tensor, states: tuple[torch.Tensor, torch.Tensor]):
        z = states[0]
        with torch.set_grad_enabled(True):
            z.requires_grad_(True)
            p = torch.tanh(self.hyper(t.reshape(1, 1))).reshape(-1)
            b = 2 * self.width
            w, u = p[:b].reshape(self.width, 2, 1), p[b : 2 * b].reshape(self.width, 1, 2)
            u = u * torch.sigmoid(p[2 * b : 3 * b].reshape(self.width, 1, 2))
            h = torch.tanh(
                torch.matmul(z.unsqueeze(0).repeat(self.width, 1, 1), w) + p[3 * b :].reshape(-1, 1, 1)
            )
            dz = torch.matmul(h, u).mean(0)
            trace = sum(torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i] for i in range(2))
        return dz, -trace.view(-1, 1)


@pattern
def cnf() -> float:
    """examples/cnf.py: tuple (z, logp) state, t = [10, 0] float32 (backwards), autograd trace inside f."""
    total = 0.0
    for solve in (torchdiffeq.odeint, torchdiffeq.odeint_adjoint):
        func = _HyperCNF()
        x, logp = torch.randn(8, 2), torch.zeros(8, 1)
        t = torch.tensor([10, 0]).type(torch.float32)
        z_t, logp_t = solve(func, (x, logp), t, atol=1e-5, rtol=1e-5, method="dopri5")
        base = torch.distributions.MultivariateNormal(torch.zeros(2), 0.1 * torch.eye(2))
        loss = -(base.log_prob(z_t[-1]) - logp_t[-1].view(-1)).mean(0)
        loss.backward()
        total += loss.item() + 0 * _finite_grads(func)
    return total


@pattern
def latent_ode_example() -> float:
    """examples/latent_ode.py: (N, 4) z0 over float32 t from NumPy, then 1-D z0 forwards and backwards."""
    func = nn.Sequential(nn.Linear(4, 8), nn.ELU(), nn.Linear(8, 4))
    field = lambda t, x: func(x)  # noqa: E731
    samp_ts = torch.from_numpy(np.linspace(0.0, 6 * np.pi, 200)[:20]).float()
    z0 = torch.randn(5, 4, requires_grad=True)
    pred_z = torchdiffeq.odeint(field, z0, samp_ts).permute(1, 0, 2)
    pred_z.sum().backward()
    with torch.no_grad():
        ts_neg = torch.from_numpy(np.linspace(-np.pi, 0.0, num=50)[::-1].copy()).float()
        zs_neg = torchdiffeq.odeint(field, z0[0], ts_neg)
        zs_pos = torchdiffeq.odeint(field, z0[0], torch.linspace(0.0, 2 * np.pi, 50))
    assert zs_neg.shape == (50, 4) and zs_pos.shape == (50, 4)
    return float(pred_z.sum() + zs_neg.sum() + zs_pos.sum()) + 0 * float(z0.grad.abs().sum())


class _Ball(nn.Module):
    def __init__(self, interface: Callable) -> None:
        super().__init__()
        self.gravity = nn.Parameter(torch.as_tensor([9.8], dtype=torch.float64))
        self.log_radius = nn.Parameter(torch.log(torch.as_tensor([0.2], dtype=torch.float64)))
        self.t0 = nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
        self.init_pos = nn.Parameter(torch.tensor([10.0], dtype=torch.float64))
        self.init_vel = nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
        self.interface = interface

    def forward(self, t, state):
        _pos, vel, log_radius = state
        return vel, -self.gravity, torch.zeros_like(log_radius)

    def event_fn(self, t, state):
        pos, _, log_radius = state
        return pos - torch.exp(log_radius)


@pattern
def bouncing_ball() -> float:
    """examples/bouncing_ball.py: odeint_event on a tuple of (1,)-shaped parameters, t0 a Parameter,
    float64, odeint_interface odeint and odeint_adjoint; event time and its gradients in closed form."""
    total = 0.0
    for interface in (torchdiffeq.odeint, torchdiffeq.odeint_adjoint):
        ball = _Ball(interface)
        state = (ball.init_pos, ball.init_vel, ball.log_radius)
        event_t, solution = torchdiffeq.odeint_event(
            ball,
            state,
            ball.t0,
            event_fn=ball.event_fn,
            reverse_time=False,
            atol=1e-8,
            rtol=1e-8,
            odeint_interface=interface,
        )
        event_t.backward()
        g, h, r = 9.8, 10.0, 0.2
        t_star = math.sqrt(2 * (h - r) / g)  # h - g t^2 / 2 = r
        assert abs(event_t.item() - t_star) < 1e-6, (event_t.item(), t_star)
        assert abs(ball.init_pos.grad.item() - 1 / (g * t_star)) < 1e-5, ball.init_pos.grad
        assert abs(ball.t0.grad.item() - 1.0) < 1e-5, ball.t0.grad
        assert abs(ball.gravity.grad.item() + t_star / (2 * g)) < 1e-5, ball.gravity.grad
        assert all(s.shape[1:] == (1,) for s in solution), [s.shape for s in solution]
        total += event_t.item()
    return total


@pattern
def learn_physics() -> float:
    """examples/learn_physics.py: an event function that returns zeros_like(t) past a terminal time,
    event-function parameters carried in the state, t0 = tensor([0.]); then odeint on masked times."""
    torch.set_default_dtype(torch.float64)
    try:
        radius = nn.Parameter(torch.rand(1))
        dvel = nn.Linear(1, 1)
        pos0, vel0 = nn.Parameter(torch.tensor([10.0])), nn.Parameter(torch.tensor([0.0]))
        times = torch.linspace(0.0, 3.0, 40)

        def dynamics(t, state):
            _pos, vel, *rest = state
            return (vel, torch.tanh(dvel(torch.zeros_like(vel))) * 10.0, *[torch.zeros_like(r) for r in rest])

        def event_fn(t, state):
            if t > times[-1] + 1e-7:
                return torch.zeros_like(t)
            return state[0] - radius.reshape_as(state[0]) ** 2

        t0 = torch.tensor([0.0]).to(times)
        state = (pos0, vel0, radius)
        event_t, solution = torchdiffeq.odeint_event(
            dynamics, state, t0, event_fn=event_fn, atol=1e-8, rtol=1e-8, method="dopri5"
        )
        interval = times[times > t0]
        interval = torch.cat([t0.reshape(-1), interval[interval <= event_t].reshape(-1)])
        traj = torchdiffeq.odeint(dynamics, state, interval, atol=1e-8, rtol=1e-8)[0][1:]
        after = tuple(s[-1] for s in solution)  # the state at the event, as the program takes it
        assert [a.shape for a in after] == [s.shape for s in state], [a.shape for a in after]
        loss = traj.abs().mean() + event_t.sum()
        loss.backward()
        assert pos0.grad is not None and radius.grad is not None
        return loss.item()
    finally:
        torch.set_default_dtype(torch.float32)


class _RegField(nn.Module):
    """FFJORD's ODEfunc shape: (z, logp, *regularisers) in, a tuple of the same kinds out."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(3, 2)
        self.register_buffer("_num_evals", torch.tensor(0.0))

    def forward(self, t, states):
        self._num_evals += 1
        y = states[0]
        t = torch.ones(y.size(0), 1).to(y) * t.clone().detach().requires_grad_(True).type_as(y)
        with torch.set_grad_enabled(True):
            y.requires_grad_(True)
            dy = self.net(torch.cat([t, y], 1))
            div = sum(torch.autograd.grad(dy[:, i].sum(), y, create_graph=True)[0][:, i] for i in range(2))
        return (dy, -div.view(-1, 1), *[torch.zeros_like(s).requires_grad_(True) for s in states[2:]])


def _ffjord_solve(nreg: int) -> float:
    func = _RegField()
    sqrt_end_time = nn.Parameter(torch.sqrt(torch.tensor(0.5)))
    z = torch.randn(6, 2)
    logpz = torch.zeros(z.shape[0], 1).to(z)
    times = torch.tensor([0.0, sqrt_end_time * sqrt_end_time]).to(z)
    reg_states = tuple(torch.tensor(0).to(z) for _ in range(nreg))
    atol, rtol = 1e-5, 1e-5
    state_t = torchdiffeq.odeint_adjoint(
        func,
        (z, logpz, *reg_states),
        times.to(z),
        atol=[atol, atol] + [1e20] * nreg,
        rtol=[rtol, rtol] + [1e20] * nreg,
        method="dopri5",
        options={},
    )
    z_t, logp_t = (s[1] for s in state_t[:2])
    (z_t.square().sum() - logp_t.sum()).backward()
    assert func._num_evals.item() > 0
    with torch.no_grad():  # model.eval(): scalar tolerances, reversed times (FFJORD's _flip)
        back = torchdiffeq.odeint(func, (z_t, logp_t), torch.flip(times, [0]), atol=atol, rtol=rtol)
    return float(back[0][-1].sum()) + 0 * _finite_grads(func)


@pattern
def ffjord_cnf() -> float:
    """FFJORD lib/layers/cnf.py in training: per-component tolerance lists [atol, atol], options={}."""
    return _ffjord_solve(nreg=0)


@pattern
def ffjord_cnf_regularized() -> float:
    """FFJORD with regularisers (train_toy.py --l2int/--JFrobint ...): 0-dim states torch.tensor(0)."""
    return _ffjord_solve(nreg=2)


class _LatentField(nn.Module):
    """latent_ode lib/ode_func.py's ODEFunc: forward(t, y, backwards=False) and a bound-method prior."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 8), nn.Tanh(), nn.Linear(8, dim))

    def forward(self, t_local, y, backwards=False):
        grad = self.net(y)
        return -grad if backwards else grad

    def sample_next_point_from_prior(self, t_local, y):
        return self.net(y)


@pattern
def latent_ode_repo_dopri5() -> float:
    """latent_ode lib/diffeq_solver.py: [samples, traj, dim] first point, dopri5, rtol 1e-4, atol 1e-5,
    and sample_traj_from_prior's bound method as the field."""
    field = _LatentField()
    first_point = torch.randn(3, 4, 3)
    tp = torch.linspace(0.0, 5.0, 12)
    pred = torchdiffeq.odeint(field, first_point, tp, rtol=1e-4, atol=1e-5, method="dopri5").permute(
        1, 2, 0, 3
    )
    assert torch.mean(pred[:, :, 0, :] - first_point) < 0.001 and pred.shape == (3, 4, 12, 3)
    prior = torchdiffeq.odeint(field.sample_next_point_from_prior, first_point, tp, rtol=1e-4, atol=1e-5)
    pred.sum().backward()
    return float(pred.sum() + prior.sum()) + 0 * _finite_grads(field)


@pattern
def latent_ode_repo_euler() -> float:
    """latent_ode's ODE-RNN encoder (run_models.py --latent-ode, --ode-rnn): method "euler" with rtol and
    atol but no step_size, stepping backwards on linspace(prev_t, t_i) (torchdiffeq steps on t)."""
    field = _LatentField()
    prev_y = torch.randn(1, 4, 3)
    time_points = torch.linspace(1.0, 0.8, 5)
    sol = torchdiffeq.odeint(field, prev_y, time_points, rtol=1e-3, atol=1e-4, method="euler")
    expected = prev_y
    for a, b in itertools.pairwise(time_points):  # explicit Euler on the points of t
        expected = expected + (b - a) * field(a, expected)
    assert torch.allclose(sol[-1], expected, atol=1e-6), (sol[-1] - expected).abs().max()
    return float(sol.sum())


def main(names: list[str]) -> int:
    """Run the named patterns (all by default); one line each; exit code 0 even when some fail."""
    print(f"TORCHDIFFEQ_MODULE {torchdiffeq.__file__}", flush=True)
    for name in names or list(PATTERNS):
        torch.manual_seed(0)
        try:
            value = PATTERNS[name]()
            status = "OK" if math.isfinite(value) else "FAIL"
            print(f"PATTERN {name} {status} {value!r}", flush=True)
        except Exception as error:  # one pattern's failure must not hide the others
            line = f"{type(error).__name__}: {error}".replace("\n", " ")
            print(f"PATTERN {name} FAIL {line}", flush=True)
            traceback.print_exc()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
