"""per_sample=True with the adaptive ESDIRK methods (issue 22): each sample against its joint solve
alone, SciPy's Radau, finite differences; Newton failures and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from neuralode import SolveStats, odeint, odeint_adjoint, odeint_checkpoint, odeint_event

D = torch.float64
LAM = torch.logspace(0, 4, 5, dtype=D)
T = torch.linspace(0.0, 2.0, 5, dtype=D)


def stiff_rows(lam):
    """y' = -lam_b (y - cos t), one lam per row; t is (B,) per sample, a scalar jointly."""
    return lambda t, y: -lam[:, None] * (y - torch.cos(t).reshape(-1, 1))


@pytest.mark.parametrize("method", ["kvaerno3", "kvaerno5"])
def test_each_sample_equals_its_joint_solve_alone(method):
    stats = SolveStats()
    y0 = torch.ones(5, 1, dtype=D)
    ys = odeint(stiff_rows(LAM), y0, T, method=method, rtol=1e-6, atol=1e-8, per_sample=True, stats=stats)
    joint = SolveStats()
    odeint(stiff_rows(LAM), y0, T, method=method, rtol=1e-6, atol=1e-8, stats=joint)
    for b in range(5):
        solo = SolveStats()
        lb = float(LAM[b])
        yb = odeint(lambda t, y, lb=lb: -lb * (y - torch.cos(t)), y0[b], T, method=method, rtol=1e-6,
                    atol=1e-8, stats=solo)  # fmt: skip
        # the same steps and counts (below); the values differ by rounding (batched against single
        # operations), which the stiffest row (lam = 1e4) amplifies to some 1e-8 relative, 100x under rtol
        torch.testing.assert_close(ys[:, b], yb, rtol=1e-7, atol=1e-9)
        assert int(stats.forward.n_steps[b]) == solo.forward.n_steps
        assert int(stats.forward.n_newton_iters[b]) == solo.forward.n_newton_iters
        assert int(stats.forward.n_factorizations[b]) == solo.forward.n_factorizations
    assert int(stats.forward.n_steps.sum()) < 5 * joint.forward.n_steps


def test_accuracy_against_radau_per_row():
    y0 = torch.ones(5, 1, dtype=D)
    ys = odeint(stiff_rows(LAM), y0, T, method="kvaerno5", rtol=1e-8, atol=1e-10, per_sample=True)
    for b in range(5):
        lb = float(LAM[b])
        ref = solve_ivp(lambda t, y, lb=lb: -lb * (y - np.cos(t)), (0, 2), [1.0], method="Radau", rtol=1e-10,
                        atol=1e-12, t_eval=T.numpy())  # fmt: skip
        np.testing.assert_allclose(ys[:, b, 0].numpy(), ref.y[0], rtol=1e-6, atol=1e-7)


def test_float32_runs():
    lam = LAM.float()
    ys = odeint(stiff_rows(lam), torch.ones(5, 1), T.float(), method="kvaerno3", rtol=1e-4, atol=1e-6,
                per_sample=True)  # fmt: skip
    assert ys.dtype == torch.float32 and bool(torch.isfinite(ys).all())
    assert abs(float(ys[-1, -1, 0]) - np.cos(2.0)) < 1e-2


def test_newton_failure_rejects_not_raises():
    """As the joint test: max_iters=3 from a first step of 1 cannot converge for -100 y^3."""
    stats = SolveStats()
    y0 = torch.ones(2, 1, dtype=D)
    ys = odeint(lambda t, y: -100.0 * y**3, y0, torch.tensor([0.0, 1.0], dtype=D), method="kvaerno5",
                rtol=1e-6, atol=1e-9, per_sample=True, stats=stats,
                options={"max_iters": 3, "first_step": 1.0, "dfactor": 0.5})  # fmt: skip
    assert ys[-1, :, 0].tolist() == pytest.approx([1 / np.sqrt(201)] * 2, rel=1e-5)
    assert (stats.forward.n_rejected >= 2).all()


def test_direct_gradients_gradcheck():
    lam = torch.tensor([3.0, 300.0], dtype=D, requires_grad=True)
    y0 = torch.tensor([[1.0], [0.5]], dtype=D, requires_grad=True)

    def run(lam, y0):
        f = lambda t, y: -lam[:, None] * (y - torch.cos(t)[:, None])  # noqa: E731
        return odeint(f, y0, torch.tensor([0.0, 0.2], dtype=D), method="kvaerno5", rtol=1e-9, atol=1e-11,
                      per_sample=True)[-1]  # fmt: skip

    assert torch.autograd.gradcheck(run, (lam, y0), atol=1e-5, rtol=1e-4)


def test_refusals_name_the_limit():
    y0, t = torch.ones(2, 1, dtype=D), torch.tensor([0.0, 1.0], dtype=D)
    with pytest.raises(ValueError, match="linear_solver"):
        odeint(
            lambda t, y: -y, y0, t, method="kvaerno5", per_sample=True, options={"linear_solver": "krylov"}
        )
    with pytest.raises(ValueError, match="more than 6000"):
        odeint(lambda t, y: -y, torch.ones(1, 6001, dtype=D), t, method="kvaerno3", per_sample=True)
    with pytest.raises(ValueError, match="odeint_checkpoint with per_sample=True"):
        odeint_checkpoint(lambda t, y: -y, y0, t, method="kvaerno3", per_sample=True, adjoint_params=())
    for method in ("implicit_euler", "radauIIA3", "sdirk2", "trbdf2"):
        with pytest.raises(ValueError, match=f"method='{method}' does not support per_sample=True"):
            odeint(lambda t, y: -y, y0, t, method=method, per_sample=True)


def test_adjoint_matches_direct_backprop():
    """The per-sample adjoint's backward solve is a per-sample ESDIRK solve (difference Jacobians of the
    augmented field, which has no graph)."""
    lam = torch.tensor([3.0, 300.0], dtype=D, requires_grad=True)
    y0 = torch.tensor([[1.0], [0.5]], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.5], dtype=D)
    grads = []
    for adjoint in (False, True):
        f = stiff_rows(lam)
        kw = {"method": "kvaerno5", "rtol": 1e-9, "atol": 1e-11, "per_sample": True}
        ys = odeint_adjoint(f, y0, t, adjoint_params=(lam,), **kw) if adjoint else odeint(f, y0, t, **kw)
        grads.append(torch.autograd.grad(ys[-1].sum(), (y0, lam)))
    for direct, adj in zip(*grads, strict=True):
        torch.testing.assert_close(adj, direct, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("method", ["kvaerno3", "kvaerno5"])
def test_per_sample_events_hit_the_closed_form_and_match_each_solo_solve(method):
    """Falling balls (h' = v, v' = -g_b) with a stiff follower z' = -lam_b (z - h); the event h = 0 at
    t* = sqrt(2 h0 / g_b), dt*/dh0 = 1 / (g_b t*), dt*/dv0 = 1 / g_b; each row as its own joint solve."""
    g = torch.tensor([9.81, 5.0, 20.0], dtype=D)
    lam = torch.tensor([1.0, 1e3, 1e5], dtype=D)

    def field(g, lam):
        return lambda t, y: torch.stack([y[..., 1], -g + 0 * y[..., 0], -lam * (y[..., 2] - y[..., 0])], -1)

    y0 = torch.tensor([[10.0, 0.0, 10.0]] * 3, dtype=D, requires_grad=True)
    kw = dict(method=method, rtol=1e-8, atol=1e-10)
    t_event, _ = odeint_event(field(g, lam), y0, torch.tensor(0.0, dtype=D), event_fn=lambda t, y: y[..., 0],
                              per_sample=True, **kw)  # fmt: skip
    exact = (2 * 10.0 / g).sqrt()
    torch.testing.assert_close(t_event.detach(), exact, rtol=1e-6, atol=0)
    (grad,) = torch.autograd.grad(t_event.sum(), y0)
    torch.testing.assert_close(grad[:, 0], 1 / (g * exact), rtol=1e-5, atol=0)
    torch.testing.assert_close(grad[:, 1], 1 / g, rtol=1e-5, atol=0)
    for b in range(3):
        solo, _ = odeint_event(field(g[b], lam[b]), y0[b].detach(), torch.tensor(0.0, dtype=D),
                               event_fn=lambda t, y: y[0], **kw)  # fmt: skip
        torch.testing.assert_close(t_event[b].detach(), solo.detach(), rtol=1e-9, atol=1e-12)


def test_rows_with_their_own_rtol_take_their_solo_newton_iterations():
    """A (B,) rtol across Newton's sqrt(rtol) rule (1e-2 of the tolerance at 1e-4, 1e-3 at 1e-6, 1e-4 at
    1e-8): each row's steps and Newton iterations are those of its solo solve at its own rtol."""
    rtols = torch.tensor([1e-4, 1e-6, 1e-8], dtype=D)
    lam = torch.tensor([10.0, 100.0, 1000.0], dtype=D)
    y0 = torch.ones(3, 1, dtype=D)
    stats = SolveStats()
    ys = odeint(stiff_rows(lam), y0, T, method="kvaerno5", rtol=rtols, atol=rtols * 1e-2, per_sample=True,
                stats=stats)  # fmt: skip
    for b in range(3):
        solo = SolveStats()
        lb, rb = float(lam[b]), float(rtols[b])
        yb = odeint(lambda t, y, lb=lb: -lb * (y - torch.cos(t)), y0[b], T, method="kvaerno5", rtol=rb,
                    atol=rb * 1e-2, stats=solo)  # fmt: skip
        torch.testing.assert_close(ys[:, b], yb, rtol=1e-7, atol=1e-9)
        assert int(stats.forward.n_steps[b]) == solo.forward.n_steps
        assert int(stats.forward.n_newton_iters[b]) == solo.forward.n_newton_iters
