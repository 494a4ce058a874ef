"""odeint_checkpoint with the adaptive implicit methods (kvaerno3, kvaerno5): the backward pass replays
the recorded accepted steps with the method's own Newton step, so its gradient is direct backprop's
(to Newton's tolerance: the replay's Newton iterations start from a fresh Jacobian in each piece) and
the adjoint's to the solve's tolerance, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import neuralode.solvers.esdirk as esdirk
from neuralode import SolveStats, odeint, odeint_adjoint, odeint_checkpoint
from neuralode.errors import SolverError

from .conftest import ESDIRK_METHODS

F64 = torch.float64
TIMES = [0.0, 0.05, 0.1, 0.3]


class StiffNonlinear(nn.Module):
    """y' = A y + w sin(y), A with eigenvalues -100 and -1: stiff, with a nonlinear Newton system."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([[-100.0, 1.0], [0.0, -1.0]], dtype=F64))
        self.w = nn.Parameter(torch.tensor(0.5, dtype=F64))

    def forward(self, t, y):
        return self.a @ y + self.w * torch.sin(y)


def _gradient(solve, method: str, rtol: float, stats: SolveStats | None = None, **kwargs) -> torch.Tensor:
    func = StiffNonlinear()
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    ys = solve(func, y0, torch.tensor(TIMES, dtype=F64), method=method, rtol=rtol, atol=rtol * 1e-2,
               stats=stats, **kwargs)  # fmt: skip
    loss = (ys[1:] ** 2).sum() + ys[-1, 0]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, (y0, func.a, func.w))])


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("method", ESDIRK_METHODS)
def test_checkpoint_gradient_is_direct_backprops(method, every):
    """Measured 6e-9 to 1e-8 relative (Newton's tolerance is sqrt(rtol) = 1e-3 of the step's here; the
    same with the fixed 1e-2 before it): far below the gradient's own discretisation error (the
    adjoint's differs by 2e-6 to 5e-6 here)."""
    stats = SolveStats()
    got = _gradient(odeint_checkpoint, method, 1e-6, stats, checkpoint_every=every)
    direct = _gradient(odeint, method, 1e-6)
    assert _relative(got, direct) < 1e-6
    adjoint = _gradient(odeint_adjoint, method, 1e-6)
    assert _relative(got, adjoint) < 1e-3
    counts = stats.forward
    assert 0 < counts.n_checkpoints <= counts.n_accepted // every + 1
    assert stats.backward.nfe > 0 and stats.backward.n_newton_iters > 0  # the replay's own Newton work


def test_checkpoint_gradient_converges_to_the_adjoints():
    """At a tight tolerance the discrete gradient (checkpoint) and the continuous one (adjoint) meet."""
    got = _gradient(odeint_checkpoint, "kvaerno5", 1e-10)
    assert _relative(got, _gradient(odeint_adjoint, "kvaerno5", 1e-10)) < 1e-6
    assert _relative(got, _gradient(odeint, "kvaerno5", 1e-10)) < 1e-9


def test_a_replayed_step_that_fails_raises_naming_its_time(monkeypatch):
    """A replayed step was accepted and cannot be shrunk: Newton failing there is an error, not a skip."""
    func = StiffNonlinear()
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    ys = odeint_checkpoint(func, y0, torch.tensor(TIMES, dtype=F64), method="kvaerno5", rtol=1e-6, atol=1e-8)
    monkeypatch.setattr(esdirk, "_solve_stages", lambda *args, **kwargs: esdirk._Stages(None, None, 1, 0.0))
    with pytest.raises(SolverError, match=r"the replayed step from t=.* failed \(Newton's method did not"):
        ys.sum().backward()
