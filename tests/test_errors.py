"""Every bad input raises before any work, naming the argument; runtime failures name the time."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from neuralode import (
    MaxStepsExceededError,
    NonFiniteStateError,
    ODEBlock,
    SolverError,
    SolveStats,
    odeint,
    odeint_adjoint,
)


class Counting(nn.Module):
    """dy/dt = -y, counting calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, t, y):
        self.calls += 1
        return -self.w * y


T = torch.tensor([0.0, 1.0])
Y0 = torch.ones(3)

BAD_INPUTS = [
    ({"t": torch.zeros(2, 2)}, ValueError, "t must be 1-D"),
    ({"t": torch.tensor([])}, ValueError, "t must contain at least one"),
    ({"t": torch.tensor([0.0, 1.0, 1.0])}, ValueError, "t must be strictly"),
    ({"t": torch.tensor([0.0, 1.0, 0.5])}, ValueError, "t must be strictly"),
    ({"t": torch.tensor([0.0, math.nan])}, ValueError, "t contains NaN"),
    ({"t": [0.0, 1.0]}, TypeError, "t must be a 1-D torch.Tensor"),
    ({"y0": torch.ones(3, dtype=torch.int64)}, TypeError, "y0 must be floating point"),
    ({"y0": [1.0, 2.0]}, TypeError, r"y0\[0\] must be a torch.Tensor"),
    ({"rtol": 0.0, "atol": 0.0}, ValueError, "rtol and atol are both 0"),
    ({"atol": -1e-3}, ValueError, "atol must be a finite number >= 0"),
    ({"rtol": math.nan}, ValueError, "rtol must be"),
    ({"method": "adams"}, ValueError, 'method="adams" is unknown; choose one of: .*dopri5'),
    (
        {"options": {"frist_step": 0.1}},
        ValueError,
        "options has unknown key.*'frist_step'.*valid keys: first_step",
    ),
    (
        {"method": "rk4", "options": {"step_size": 0.1, "grid_constructor": lambda f, y, t: t}},
        ValueError,
        "not both",
    ),
    (
        {"method": "rk4", "options": {"step_size": 0.1, "interp": "quadratic"}},
        ValueError,
        r"options\['interp'\]",
    ),
    ({"options": {"first_step": -0.1}}, ValueError, r"options\['first_step'\]"),
    ({"options": {"min_step": 1.0, "max_step": 0.1}}, ValueError, "min_step=1.0 is larger than max_step"),
    ({"options": {"max_num_steps": 0}}, ValueError, r"options\['max_num_steps'\]"),
    ({"options": {"dfactor": 2.0}}, ValueError, "dfactor"),
    ({"options": {"controller": "pid"}}, ValueError, r"options\['controller'\]"),
    ({"options": {"norm": "seminorm"}}, ValueError, "adjoint_options"),
    ({"event_fn": "y[0]"}, TypeError, "event_fn"),
]


@pytest.mark.parametrize("solve", [odeint, odeint_adjoint])
@pytest.mark.parametrize(("override", "error", "message"), BAD_INPUTS)
def test_bad_input_raises_before_any_evaluation(solve, override, error, message):
    func = Counting()
    kwargs = {"y0": Y0, "t": T, **override}
    y0, t = kwargs.pop("y0"), kwargs.pop("t")
    with pytest.raises(error, match=message):
        solve(func, y0, t, **kwargs)
    assert func.calls == 0


@pytest.mark.parametrize("solve", [odeint, odeint_adjoint])
def test_func_not_callable_is_rejected(solve):
    with pytest.raises(TypeError, match="func must be callable"):
        solve(3, Y0, T, adjoint_params=()) if solve is odeint_adjoint else solve(3, Y0, T)


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (lambda t, y: y[:2], "func returned shape"),
        (lambda t, y: y.double(), "func returned dtype"),
        (lambda t, y: y * math.nan, "non-finite derivative"),
        (lambda t, y: 1.0, "func must return a torch.Tensor"),
    ],
)
def test_wrong_func_output_is_caught_at_the_first_evaluation(func, message):
    with pytest.raises(ValueError, match=message):
        odeint(func, Y0, T)


def test_tuple_state_with_wrong_number_of_derivatives_is_rejected():
    with pytest.raises(ValueError, match="func must return a tuple of 2 tensors"):
        odeint(lambda t, s: (s[0],), (Y0, Y0), T)


def test_adjoint_of_a_plain_function_needs_adjoint_params():
    with pytest.raises(ValueError, match="adjoint_params"):
        odeint_adjoint(lambda t, y: -y, Y0, T)
    odeint_adjoint(lambda t, y: -y, Y0, T, adjoint_params=())  # the documented way out works


def test_bad_adjoint_method_and_options_name_the_adjoint_arguments():
    with pytest.raises(ValueError, match='adjoint_method="nope"'):
        odeint_adjoint(Counting(), Y0, T, adjoint_method="nope")
    with pytest.raises(ValueError, match="adjoint_options has unknown key"):
        odeint_adjoint(Counting(), Y0, T, adjoint_options={"nrom": "seminorm"})


def test_max_num_steps_names_the_time_reached():
    with pytest.raises(MaxStepsExceededError, match=r"max_num_steps=5 .*t=") as info:
        odeint(
            lambda t, y: torch.cos(10 * t) * y, Y0, torch.tensor([0.0, 50.0]), options={"max_num_steps": 5}
        )
    assert 0.0 < info.value.t < 50.0


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_blow_up_raises_a_solver_error_near_the_singularity(direction):
    """dy/dt = y^2 from y(0) = 1 is 1 / (1 - t): singular at t = 1 (t = -1 backwards with -y^2).

    Which error comes first (underflow, non-finite state or the step limit) depends on how the steps
    approach the singularity; each must report a time near it.
    """
    t = torch.tensor([0.0, 2.0 * direction], dtype=torch.float64)
    with pytest.raises(SolverError, match=r"t=") as info:
        odeint(lambda t, y: direction * y**2, torch.ones(1, dtype=torch.float64), t,
               options={"max_num_steps": 20_000})  # fmt: skip
    assert abs(info.value.t - direction) < 0.05


def test_nan_derivative_during_the_solve_names_the_time():
    def f(t, y):
        return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)

    with pytest.raises(NonFiniteStateError, match="non-finite") as info:
        odeint(f, Y0, torch.tensor([0.0, 1.0]))
    assert abs(info.value.t - 0.5) < 0.1


def test_fixed_grid_overflow_names_an_interval():
    with pytest.raises(NonFiniteStateError, match="between t=") as info:
        odeint(lambda t, y: y**2, torch.ones(1), torch.tensor([0.0, 0.5, 2.0]), method="euler",
               options={"step_size": 0.1})  # fmt: skip
    assert info.value.t == 2.0


# --- statistics ---------------------------------------------------------------------------------

FIXED = {"euler", "midpoint", "heun2", "heun3", "rk4"}


@pytest.mark.parametrize(
    "method", ["euler", "rk4", "adaptive_heun", "fehlberg2", "bosh3", "dopri5", "tsit5", "dopri8"]
)
@pytest.mark.parametrize("t_requires_grad", [False, True])
def test_nfe_equals_the_number_of_func_calls_forward_and_backward(method, t_requires_grad):
    options = {"step_size": 0.1} if method in FIXED else None
    for solve in (odeint, odeint_adjoint):
        func, stats = Counting(), SolveStats()
        t = torch.tensor([0.0, 0.5, 1.0], requires_grad=t_requires_grad)
        ys = solve(func, Y0.clone().requires_grad_(True), t, method=method, options=options, stats=stats)
        assert stats.forward.nfe == func.calls > 0
        assert stats.forward.n_steps == stats.forward.n_accepted + stats.forward.n_rejected
        before = func.calls
        ys.sum().backward()
        if solve is odeint_adjoint:
            assert stats.backward.nfe == func.calls - before > 0


def test_fixed_grid_counts_steps_on_the_grid():
    stats = SolveStats()
    odeint(Counting(), Y0, T, method="rk4", options={"step_size": 0.3}, stats=stats)
    assert (stats.forward.n_steps, stats.forward.n_rejected, stats.forward.nfe) == (4, 0, 16)


def test_ode_block_reports_the_last_call_only():
    block = ODEBlock(Counting(), rtol=1e-6, atol=1e-6)
    x = torch.ones(4, 3, requires_grad=True)
    block(x).sum().backward()
    first = (block.nfe_forward, block.nfe_backward)
    assert first[0] > 0 and first[1] > 0
    block(x)
    assert block.nfe_forward == first[0] and block.nfe_backward == 0  # replaced, not accumulated


def test_seminorm_needs_no_more_backward_evaluations_and_gives_the_same_gradient():
    torch.manual_seed(0)
    field = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).double()

    class F(nn.Module):
        def __init__(self):
            super().__init__()
            self.field = field

        def forward(self, t, y):
            return self.field(y)

    y0 = torch.randn(16, 2, dtype=torch.float64)
    results = {}
    for norm in ("rms", "seminorm"):
        stats = SolveStats()
        ys = odeint_adjoint(F(), y0, torch.tensor([0.0, 1.0]), rtol=1e-6, atol=1e-6,
                            adjoint_options={"norm": norm}, stats=stats)  # fmt: skip
        grads = torch.autograd.grad(ys[-1].square().sum(), tuple(field.parameters()))
        results[norm] = (stats.backward.nfe, torch.cat([g.reshape(-1) for g in grads]))
    assert results["seminorm"][0] <= results["rms"][0]
    diff = (results["seminorm"][1] - results["rms"][1]).norm() / results["rms"][1].norm()
    assert float(diff) < 1e-5
