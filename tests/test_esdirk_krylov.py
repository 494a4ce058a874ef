"""Matrix-free Newton-Krylov for kvaerno3/kvaerno5: GMRES and the Jacobian-vector products against dense
linear algebra, the Krylov path against the dense path and closed forms, a state beyond the dense
limit, gradients (direct, adjoint, checkpointed) against matrix_exp's derivative, and a Newton failure
turned into a rejected step."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp
from torch import nn

from neuralode import SolveStats, odeint, odeint_adjoint, odeint_checkpoint
from neuralode.solvers.krylov import Linearization, gmres

from .conftest import ESDIRK_METHODS

F64 = torch.float64
KRYLOV = {"linear_solver": "krylov"}
PAIR = torch.tensor([[-1000.0, 1.0], [0.0, -1.0]], dtype=F64)  # eigenvalues -1000 and -1


# ----- GMRES and the products -----
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), restart=st.integers(1, 30), seed=st.integers(0, 10_000))
def test_gmres_solves_nonsymmetric_systems_to_its_tolerance(n, restart, seed):
    gen = torch.Generator().manual_seed(seed)
    a = 2.0 * torch.eye(n, dtype=F64) + torch.randn(n, n, generator=gen, dtype=F64) / (2 * n**0.5)
    b = torch.randn(n, generator=gen, dtype=F64)
    result = gmres(lambda v: a @ v, b, rtol=1e-10, restart=restart, max_iters=2000)
    assert result.converged
    assert (
        float(torch.linalg.vector_norm(a @ result.x - b)) <= 1e-10 * float(torch.linalg.vector_norm(b)) * 1.01
    )
    torch.testing.assert_close(result.x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-8)


def test_gmres_out_of_products_returns_its_best_iterate_and_says_so():
    a = torch.diag(torch.logspace(0, 4, 200, dtype=F64))  # 200 distinct eigenvalues: needs ~200 products
    b = torch.ones(200, dtype=F64)
    result = gmres(lambda v: a @ v, b, rtol=1e-12, restart=10, max_iters=30)
    assert not result.converged and result.iters <= 30
    assert float(torch.linalg.vector_norm(a @ result.x - b)) < float(torch.linalg.vector_norm(b))


def test_gmres_of_a_zero_right_hand_side_is_zero_without_products():
    result = gmres(lambda v: 2 * v, torch.zeros(5, dtype=F64), rtol=1e-8)
    assert result.converged and result.iters == 0 and not result.x.any()


def _mlp_field():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 6)).double()
    return lambda t, y, perturb: net(y.reshape(2, 3).repeat(1, 2)).reshape(2, 6)[:, :3].reshape(-1) - 50 * y


@pytest.mark.parametrize(("mode", "tol"), [("forward", 1e-12), ("backward", 1e-12), ("differences", 1e-6)])
def test_jacobian_vector_products_match_the_autograd_jacobian(mode, tol):
    func = _mlp_field()
    y, v = torch.randn(6, dtype=F64), torch.randn(6, dtype=F64)
    jac = torch.autograd.functional.jacobian(lambda z: func(0.0, z, 0.0), y)
    lin = Linearization(func, 0.0, y, 0.0, mode)
    torch.testing.assert_close(lin.value, func(0.0, y, 0.0).detach())
    torch.testing.assert_close(lin.jvp(v), jac @ v, rtol=tol, atol=tol * float(jac.abs().max()))
    assert lin.mode == mode


@pytest.mark.parametrize("mode", ["forward", "backward"])
def test_autograd_products_of_a_field_that_detaches_its_state_are_refused(mode):
    with pytest.raises(ValueError, match=rf"options\['jvp'\]='{mode}' .* detaches its input.*'differences'"):
        Linearization(lambda t, y, p: -y.detach(), 0.0, torch.ones(3, dtype=F64), 0.0, mode)


# ----- solves -----
class ReactionDiffusion(nn.Module):
    """u_t = c u_xx + u (1 - w), w_t = -k (w - u^2) on a grid with reflecting ends: the fast species w
    relaxes at rate k onto u^2, so u follows the bistable u_t = c u_xx + u - u^3 (stiff from k)."""

    def __init__(self, n: int, k: float = 1e4, c: float = 100.0) -> None:
        super().__init__()
        self.n, self.k, self.c = n, k, c

    def forward(self, t, y):
        u, w = y[: self.n], y[self.n :]
        lap = torch.cat([2 * (u[1:2] - u[:1]), u[2:] - 2 * u[1:-1] + u[:-2], 2 * (u[-2:-1] - u[-1:])])
        return torch.cat([self.c * lap + u * (1 - w), -self.k * (w - u * u)])


def _rd_start(n: int) -> torch.Tensor:
    x = torch.linspace(0, 1, n, dtype=F64)
    u = torch.exp(-(((x - 0.5) / 0.15) ** 2))
    return torch.cat([u, u * u])


def _scipy_radau(func, y0, t):
    span = (float(t[0]), float(t[-1]))
    sol = solve_ivp(lambda s, y: func(s, torch.from_numpy(y)).numpy(), span, y0.numpy(), method="Radau",
                    t_eval=t.numpy(), rtol=1e-10, atol=1e-12)  # fmt: skip
    return torch.from_numpy(sol.y.T)


@pytest.mark.parametrize("method", ESDIRK_METHODS)
def test_krylov_and_dense_paths_agree_with_radau_on_a_stiff_reaction_diffusion(method):
    func, y0, t = ReactionDiffusion(30), _rd_start(30), torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    reference = _scipy_radau(func, y0, t)
    stats = {}
    with torch.no_grad():
        for solver in ("dense", "krylov"):
            stats[solver] = SolveStats()
            ys = odeint(func, y0, t, method=method, rtol=1e-6, atol=1e-8, options={"linear_solver": solver},
                        stats=stats[solver])  # fmt: skip
            scaled = (ys - reference).abs() / (1e-8 + 1e-6 * reference.abs())
            assert float(scaled.max()) < 10.0, solver
    dense, krylov = stats["dense"].forward, stats["krylov"].forward
    assert dense.n_factorizations > 0 and dense.n_krylov_iters == 0
    assert krylov.n_factorizations == 0 and krylov.n_krylov_iters >= krylov.n_newton_iters > 0
    assert krylov.n_accepted <= 2 * dense.n_accepted  # the inexact linear solves do not cost steps


@pytest.mark.parametrize("jvp", ["forward", "backward", "differences"])
def test_every_product_mode_gives_the_same_solution(jvp):
    """The products change Newton's path, not the stage equations it solves: answers agree to Newton's
    tolerance (a hundredth of the step's)."""
    func, y0, t = ReactionDiffusion(4), _rd_start(4), torch.tensor([0.0, 0.05], dtype=F64)
    with torch.no_grad():
        dense = odeint(
            func, y0, t, method="kvaerno3", rtol=1e-6, atol=1e-8, options={"linear_solver": "dense"}
        )
        ys = odeint(func, y0, t, method="kvaerno3", rtol=1e-6, atol=1e-8, options={**KRYLOV, "jvp": jvp})
    torch.testing.assert_close(ys, dense, rtol=1e-6, atol=1e-8)


def _pairs(y):
    return (y.reshape(-1, 2) @ PAIR.T).reshape(-1)


def test_a_state_beyond_the_dense_limit_is_solved_matrix_free_by_default():
    """8,000 entries (the dense path refuses above 6,000): 'auto' goes to Krylov; closed form per pair."""
    y0 = torch.linspace(0.5, 2.0, 8000, dtype=F64)
    t = torch.tensor([0.0, 0.5], dtype=F64)
    stats = SolveStats()
    with torch.no_grad():
        ys = odeint(lambda t, y: _pairs(y), y0, t, method="kvaerno3", rtol=1e-6, atol=1e-9, stats=stats)
    exact = (y0.reshape(-1, 2) @ torch.linalg.matrix_exp(PAIR * 0.5).T).reshape(-1)
    assert float(((ys[-1] - exact).abs() / (1e-9 + 1e-6 * exact.abs())).max()) < 10.0
    assert stats.forward.n_krylov_iters > 0 and stats.forward.n_factorizations == 0


def test_float32_states_work_on_the_krylov_path():
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float32)
    ys = odeint(lambda t, y: _pairs(y.double()).float(), y0, torch.tensor([0.0, 1.0]), method="kvaerno5",
                rtol=1e-4, atol=1e-6, options=KRYLOV)  # fmt: skip
    exact = torch.linalg.matrix_exp(PAIR) @ y0.double()
    assert ys.dtype == torch.float32
    torch.testing.assert_close(ys[-1].double(), exact, rtol=1e-3, atol=1e-5)


def test_a_newton_failure_on_the_krylov_path_rejects_the_step_instead_of_raising():
    """One GMRES product per Newton iteration is steepest descent: Newton fails on the long steps of a
    stiff problem, and the engine retries them shorter until it converges."""
    y0, t = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    stats = SolveStats()
    ys = odeint(lambda t, y: _pairs(y), y0, t, method="kvaerno5", rtol=1e-6, atol=1e-9, stats=stats,
                options={**KRYLOV, "krylov_max_iters": 1, "max_iters": 4})  # fmt: skip
    assert stats.forward.n_rejected > 0
    torch.testing.assert_close(ys[-1], torch.linalg.matrix_exp(PAIR) @ y0, rtol=1e-4, atol=1e-8)


# ----- gradients -----
def _theta_problem():
    theta = torch.tensor([-200.0, 1.0, -1.0], dtype=F64, requires_grad=True)

    def matrix(th):
        return torch.stack([torch.stack([th[0], th[1]]), torch.stack([th.new_zeros(()), th[2]])])

    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(theta.detach().clone())

        def forward(self, t, y):
            return matrix(self.theta) @ y

    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor([0.0, 0.02, 0.05], dtype=F64)
    exact_loss = sum((torch.linalg.matrix_exp(matrix(theta) * float(ti)) @ y0).sum() for ti in t[1:])
    (exact,) = torch.autograd.grad(exact_loss, theta)
    return Field(), y0, t, exact


@pytest.mark.parametrize("front_door", ["direct", "adjoint", "checkpoint"])
def test_krylov_gradients_match_the_derivative_of_matrix_exp(front_door):
    field, y0, t, exact = _theta_problem()
    options = {"rtol": 1e-10, "atol": 1e-12, "method": "kvaerno5", "options": KRYLOV}
    if front_door == "direct":
        ys = odeint(field, y0, t, **options)
    elif front_door == "adjoint":
        ys = odeint_adjoint(field, y0, t, adjoint_params=tuple(field.parameters()), **options)
    else:
        ys = odeint_checkpoint(field, y0, t, **options)
    (grad,) = torch.autograd.grad(ys[1:].sum(), field.theta)
    torch.testing.assert_close(grad, exact, rtol=1e-5, atol=1e-7)


def test_krylov_direct_gradients_pass_gradcheck_in_float64():
    def solve(y0, scale):
        t = torch.tensor([0.0, 0.01], dtype=F64)
        return odeint(lambda t, y: scale * _pairs(y), y0, t, method="kvaerno5", rtol=1e-9, atol=1e-11,
                      options=KRYLOV)[-1]  # fmt: skip

    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    scale = torch.tensor(0.5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(solve, (y0, scale), eps=1e-6, atol=1e-6, rtol=1e-5)
