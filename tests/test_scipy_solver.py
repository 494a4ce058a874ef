"""``scipy_solver``: every SciPy method name, the caller's dtype/device, the adjoint, events, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralode import SolverError, SolveStats, odeint, odeint_adjoint

from .problems import lotka_volterra, scipy_reference

F64 = torch.float64
SCIPY_NAMES = ["RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA"]


@pytest.mark.parametrize("name", SCIPY_NAMES)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_each_scipy_solver_matches_the_reference(name, reverse):
    f, np_f, y0 = lotka_volterra()
    t = np.linspace(0.0, 3.0, 5)
    if reverse:
        y0 = scipy_reference(np_f, y0, t)[-1]
        t = t[::-1].copy()
    ref = scipy_reference(np_f, y0, t)
    stats = SolveStats()
    ys = odeint(f, torch.tensor(y0), torch.tensor(t), rtol=1e-8, atol=1e-10, method="scipy_solver",
                options={"solver": name}, stats=stats)  # fmt: skip
    assert ys.dtype == F64 and ys.shape == (5, 2)
    np.testing.assert_allclose(ys.numpy(), ref, rtol=1e-5, atol=1e-7)
    assert stats.forward.n_steps > 0 and stats.forward.nfe > 0


def test_float32_state_comes_back_in_float32():
    f, _, y0 = lotka_volterra()
    ys = odeint(f, torch.tensor(y0, dtype=torch.float32), torch.tensor([0.0, 1.0]), method="scipy_solver",
                options={"solver": "DOP853"})  # fmt: skip
    assert ys.dtype == torch.float32


@pytest.mark.parametrize("name", ["DOP853", "Radau", "LSODA"])
def test_adjoint_gradients_through_scipy_match_backprop_through_dopri5(name):
    lin = torch.nn.Linear(2, 2).double()

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, t, y):
            return torch.tanh(self.lin(y))

    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ys = odeint(Field(), y0, t, rtol=1e-10, atol=1e-12)
    expected = torch.autograd.grad(ys.square().sum(), (y0, *lin.parameters()))
    ys = odeint_adjoint(
        Field(), y0, t, rtol=1e-10, atol=1e-12, method="scipy_solver", options={"solver": name}
    )
    got = torch.autograd.grad(ys.square().sum(), (y0, *lin.parameters()))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_odeint_warns_that_scipy_does_not_backpropagate():
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    with pytest.warns(UserWarning, match="scipy_solver does not backpropagate"):
        odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=F64), method="scipy_solver")


def test_event_with_scipy_solver():
    def ball(t, y):
        return torch.stack([y[1], -9.81 * torch.ones_like(y[1])])

    y0, t = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    options = {"solver": "RK45"}
    event_t, _ = odeint(ball, y0, t, event_fn=lambda t, y: y[0], method="scipy_solver", options=options)
    assert float(event_t) == pytest.approx((2.0 + np.sqrt(4.0 + 2 * 9.81)) / 9.81, abs=1e-9)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"solver": "odeint"}, r"options\['solver'\] must be one of RK45"),
        ({"solver": "RK45", "min_step": 1e-3}, r"options\['min_step'\] is only used by solver='LSODA'"),
        ({"solver": "LSODA", "max_step": -1.0}, r"options\['max_step'\] must be a number > 0"),
    ],
)
def test_bad_scipy_options_raise_before_work(options, message):
    calls = []
    with pytest.raises(ValueError, match=message):
        odeint(lambda t, y: calls.append(1) or -y, torch.ones(2), torch.tensor([0.0, 1.0]),
               method="scipy_solver", options=options)  # fmt: skip
    assert not calls


def test_scipy_failure_raises_solver_error_naming_the_time():
    with pytest.raises(SolverError, match=r"t="):
        odeint(
            lambda t, y: y**2,
            torch.ones(1, dtype=F64),
            torch.tensor([0.0, 2.0], dtype=F64),
            method="scipy_solver",
            options={"solver": "RK45"},
        )  # fmt: skip  (blows up at t=1)


def test_min_and_max_step_are_passed_to_scipy():
    stats = SolveStats()
    options = {"solver": "LSODA", "max_step": 0.01, "min_step": 1e-6, "first_step": 1e-3}
    odeint(lambda t, y: -y, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-3,
           method="scipy_solver", options=options, stats=stats)  # fmt: skip
    assert stats.forward.n_steps >= 100


def test_stiff_scipy_solver_refuses_a_state_too_large_for_its_dense_arrays():
    calls = []
    with pytest.raises(ValueError, match=r"'LSODA' allocates dense 20000 x 20000 arrays .* use 'RK45'"):
        odeint(lambda t, y: calls.append(1) or -y, torch.ones(20000), torch.tensor([0.0, 1.0]),
               method="scipy_solver", options={"solver": "LSODA"})  # fmt: skip
    assert not calls
