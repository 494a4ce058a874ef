"""Planar flows and CNFs: log-determinants and traces against brute-force Jacobians, Hutchinson's bias,
normalisation of a trained CNF's density, the 2-D targets and data, and bad input."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.func import jacrev, vmap

from neuralode import Adjoint, Direct, SolverConfig
from neuralode.flows import (
    CNF,
    ConcatMLPField,
    HyperPlanarField,
    PlanarFlow,
    PlanarLayer,
    energy,
    exact_trace,
    hutchinson_trace,
    log_normalizer,
    sample_dataset,
    sample_noise,
    standard_normal_logprob,
)
from neuralode.flows.base import grid_logprob_mass
from neuralode.flows.evaluation import evaluator


def _jacobian_trace(func, t, z):
    jac = vmap(jacrev(lambda x: func(t, x.unsqueeze(0)).squeeze(0)))(z)  # (batch, d, d)
    return jac.diagonal(dim1=1, dim2=2).sum(1)


def test_planar_layer_log_det_matches_brute_force_jacobian_determinant():
    torch.manual_seed(0)
    layer = PlanarLayer(3).double()
    with torch.no_grad():  # large weights, so that u_hat's correction matters
        layer.w.copy_(torch.tensor([1.5, -2.0, 0.7], dtype=torch.float64))
        layer.u.copy_(torch.tensor([-2.0, 1.0, 0.3], dtype=torch.float64))
        layer.b.fill_(0.3)
    z = torch.randn(16, 3, dtype=torch.float64)
    _, logdet = layer(z)
    jac = vmap(jacrev(lambda x: layer(x.unsqueeze(0))[0].squeeze(0)))(z)
    expected = torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(logdet, expected, rtol=1e-9, atol=1e-9)
    assert layer.w @ layer.u_hat() >= -1  # the invertibility condition (w^T u = -2.9 before the correction)


def test_planar_flow_log_prob_and_inverse_are_consistent():
    torch.manual_seed(1)
    flow = PlanarFlow(2, 8).double()
    for layer in flow.layers:
        layer.w.data.mul_(20)
        layer.u.data.mul_(20)
    z = torch.randn(64, 2, dtype=torch.float64)
    x, logq = flow.transform(z)
    torch.testing.assert_close(flow.inverse(x), z, rtol=0, atol=1e-8)
    # the forward map is the maximum-likelihood model's normalizing direction: densities agree
    jac = vmap(jacrev(lambda v: flow.transform(v.unsqueeze(0))[0].squeeze(0)))(z)
    torch.testing.assert_close(logq, standard_normal_logprob(z) - torch.linalg.slogdet(jac)[1])


def test_hyperplanar_closed_form_trace_matches_autograd():
    torch.manual_seed(2)
    field = HyperPlanarField(3, 8).double()
    t, z = torch.tensor(0.4, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    _, trace = field.forward_with_trace(t, z)
    torch.testing.assert_close(trace, _jacobian_trace(field, t, z))
    assert trace.abs().max() > 1e-3  # not trivially zero


def test_exact_trace_matches_autograd_jacobian_trace():
    torch.manual_seed(3)
    field = ConcatMLPField(4, hidden=16).double()
    t, z = torch.tensor(0.2, dtype=torch.float64), torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    trace = exact_trace(field(t, z), z)
    torch.testing.assert_close(trace, _jacobian_trace(field, t, z.detach()))


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_hutchinson_estimate_is_unbiased(kind):
    torch.manual_seed(4)
    field = ConcatMLPField(5, hidden=16).double()
    t = torch.tensor(0.5, dtype=torch.float64)
    z = torch.randn(1, 5, dtype=torch.float64).expand(4000, 5).clone().requires_grad_(True)
    estimates = hutchinson_trace(field(t, z), z, sample_noise(z, kind))  # 4000 draws at the same point
    exact = _jacobian_trace(field, t, z[:1].detach())[0]
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - exact) < 4 * standard_error
    assert estimates.std() > 0  # a real estimator, not the exact trace in disguise
    noise = sample_noise(z, kind)
    assert abs(noise.square().mean().item() - 1) < 0.05


@pytest.mark.parametrize("trace", ["closed_form", "exact", "hutchinson"])
def test_cnf_log_prob_matches_transform(trace):
    """Pushing z forward and pulling x back give the same density, whatever the trace method."""
    torch.manual_seed(5)
    func = HyperPlanarField(2, 4) if trace == "closed_form" else ConcatMLPField(2, 16)
    flow = CNF(func.double(), 2, trace=trace, solver=SolverConfig(rtol=1e-8, atol=1e-8))
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(3)
    z = torch.randn(32, 2, dtype=torch.float64)
    x, logq = flow.transform(z)
    if trace == "hutchinson":  # unbiased only: compare the means over many points loosely
        assert abs((flow.log_prob(x) - logq).mean()) < 0.2
    else:
        torch.testing.assert_close(flow.log_prob(x), logq, rtol=1e-5, atol=1e-5)
    assert (x - z).abs().max() > 0.05  # the flow moved the points


def test_trained_cnf_density_integrates_to_one_on_a_grid():
    torch.manual_seed(6)
    flow = CNF(HyperPlanarField(2, 8), 2, trace="closed_form", solver=SolverConfig(rtol=1e-5, atol=1e-5))
    data = sample_dataset("moons", 512, seed=0)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    start = None
    for _ in range(15):
        loss = -flow.log_prob(data).mean()
        start = loss.item() if start is None else start
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < start - 0.05  # it learned something
    axis = torch.linspace(-7, 7, 141)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        mass = grid_logprob_mass(flow.log_prob(grid), float(axis[1] - axis[0]))
    assert abs(mass - 1) < 0.02


def test_cnf_gradients_adjoint_match_direct_backprop():
    torch.manual_seed(7)
    x = torch.randn(16, 2, dtype=torch.float64)
    grads = []
    for gradient in (Adjoint(), Direct()):
        torch.manual_seed(8)
        solver = SolverConfig(rtol=1e-9, atol=1e-9, gradient=gradient)
        flow = CNF(ConcatMLPField(2, 8).double(), 2, trace="exact", solver=solver)
        flow.log_prob(x).mean().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in flow.parameters()]))
        assert flow.last_stats.nfe_forward > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_hutchinson_noise_is_fixed_per_solve_so_adjoint_matches_backprop():
    """The adjoint's backward solve must see the forward solve's noise: same gradients as backprop."""
    x = torch.randn(16, 2, dtype=torch.float64)
    grads = []
    for gradient in (Adjoint(), Direct()):
        torch.manual_seed(9)
        solver = SolverConfig(rtol=1e-9, atol=1e-9, options={"max_num_steps": 1000}, gradient=gradient)
        flow = CNF(ConcatMLPField(2, 8).double(), 2, trace="hutchinson", noise="rademacher", solver=solver)
        torch.manual_seed(10)  # the same noise draw for both
        flow.log_prob(x).mean().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in flow.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_energies_are_normalised_by_log_normalizer():
    axis = torch.linspace(-8, 8, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    for name in ("u1", "u2", "u3", "u4"):
        logp = -energy(name)(grid) - log_normalizer(name)
        assert abs(grid_logprob_mass(logp, float(axis[1] - axis[0])) - 1) < 1e-3


def test_datasets_are_seeded_and_shaped():
    for name in ("circles", "moons"):
        a, b = sample_dataset(name, 300, seed=1), sample_dataset(name, 300, seed=1)
        assert a.shape == (300, 2) and torch.equal(a, b)
        assert not torch.equal(a, sample_dataset(name, 300, seed=2))
    radii = sample_dataset("circles", 2000, seed=0).norm(dim=1)
    assert ((radii - 3).abs() < 0.8).float().mean() > 0.45 and (
        (radii - 1.5).abs() < 0.8
    ).float().mean() > 0.45


def test_bad_input_raises_errors_naming_the_argument():
    with pytest.raises(ValueError, match="trace"):
        CNF(ConcatMLPField(2), 2, trace="approx")
    with pytest.raises(ValueError, match="closed_form"):
        CNF(ConcatMLPField(2), 2, trace="closed_form")
    with pytest.raises(ValueError, match="noise"):
        CNF(ConcatMLPField(2), 2, trace="hutchinson", noise="uniform")
    with pytest.raises(ValueError, match="t1"):
        CNF(ConcatMLPField(2), 2, t1=0.0)
    with pytest.raises(ValueError, match="width"):
        HyperPlanarField(2, 0)
    with pytest.raises(ValueError, match="depth"):
        PlanarFlow(2, -1)
    with pytest.raises(TypeError, match=r"solver must be a neuralode\.SolverConfig"):
        CNF(ConcatMLPField(2), 2, solver={"method": "dopri5", "rtol": 1e-5})
    with pytest.raises(ValueError, match="x must have 2 columns"):
        CNF(ConcatMLPField(2), 2).log_prob(torch.randn(4, 3))
    with pytest.raises(ValueError, match="z must be a floating tensor"):
        PlanarFlow(2, 2).transform(torch.randn(4))
    with pytest.raises(ValueError, match="target"):
        energy("u5")
    with pytest.raises(ValueError, match="dataset"):
        sample_dataset("spirals", 10, 0)


def test_a_changed_solver_is_a_new_flow_sharing_the_parameters_and_the_original_is_untouched():
    torch.manual_seed(11)
    original = SolverConfig(rtol=1e-5, atol=1e-5)
    flow = CNF(ConcatMLPField(2, 8), 2, trace="exact", solver=original)
    loose = flow.with_solver(dataclasses.replace(flow.solver, rtol=1e-2, atol=1e-2, gradient=Direct()))
    assert flow.solver is original and original == SolverConfig(rtol=1e-5, atol=1e-5)
    assert (loose.solver.rtol, loose.solver.gradient) == (1e-2, Direct())
    assert all(a is b for a, b in zip(flow.parameters(), loose.parameters(), strict=True))
    x = torch.randn(64, 2)
    tight_logp, loose_logp = flow.log_prob(x), loose.log_prob(x)
    assert loose.last_stats.nfe_forward < flow.last_stats.nfe_forward  # each solved with its own tolerance
    assert (tight_logp - loose_logp).abs().max() < 0.05
    with pytest.raises(dataclasses.FrozenInstanceError):
        flow.solver.rtol = 1e-3


def test_evaluation_with_the_exact_trace_leaves_the_trained_flow_as_it_was():
    torch.manual_seed(12)
    flow = CNF(ConcatMLPField(2, 8), 2, trace="hutchinson", solver=SolverConfig(rtol=1e-5, atol=1e-5))
    exact = flow.with_trace("exact")
    assert flow.trace == "hutchinson" and exact.trace == "exact" and exact.solver is flow.solver
    metrics = evaluator("mle", "moons", 64, seed=0, device=torch.device("cpu"), eval_trace="exact")(flow)
    assert flow.trace == "hutchinson" and flow.solver == SolverConfig(rtol=1e-5, atol=1e-5)
    x = sample_dataset("moons", 64, seed=1_000_000)  # the evaluator's held-out points (seed + 1e6)
    torch.testing.assert_close(
        torch.tensor(metrics["test_nll"]), -exact.log_prob(x).mean(), rtol=1e-5, atol=1e-5
    )
