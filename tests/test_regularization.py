"""Regularised solves (neuralode.regularization): the penalties against closed forms and brute-force
integrals on linear fields, Hutchinson's unbiasedness, noise fixed within a solve, gradients that agree
between direct backprop, the adjoint and the checkpointed adjoint, bad input, and ODEBlock's wiring."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from neuralode import Adjoint, Checkpointed, Direct, ODEBlock, SolverConfig, solve
from neuralode.noise import sample_noise
from neuralode.regularization import (
    Regularization,
    jacobian_frobenius,
    solve_regularized,
    total_time_derivative,
)

D64 = torch.float64
T01 = torch.tensor([0.0, 1.0], dtype=D64)
TIGHT = {"rtol": 1e-10, "atol": 1e-10}


class Linear(nn.Module):
    """f(t, z) = A z for each row z of the batch."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T


class TimeMLP(nn.Module):
    """A small nonlinear, time-dependent field (tanh), float64."""

    def __init__(self, dim: int = 2, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim)).to(D64)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, t.expand(z.shape[0], 1)], dim=1))


def exact_path(a: torch.Tensor, z0: torch.Tensor, n: int = 4001) -> tuple[torch.Tensor, torch.Tensor]:
    """Times on [0, 1] and z(t) = expm(t A) z0 there, shape (n, batch, d)."""
    ts = torch.linspace(0.0, 1.0, n, dtype=D64)
    return ts, torch.einsum("tij,bj->tbi", torch.linalg.matrix_exp(ts[:, None, None] * a), z0)


def simpson(values: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Composite Simpson over dim 0 (an odd number of equally spaced times)."""
    h = ts[1] - ts[0]
    w = torch.ones(len(ts), dtype=D64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return (h / 3) * torch.einsum("t,t...->...", w, values)


matrices = st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4).map(
    lambda v: torch.tensor(v, dtype=D64).reshape(2, 2)
)
states = st.lists(st.floats(-2.0, 2.0), min_size=6, max_size=6).map(
    lambda v: torch.tensor(v, dtype=D64).reshape(3, 2)
)


@settings(max_examples=12)
@given(a=matrices, z0=states)
def test_kinetic_and_time_derivative_match_brute_force_integrals_on_a_linear_field(a, z0):
    # f = A z: ||f||^2 = ||A z(t)||^2 and df/dt along the path = A^2 z(t), integrated by Simpson
    # over the exact solution expm(tA) z0.
    solution = solve_regularized(
        Linear(a), z0, T01, Regularization(kinetic=1.0, time_derivative=1.0), params=(), **TIGHT
    )
    ts, path = exact_path(a, z0)
    kinetic = simpson(((path @ a.T) ** 2).sum(-1), ts)
    second = simpson(((path @ (a @ a).T) ** 2).sum(-1), ts)
    torch.testing.assert_close(solution.ys[-1], path[-1], rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(solution.integrals["kinetic"], kinetic, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(solution.integrals["time_derivative"], second, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(solution.penalties["kinetic"], kinetic.mean(), rtol=1e-7, atol=1e-10)


def test_integrals_are_positive_when_time_runs_backwards():
    a = torch.tensor([[0.3, -1.0], [0.8, -0.2]], dtype=D64)
    z0 = torch.randn(3, 2, dtype=D64)
    reg = Regularization(kinetic=1.0)
    forward = solve_regularized(Linear(a), z0, T01, reg, params=(), **TIGHT)
    back = solve_regularized(Linear(a), forward.ys[-1].detach(), T01.flip(0), reg, params=(), **TIGHT)
    torch.testing.assert_close(back.integrals["kinetic"], forward.integrals["kinetic"], rtol=1e-7, atol=0)


def test_time_derivative_of_a_time_dependent_field_pointwise():
    # f = sin(t) A z along dz/dt = f: df/dt = cos(t) A z + sin(t)^2 A^2 z.
    a = torch.tensor([[0.5, -1.2], [0.7, 0.1]], dtype=D64)
    z = torch.randn(4, 2, dtype=D64, requires_grad=True)
    t = torch.tensor(0.7, dtype=D64, requires_grad=True)
    f = torch.sin(t) * z @ a.T
    expected = math.cos(0.7) * z @ a.T + math.sin(0.7) ** 2 * z @ (a @ a).T
    torch.testing.assert_close(total_time_derivative(t, z, f), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_hutchinson_frobenius_is_unbiased(kind):
    # E[||e^T A||^2] = ||A||_F^2 when E[e e^T] = I: the mean over many independent draws (one per row)
    # is within 4 standard errors of it.
    a = torch.tensor([[0.9, -0.4, 0.2], [0.3, 1.1, -0.7], [-0.5, 0.6, 0.4]], dtype=D64)
    n = 20000
    z = torch.randn(n, 3, dtype=D64, requires_grad=True)
    f = z @ a.T
    generator = torch.Generator().manual_seed(1)
    values = jacobian_frobenius(f, z, sample_noise(z, kind, generator), create_graph=False)
    error = values.std() / math.sqrt(n)
    assert abs(values.mean() - (a * a).sum()) < 4 * error
    assert error < 0.05 * (a * a).sum()  # the test could fail: the bound is tight enough to mean something


def test_jacobian_noise_is_fixed_within_a_solve():
    # A's Jacobian is constant, so with one noise e per solve the integral over [0, 2] is exactly
    # 2 ||e^T A||^2 per sample; noise redrawn at any evaluation would break it.
    a = torch.tensor([[0.3, -1.0], [0.8, -0.2]], dtype=D64)
    z0 = torch.randn(5, 2, dtype=D64)
    noise = torch.randn(5, 2, dtype=D64)
    t = torch.tensor([0.0, 2.0], dtype=D64)
    solution = solve_regularized(
        Linear(a), z0, t, Regularization(jacobian=1.0), params=(), noise=noise, rtol=1e-6, atol=1e-6
    )
    assert solution.stats.forward.nfe > 10
    torch.testing.assert_close(
        solution.integrals["jacobian"], 2 * ((noise @ a) ** 2).sum(1), rtol=1e-12, atol=1e-12
    )
    # drawn by the solve (from a generator): the same seed gives the same estimate, another seed another
    draws = [
        solve_regularized(
            Linear(a), z0, t, Regularization(jacobian=1.0, noise="rademacher"), params=(),
            generator=torch.Generator().manual_seed(seed),
        ).integrals["jacobian"]
        for seed in (3, 3, 4)
    ]  # fmt: skip
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_regularised_solve_takes_the_plain_solves_steps():
    # The penalty states are out of the error control: same steps (NFE) and the same z.
    func = TimeMLP()
    z0 = torch.randn(6, 2, dtype=D64)
    plain = solve(func, z0, T01, rtol=1e-6, atol=1e-6)
    reg = Regularization(kinetic=0.1, jacobian=0.2, time_derivative=0.3)
    solution = solve_regularized(func, z0, T01, reg, rtol=1e-6, atol=1e-6)
    assert solution.stats.forward.nfe == plain.stats.forward.nfe
    torch.testing.assert_close(solution.ys, plain.ys, rtol=1e-13, atol=1e-13)


def _gradients(gradient, noise):
    torch.manual_seed(0)
    func = TimeMLP()
    z0 = torch.randn(4, 2, dtype=D64, requires_grad=True)
    reg = Regularization(kinetic=0.5, jacobian=0.3, time_derivative=0.2)
    solution = solve_regularized(func, z0, T01, reg, gradient=gradient, noise=noise, rtol=1e-10, atol=1e-10)
    loss = solution.ys[-1].pow(2).sum() + solution.total
    grads = torch.autograd.grad(loss, (z0, *func.parameters()))
    return loss.detach(), grads


def test_penalty_gradients_agree_across_gradient_strategies():
    noise = torch.randn(4, 2, dtype=D64)
    loss, direct = _gradients(Direct(), noise)
    assert all(g.abs().sum() > 0 for g in direct)
    for gradient in (Adjoint(), Checkpointed(every=2)):
        other_loss, other = _gradients(gradient, noise)
        torch.testing.assert_close(other_loss, loss, rtol=1e-12, atol=0)
        for g, h in zip(other, direct, strict=True):
            torch.testing.assert_close(g, h, rtol=1e-6, atol=1e-9)


def test_penalty_gradient_matches_finite_differences():
    # d/da of the kinetic integral on f = a z, z(0) = 1 (closed form: (exp(2a) - 1) a / 2).
    a = torch.tensor(0.7, dtype=D64, requires_grad=True)
    func = lambda t, z: a * z  # noqa: E731
    total = solve_regularized(
        func, torch.ones(1, 1, dtype=D64), T01, Regularization(kinetic=1.0), params=(a,),
        gradient=Adjoint(), **TIGHT,
    ).total  # fmt: skip
    (grad,) = torch.autograd.grad(total, a)
    closed = lambda x: (math.exp(2 * x) - 1) * x / 2  # noqa: E731
    torch.testing.assert_close(total.detach(), torch.tensor(closed(0.7), dtype=D64), rtol=1e-8, atol=0)
    fd = (closed(0.7 + 1e-6) - closed(0.7 - 1e-6)) / 2e-6
    torch.testing.assert_close(grad, torch.tensor(fd, dtype=D64), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kinetic": -1.0}, ValueError, "kinetic"),
        ({"jacobian": float("nan")}, ValueError, "jacobian"),
        ({"time_derivative": float("inf")}, ValueError, "time_derivative"),
        ({"kinetic": True}, TypeError, "kinetic"),
        ({"jacobian": "0.1"}, TypeError, "jacobian"),
        ({"noise": "uniform"}, ValueError, "noise"),
    ],
)
def test_bad_weights_and_noise_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        Regularization(**kwargs)


def _never(t, z):
    raise AssertionError("func must not be called before the arguments are checked")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: Regularization.from_dict({"kinetc": 1.0}), ValueError, "kinetc"),
        (lambda: SolverConfig(regularization={"kinetic": 1.0}), TypeError, "regularization"),
        (lambda: SolverConfig.from_dict({"regularization": {"kinetic": -1}}), ValueError, "kinetic"),
        (lambda: solve_regularized(_never, (torch.ones(2, 1),), T01, Regularization(kinetic=1.0)),
         TypeError, "y0"),
        (lambda: solve_regularized(_never, torch.ones(2, 1), T01, {"kinetic": 1.0}), TypeError,
         "regularization"),
        (lambda: solve_regularized(_never, torch.ones(2, 1), T01, Regularization(jacobian=1.0),
                                   noise=torch.ones(3, 1)), ValueError, "noise"),
        (lambda: solve_regularized(_never, torch.ones(2, 3), T01, Regularization(kinetic=1.0),
                                   rtol=torch.full((2, 3), 1e-3)), ValueError, "rtol"),
        (lambda: solve_regularized(_never, torch.ones(2, 1), T01, Regularization(kinetic=1.0),
                                   atol=-1.0), ValueError, "atol"),
    ],
)  # fmt: skip
def test_bad_input_raises_before_any_work(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_solver_config_reads_and_keeps_a_regularization():
    config = SolverConfig.from_dict(
        {"method": "dopri5", "regularization": {"name": "rnode", "kinetic": 0.01, "jacobian": 0.02}}
    )
    assert config.regularization == Regularization(kinetic=0.01, jacobian=0.02)
    assert hash(config) == hash(SolverConfig(regularization=Regularization(kinetic=0.01, jacobian=0.02)))
    assert SolverConfig.from_dict({"method": "dopri5"}).regularization is None
    assert "kinetic=0.01" in config.describe()
    with pytest.raises(ValueError, match="jacobian") as caught:
        SolverConfig.from_dict({"regularization": {"jacobian": -1}})
    assert caught.value.argument == "regularization"


@pytest.mark.parametrize("gradient", [Adjoint(), Direct()])
def test_ode_block_zero_weights_are_the_plain_solve(gradient):
    func = TimeMLP()
    x = torch.randn(5, 2, dtype=D64)
    plain = ODEBlock(func, solver=SolverConfig(gradient=gradient))
    zero = ODEBlock(func, solver=SolverConfig(gradient=gradient, regularization=Regularization()))
    out_plain, out_zero = plain(x), zero(x)
    assert torch.equal(out_plain, out_zero)
    assert plain.last_stats.forward == zero.last_stats.forward
    assert zero.last_regularization.item() == 0.0 and zero.last_penalties == {}


@pytest.mark.parametrize("gradient", [Adjoint(), Direct(), Checkpointed(every=1)])
def test_ode_block_penalty_is_differentiable(gradient):
    func = TimeMLP()
    reg = Regularization(kinetic=1.0, jacobian=0.5, time_derivative=0.1, noise="rademacher")
    block = ODEBlock(func, solver=SolverConfig(gradient=gradient, regularization=reg))
    out = block(torch.randn(5, 2, dtype=D64))
    penalty = block.last_regularization
    assert penalty.dim() == 0 and penalty.item() > 0
    assert set(block.last_penalties) == {"kinetic", "jacobian", "time_derivative"}
    expected = sum(getattr(reg, k) * v for k, v in block.last_penalties.items())
    torch.testing.assert_close(penalty, expected)
    grads = torch.autograd.grad(penalty, tuple(func.parameters()), retain_graph=True)
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    (out.sum() + penalty).backward()
    assert "regularization=(kinetic=1.0" in repr(block)


def _cnf(gradient=None, reg=None, trace="hutchinson"):
    from neuralode.flows import CNF

    torch.manual_seed(0)
    func = TimeMLP()
    solver = SolverConfig(rtol=1e-9, atol=1e-9, gradient=gradient or Adjoint(), regularization=reg)
    return CNF(func, 2, trace=trace, solver=solver)


def test_cnf_penalties_ride_along_without_changing_its_log_density():
    x = torch.randn(6, 2, dtype=D64)
    plain = _cnf()
    reg = Regularization(kinetic=0.5, jacobian=0.25, time_derivative=0.1)
    regularised = _cnf(reg=reg)
    torch.manual_seed(1)
    logp_plain = plain.log_prob(x)
    torch.manual_seed(1)
    logp_reg = regularised.log_prob(x)
    assert regularised.last_stats.forward.nfe == plain.last_stats.forward.nfe
    torch.testing.assert_close(logp_reg, logp_plain, rtol=1e-12, atol=1e-12)
    assert plain.last_regularization.item() == 0.0 and plain.last_penalties == {}
    # the kinetic integral over [t1, 0] is that of the plain regularised solve of the same field
    alone = solve_regularized(regularised.func, x, torch.tensor([1.0, 0.0], dtype=D64),
                              Regularization(kinetic=1.0), rtol=1e-9, atol=1e-9)  # fmt: skip
    torch.testing.assert_close(regularised.last_penalties["kinetic"], alone.penalties["kinetic"])
    expected = sum(getattr(reg, k) * v for k, v in regularised.last_penalties.items())
    torch.testing.assert_close(regularised.last_regularization, expected)


def test_cnf_penalty_gradients_agree_between_direct_and_adjoint():
    x = torch.randn(4, 2, dtype=D64)
    reg = Regularization(kinetic=0.5, jacobian=0.25, time_derivative=0.1)
    grads = []
    for gradient in (Direct(), Adjoint()):
        flow = _cnf(gradient, reg)
        torch.manual_seed(2)  # the same Hutchinson noise for both
        loss = -flow.log_prob(x).mean() + flow.last_regularization
        grads.append(torch.autograd.grad(loss, tuple(flow.func.parameters())))
    for g, h in zip(*grads, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-6, atol=1e-9)


def _autograd_jacobian(func, t, z):
    """df/dz per sample by one autograd pass per output dimension (rows of f depend on their own z)."""
    f = func(t, z)
    rows = [torch.autograd.grad(f[:, i].sum(), z, create_graph=True)[0] for i in range(f.shape[1])]
    return f, torch.stack(rows, dim=1)  # (batch, d_out, d_in)


@settings(max_examples=25, deadline=None)
@given(dim=st.integers(1, 4), width=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_hyperplanar_closed_form_frobenius_is_the_autograd_jacobians(dim, width, seed):
    """Both branches (the (d, d) Jacobians when d^2 <= M, the M x M Gram form otherwise) against autograd."""
    from neuralode.flows import HyperPlanarField

    torch.manual_seed(seed)
    field = HyperPlanarField(dim, width, hidden=8).double()
    z = torch.randn(5, dim, dtype=D64, requires_grad=True)
    t = torch.tensor(0.3, dtype=D64)
    f, trace, frobenius = field.forward_with_trace_and_frobenius(t, z)
    f_ref, jac = _autograd_jacobian(field, t, z)
    torch.testing.assert_close(f, f_ref)
    torch.testing.assert_close(trace, jac.diagonal(dim1=1, dim2=2).sum(dim=1))
    torch.testing.assert_close(frobenius, jac.square().sum(dim=(1, 2)))


class ExactPenaltyDynamics(nn.Module):
    """d/dt (z, log p, kinetic, frobenius) with the trace and ||df/dz||_F^2 from autograd Jacobians."""

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func

    def forward(self, t, state):
        with torch.enable_grad():
            z = state[0] if state[0].requires_grad else state[0].detach().requires_grad_(True)
            f, jac = _autograd_jacobian(self.func, t, z)
        trace = jac.diagonal(dim1=1, dim2=2).sum(dim=1)
        return f, -trace, f.square().sum(dim=1), jac.square().sum(dim=(1, 2))


@pytest.mark.parametrize("gradient", [Direct(), Adjoint()], ids=["direct", "adjoint"])
def test_cnf_closed_form_penalties_match_autograd_jacobians_along_the_solve(gradient):
    """The no-autograd path of a HyperPlanarField CNF (kinetic + exact Frobenius) against an augmented
    solve whose trace and Frobenius come from autograd Jacobians: values and parameter gradients."""
    from neuralode.flows import CNF, HyperPlanarField
    from neuralode.flows.cnf import closed_form_penalties

    torch.manual_seed(3)
    field = HyperPlanarField(2, 6, hidden=8).double()
    reg = Regularization(kinetic=0.5, jacobian=0.25)
    assert closed_form_penalties(field, "closed_form", reg.terms)
    assert not closed_form_penalties(field, "closed_form", ("kinetic", "time_derivative"))
    solver = SolverConfig(rtol=1e-10, atol=1e-10, gradient=gradient, regularization=reg)
    flow = CNF(field, 2, trace="closed_form", solver=solver)
    x = torch.randn(4, 2, dtype=D64)
    state = torch.random.get_rng_state()
    loss = -flow.log_prob(x).mean() + flow.last_regularization
    assert torch.equal(torch.random.get_rng_state(), state)  # no noise drawn: the penalty is exact
    grads = torch.autograd.grad(loss, tuple(field.parameters()))

    zeros = torch.zeros(4, dtype=D64)
    times = torch.tensor([1.0, 0.0], dtype=D64)
    z0, delta, kinetic, frobenius = (
        y[-1] for y in solve(ExactPenaltyDynamics(field), (x, zeros, zeros, zeros), times, rtol=1e-10,
                             atol=1e-10, gradient=Direct()).ys
    )  # fmt: skip
    ref_penalties = {"kinetic": -kinetic.mean(), "jacobian": -frobenius.mean()}  # t runs from 1 to 0
    for name, value in ref_penalties.items():
        torch.testing.assert_close(flow.last_penalties[name], value, rtol=1e-7, atol=1e-10)
    logp = -0.5 * z0.square().sum(dim=1) - math.log(2 * math.pi) - delta
    ref_loss = -logp.mean() + 0.5 * ref_penalties["kinetic"] + 0.25 * ref_penalties["jacobian"]
    torch.testing.assert_close(loss, ref_loss, rtol=1e-8, atol=1e-10)
    for g, h in zip(grads, torch.autograd.grad(ref_loss, tuple(field.parameters())), strict=True):
        torch.testing.assert_close(g, h, rtol=1e-6, atol=1e-8)


def test_latent_ode_integrates_the_penalties_and_zero_weights_are_the_plain_solve():
    from neuralode.models.latent_ode import LatentODE

    z0, times = torch.randn(3, 4), torch.linspace(0.0, 1.0, 5)
    base = SolverConfig(rtol=1e-5, atol=1e-5)
    plain = LatentODE(solver=base)
    zero = LatentODE(solver=base.replace(regularization=Regularization()))
    zero.load_state_dict(plain.state_dict())
    assert torch.equal(zero.solve(z0, times), plain.solve(z0, times))
    assert zero.last_stats.forward == plain.last_stats.forward and zero.last_regularization.item() == 0
    reg = LatentODE(solver=base.replace(regularization=Regularization(kinetic=1.0, jacobian=1.0)))
    reg.load_state_dict(plain.state_dict())
    path = reg.solve(z0, times)
    torch.testing.assert_close(path, plain.solve(z0, times), rtol=1e-6, atol=1e-6)
    assert set(reg.last_penalties) == {"kinetic", "jacobian"} and reg.last_regularization.item() > 0
    grads = torch.autograd.grad(reg.last_regularization, tuple(reg.dynamics.parameters()))
    assert any(g.abs().sum() > 0 for g in grads)
