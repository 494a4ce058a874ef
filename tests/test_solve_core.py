"""The solve core: ``solve(..., gradient=...)`` and its Solution, the step controllers driving the
engines (replay reproduces a recorded solve bit for bit), and the frozen SolverConfig."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import neuralode
from neuralode import Adjoint, Checkpointed, Direct, SolverConfig, SolveStats, odeint, solve
from neuralode._setup.prepare import prepare
from neuralode.gradients import gradient_from_name
from neuralode.solvers.controllers import GridController, IntegralController, PIController, ReplayController
from neuralode.solvers.observer import StepObserver, StepTrace
from neuralode.stats import PassCounts

F64 = torch.float64
T = torch.tensor([0.0, 0.4, 1.1], dtype=F64)
ADAPTIVE = ["dopri5", "bosh3", "tsit5", "dopri8", "fehlberg2", "adaptive_heun"]
FIXED = ["euler", "midpoint", "heun2", "heun3", "rk4"]


def _field():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()


@pytest.mark.parametrize(
    ("gradient", "front_door"),
    [
        (Direct(), neuralode.odeint),
        (Adjoint(), neuralode.odeint_adjoint),
        (Checkpointed(2), neuralode.odeint_checkpoint),
    ],
    ids=["direct", "adjoint", "checkpoint"],
)
def test_solve_is_what_the_front_doors_unpack(gradient, front_door):
    net = _field()
    y0 = torch.tensor([0.3, -0.2, 0.5], dtype=F64, requires_grad=True)
    kwargs = (
        {}
        if isinstance(gradient, Direct)
        else {"checkpoint_every": 2}
        if isinstance(gradient, Checkpointed)
        else {}
    )
    stats = SolveStats()
    solution = solve(
        lambda t, y: net(y),
        y0,
        T,
        gradient=gradient,
        params=None if isinstance(gradient, Direct) else tuple(net.parameters()),
        stats=stats,
    )
    assert solution.status == "success" and solution.event_t is None and solution.stats is stats
    if isinstance(gradient, Direct):
        expected = front_door(lambda t, y: net(y), y0, T)
    else:
        expected = front_door(lambda t, y: net(y), y0, T, adjoint_params=tuple(net.parameters()), **kwargs)
    torch.testing.assert_close(solution.ys, expected, rtol=0, atol=0)
    assert stats.forward.nfe > 0 and stats.backward == PassCounts()
    solution.ys.sum().backward()
    assert y0.grad is not None and (stats.backward.nfe > 0) == (not isinstance(gradient, Direct))


def test_solution_of_an_event_search():
    sol = solve(
        lambda t, y: -y,
        torch.ones(1, dtype=F64),
        torch.tensor([0.0], dtype=F64),
        event_fn=lambda t, y: y - 0.5,
    )
    assert sol.status == "event"
    torch.testing.assert_close(sol.event_t, torch.log(torch.tensor(2.0, dtype=F64)), rtol=1e-6, atol=0)
    assert sol.ys.shape == (2, 1)


def test_solve_refuses_what_is_not_a_gradient_strategy():
    with pytest.raises(TypeError, match=r"gradient must be neuralode\.Direct"):
        solve(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), gradient="adjoint")


class _TimeField(torch.nn.Module):
    """A field that depends on t, so that every output time has its own gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _field()

    def forward(self, t, y):
        return self.net(y) * torch.cos(2 * t)


@pytest.mark.parametrize(
    "gradient", [Direct(), Adjoint(), Checkpointed(3)], ids=["direct", "adjoint", "checkpoint"]
)
def test_time_gradient_is_the_same_formula_for_every_strategy(gradient):
    """dL/dt from the one time-gradient path, against central finite differences of the solve."""
    net = _TimeField()
    y0 = torch.tensor([1.0, 0.5, -0.3], dtype=F64)
    t = torch.tensor([0.1, 0.7, 1.3], dtype=F64, requires_grad=True)
    params = None if isinstance(gradient, Direct) else tuple(net.parameters())
    ys = solve(net, y0, t, rtol=1e-11, atol=1e-11, gradient=gradient, params=params).ys
    (grad_t,) = torch.autograd.grad((ys**2).sum(), t)
    eps = 1e-6
    for i in range(len(t)):
        shifted = [t.detach().clone() for _ in range(2)]
        shifted[0][i] += eps
        shifted[1][i] -= eps
        values = [float((odeint(net, y0, s, rtol=1e-12, atol=1e-12) ** 2).sum()) for s in shifted]
        assert abs(float(grad_t[i]) - (values[0] - values[1]) / (2 * eps)) < 1e-6


@given(method=st.sampled_from(ADAPTIVE + FIXED), every=st.integers(1, 4))
def test_replaying_the_recorded_steps_reproduces_the_solve_bit_for_bit(method, every):
    net = _field()
    y0 = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    options = {"step_size": 0.1} if method in FIXED else None
    with torch.no_grad():
        setup = prepare(lambda t, y: net(y), y0, T, 1e-6, 1e-8, method, options, None)
        trace = StepTrace(every=every)
        ys = setup.integrate(setup.problem.y0, setup.observer(trace=trace))
        ends = trace.ends
        controller = (
            ReplayController(ends) if method in ADAPTIVE else GridController([trace.starts[0], *ends])
        )
        counts = PassCounts()
        replayed = setup.solver.integrate(setup.problem, StepObserver(counts), controller)
    torch.testing.assert_close(replayed, ys, rtol=0, atol=0)
    assert counts.n_steps == counts.n_accepted == len(ends) and counts.n_rejected == 0


def test_a_carrying_controller_starts_the_next_solve_from_the_last_step():
    controller = IntegralController(5, 0.9, 10.0, 0.2, carry=True)
    assert controller.carried is None
    controller.finish(0.25, 0.1)
    assert controller.carried == 0.25
    controller.finish(0.01, 0.3)  # a step cut short by the end does not shrink the carry
    assert controller.carried == 0.3
    assert controller.first_step(None, 0.0, None, None, 1.0, 1e-6, 1e-6, None) == 0.3
    assert (
        IntegralController(5, 0.9, 10.0, 0.2, first_step=0.05, carry=True).first_step(
            None, 0, None, None, 1, 0, 0, None
        )
        == 0.05
    )


def test_the_pi_controller_forgets_its_ratio_history_between_solves():
    pi = PIController(5, 0.9, 10.0, 0.2, carry=True)
    pi.carried = 0.1
    pi.next_step(0.1, 0.01, accepted=True)
    assert pi.previous == 0.01
    pi.first_step(None, 0.0, None, None, 1.0, 1e-6, 1e-6, None)
    assert pi.previous == 1.0


def test_solver_config_is_frozen_and_sweeps_make_checked_copies():
    config = SolverConfig(
        method="dopri5", rtol=1e-3, atol=1e-4, gradient=Adjoint(options={"norm": "seminorm"})
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rtol = 1e-5
    swept = dataclasses.replace(config, rtol=1e-5)
    assert swept.rtol == 1e-5 and config.rtol == 1e-3 and swept.gradient is config.gradient
    with pytest.raises(ValueError, match="rtol must be a finite number") as info:
        dataclasses.replace(config, rtol=-1.0)
    assert info.value.argument == "rtol"
    with pytest.raises(TypeError):
        config.gradient.options["norm"] = "rms"  # options are read-only too
    # a model holding one can be copied and saved whole
    assert copy.deepcopy(config) == config == pickle.loads(pickle.dumps(config))
    block = neuralode.ODEBlock(torch.nn.Linear(2, 2), solver=config)
    assert copy.deepcopy(block).solver == config


def test_solver_config_from_a_config_group():
    config = SolverConfig.from_dict(
        {
            "name": "rk4",
            "method": "rk4",
            "rtol": 1e-3,
            "atol": 1e-3,
            "options": {"step_size": 0.1},
            "gradient": "checkpoint",
            "adjoint": {},
            "checkpoint_every": 3,
        }
    )
    assert config.gradient == Checkpointed(3) and config.options["step_size"] == 0.1
    assert SolverConfig.from_dict({"gradient": "direct"}).gradient == Direct()
    adjoint = SolverConfig.from_dict(
        {"gradient": "adjoint", "adjoint": {"rtol": 1e-6, "options": {}}}
    ).gradient
    assert adjoint == Adjoint(rtol=1e-6)  # an empty options dict: the forward options apply
    with pytest.raises(
        ValueError, match="gradient='backprop' is unknown; choose one of: direct, adjoint, checkpoint"
    ):
        gradient_from_name("backprop")
    with pytest.raises(ValueError, match=r"unknown adjoint settings \['tol'\]"):
        gradient_from_name("adjoint", adjoint={"tol": 1e-3})
    with pytest.raises(ValueError, match='adjoint_method="rk5" is unknown') as info:
        SolverConfig(gradient=Adjoint(method="rk5"))
    assert info.value.argument == "adjoint_method"


@pytest.mark.parametrize(
    "gradient", [Direct(), Adjoint(), Checkpointed(2)], ids=["direct", "adjoint", "checkpoint"]
)
def test_solver_config_solves_with_its_gradient(gradient):
    net = _field()
    y0 = torch.tensor([0.3, -0.2, 0.5], dtype=F64, requires_grad=True)
    config = SolverConfig(rtol=1e-8, atol=1e-8, gradient=gradient)
    stats = SolveStats()
    ys = config.solve(lambda t, y: net(y), y0, T, params=tuple(net.parameters()), stats=stats)
    reference = odeint(lambda t, y: net(y), y0, T, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(ys, reference, rtol=1e-6, atol=1e-8)
    (grad,) = torch.autograd.grad(ys.sum(), y0)
    (expected,) = torch.autograd.grad(reference.sum(), y0)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)
    assert (stats.backward.nfe > 0) == (not isinstance(gradient, Direct))


class _StepLog(torch.nn.Module):
    """A field that records its accepted steps through torchdiffeq's callback."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _field()
        self.accepted: list[tuple[float, float]] = []

    def forward(self, t, y):
        return self.net(y)

    def callback_accept_step(self, t0, y0, dt):
        self.accepted.append((float(t0), float(dt)))


@given(method=st.sampled_from(ADAPTIVE), backward=st.booleans(), t1=st.floats(0.3, 3.0))
def test_the_last_step_ends_exactly_on_the_last_output_time(method, backward, t1):
    field = _StepLog()
    t = torch.tensor([t1, 0.1, 0.0] if backward else [0.0, 0.1, t1], dtype=F64)
    with torch.no_grad():
        ys = odeint(field, torch.tensor([0.3, -0.2, 0.5], dtype=F64), t, rtol=1e-6, atol=1e-8, method=method)
    t0, dt = field.accepted[-1]
    assert t0 + dt == float(t[-1])  # the final state is a step's end, not an interpolated value
    assert ys.shape == (3, 3)


@pytest.mark.parametrize("carry", [True, False])
def test_the_backward_solve_starts_from_the_forward_step(carry):
    """dopri5 is FSAL: each attempted step costs 6 new evaluations after the first f. A fresh
    initial-step selection costs one more; starting from the forward's last accepted step does not."""
    net = _field()
    y0 = torch.tensor([0.3, -0.2, 0.5], dtype=F64, requires_grad=True)
    stats = SolveStats()
    options = None if carry else {"carry_step_size": False}
    ys = neuralode.odeint_adjoint(
        lambda t, y: net(y), y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-6, atol=1e-8,
        adjoint_options=options, adjoint_params=tuple(net.parameters()), stats=stats,
    )  # fmt: skip
    ys[-1].sum().backward()
    selection = 0 if carry else 1
    assert stats.backward.nfe == 1 + selection + 6 * stats.backward.n_steps
