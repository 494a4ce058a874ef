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
    SolverConfig,
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
    block = ODEBlock(Counting(), solver=SolverConfig(rtol=1e-6, atol=1e-6))
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


# ----- issue 16: late or raw errors, oversize grids, dropped adjoint gradients -----

import time  # noqa: E402
import warnings  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from neuralode import AdjointParamsWarning, odeint_checkpoint  # noqa: E402
from neuralode.solvers.fixed_grid import _check_finite  # noqa: E402

F64 = torch.float64


def test_a_fixed_grid_over_max_num_steps_is_refused_before_it_is_built():
    start = time.perf_counter()  # a list of 1e10 floats was built (MemoryError after 10 s)
    match = (
        r"^options\['step_size'\]=1e-10 on \[0.0, 1.0\] needs 10,000,000,000 steps, more than max_num_steps"
    )
    with pytest.raises(ValueError, match=match + r"=1,000,000: use a larger step_size, or raise"):
        odeint(lambda t, y: -y, Y0, T, method="rk4", options={"step_size": 1e-10})
    assert time.perf_counter() - start < 1.0
    with pytest.raises(ValueError, match=r"needs 12 steps, more than max_num_steps=10"):
        odeint(lambda t, y: -y, Y0, T, method="euler", options={"step_size": 0.09, "max_num_steps": 10})
    options = {"step_size": 0.1, "max_num_steps": 10}
    assert odeint(lambda t, y: -y, Y0, T, method="euler", options=options).shape == (2, 3)


def test_a_grid_constructor_grid_over_max_num_steps_is_refused():
    grid = {"grid_constructor": lambda f, y0, t: torch.linspace(float(t[0]), float(t[-1]), 101)}
    match = r"grid_constructor'\] .*returned a grid of 100 steps, more than max_num_steps="
    with pytest.raises(ValueError, match=r"^options\['" + match + "99"):
        odeint(lambda t, y: -y, Y0, T, method="rk4", options={**grid, "max_num_steps": 99})
    func = Counting()
    with pytest.raises(ValueError, match=r"^adjoint_options\['" + match + "50"):
        ys = odeint_adjoint(func, Y0, T, method="rk4", options=grid,
                            adjoint_options={**grid, "max_num_steps": 50})  # fmt: skip
        ys.sum().backward()


def test_a_grid_constructor_returning_nan_times_is_named_not_func():
    bad = {"grid_constructor": lambda f, y0, t: torch.tensor([0.0, float("nan"), 1.0])}
    with pytest.raises(
        ValueError, match=r"^options\['grid_constructor'\] returned a grid with NaN or infinite"
    ):
        odeint(lambda t, y: -y, Y0, T, method="rk4", options=bad)


@pytest.mark.parametrize("method", [["dopri5"], 5, ("rk4",), b"dopri5"])
def test_a_method_that_is_not_a_string_is_a_type_error_naming_it(method):
    with pytest.raises(TypeError, match=r"^method must be a method name \(a str\)"):
        odeint(lambda t, y: -y, Y0, T, method=method)
    with pytest.raises(TypeError, match=r"^adjoint_method must be a method name \(a str\)"):
        odeint_adjoint(Counting(), Y0, T, adjoint_method=method)


@pytest.mark.parametrize("solve", [odeint, odeint_adjoint, odeint_checkpoint])
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_y0_is_refused_before_any_work(solve, bad):
    func = Counting()
    with torch.no_grad():
        func.w.zero_()  # dy/dt = 0: an inf y0 was returned as inf with no error
    y0 = torch.tensor([1.0, bad])
    with pytest.raises(ValueError, match=r"^y0 contains NaN or infinite values"):
        solve(func, y0, T)
    with pytest.raises(ValueError, match=r"^y0\[1\] contains NaN or infinite values"):
        solve(
            lambda t, y: (y[0], y[1]),
            (torch.ones(2), y0),
            T,
            **({} if solve is odeint else {"adjoint_params": ()}),
        )
    assert func.calls == 0


def test_a_non_finite_fixed_grid_result_names_the_right_interval():
    # rk4 with t = [1, 0] reported "between t=1.0 and t=0.0" for a NaN in y0 (times[first - 1] with first = 0)
    ys = torch.tensor([[math.nan], [1.0]])
    with pytest.raises(NonFiniteStateError, match=r"at t=1.0 \(y0\)"):
        _check_finite(ys, [1.0, 0.0])
    nan_after = lambda t, y: -y if t > 0.55 else y * math.nan  # noqa: E731
    with pytest.raises(NonFiniteStateError, match=r"between t=1.0 and t=0.5"):
        odeint(nan_after, Y0, torch.tensor([1.0, 0.5, 0.0]), method="rk4", options={"step_size": 0.1})


@pytest.mark.parametrize("tuple_state", [False, True])
@pytest.mark.parametrize("method", ["dopri5", "rk4", "implicit_adams"])
def test_a_func_whose_output_shape_changes_after_the_first_call_is_named(method, tuple_state):
    calls = [0]

    def f(t, y):
        calls[0] += 1
        out = -y[0] if tuple_state else -y
        if calls[0] > 3:
            out = torch.cat([out, out])
        return (out, -y[1]) if tuple_state else out

    y0 = (torch.ones(3), torch.ones(2)) if tuple_state else torch.ones(3)
    options = None if method == "dopri5" else {"step_size": 0.1}
    with pytest.raises(ValueError, match=r"^func returned .*shape \(6,\).* at t=.*but y0 has shape \(3,\)"):
        odeint(f, y0, T, method=method, options=options)


def test_a_func_whose_output_shape_changes_in_the_adjoint_backward_pass_is_named():
    func = Counting()
    ys = odeint_adjoint(func, Y0, T)
    func.forward = lambda t, y: torch.zeros(5)
    with pytest.raises(ValueError, match=r"^func returned shape \(5,\)"):
        ys.sum().backward()


BAD_NORMS = [
    (lambda e: -1.0, ValueError, r"returned -1.0: a norm is >= 0"),
    (lambda e: torch.tensor(-0.5), ValueError, r"returned -0.5: a norm is >= 0"),
    (lambda e: "small", TypeError, r"must return a real scalar \(a float or 0-dim tensor\), got str"),
    (lambda e: e.abs(), ValueError, r"must return a scalar, got a tensor of shape \(3,\)"),
    (lambda e: torch.tensor(1j), TypeError, r"must return a real scalar, got dtype torch.complex64"),
    (lambda e: torch.tensor(math.nan), ValueError, r"returned nan for a finite error"),
    (lambda e: math.inf, ValueError, r"returned inf for a finite error"),
    (lambda e: None, TypeError, r"must return a real scalar .*got NoneType"),
]


@pytest.mark.parametrize(("norm", "exc", "match"), BAD_NORMS)
def test_a_misbehaving_norm_is_named_not_func(norm, exc, match):
    # a negative norm gave "'>' not supported between 'complex' and 'float'", a NaN one blamed func
    with pytest.raises(exc, match=r"^options\['norm'\] " + match):
        odeint(lambda t, y: -y, Y0, T, options={"norm": norm})
    with pytest.raises(exc, match=r"^adjoint_options\['norm'\] " + match):
        # the backward solve's norm gets the augmented state (y, a, *params): pass it y
        odeint_adjoint(Counting(), Y0, T, adjoint_options={"norm": lambda e: norm(e[0])}).sum().backward()


@given(scale=st.floats(0.0, 10.0), power=st.sampled_from([1.0, 2.0]))
@settings(max_examples=20)
def test_a_good_norm_still_solves(scale, power):
    norm = lambda e: scale * e.abs().pow(power).max()  # noqa: E731 (zero is a valid norm value)
    ys = odeint(lambda t, y: -y, Y0.double(), T.double(), options={"norm": norm, "max_num_steps": 10_000})
    assert torch.isfinite(ys).all()


def test_nan_in_the_adjoint_backward_pass_says_so_and_how_to_fix_it():
    ys = odeint_adjoint(Counting(), Y0.clone().requires_grad_(True), T)
    match = r"^in odeint_adjoint's backward pass \(the adjoint solve from t=1.0 back to t=0.0\): "
    with pytest.raises(
        NonFiniteStateError, match=match + r".*already contains NaN.*adjoint_rtol/adjoint_atol"
    ):
        (ys[-1].sum() * math.nan).backward()


def test_nan_in_the_adjoint_backward_dynamics_says_so():
    class Sqrt(nn.Module):  # forward: dy/dt = 0 at y = 0; backward: d sqrt(|y|)/dy = inf there, x 0 = NaN
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0, dtype=F64))

        def forward(self, t, y):
            return self.w * torch.sqrt(y.abs()) * 0.0

    y0 = torch.zeros(2, dtype=F64, requires_grad=True)
    ys = odeint_adjoint(Sqrt(), y0, torch.tensor([0.0, 1.0], dtype=F64))
    assert bool(torch.isfinite(ys).all())
    with pytest.raises(NonFiniteStateError, match=r"^in odeint_adjoint's backward pass \(the adjoint solve "
                       r"from t=1.0 back to t=0.0\): .*try adjoint_rtol") as info:  # fmt: skip
        ys.sum().backward()
    assert "already contains NaN" not in str(info.value)


def test_lsoda_reports_a_nan_where_it_began():
    # reported at t=0.666 (where SciPy's step ended) when func turns NaN at t=0.5
    f = lambda t, y: -y if t < 0.5 else y * math.nan  # noqa: E731
    with pytest.raises(NonFiniteStateError, match=r"func returns NaN or inf from about t=0.5 on") as info:
        odeint(f, Y0.double(), T.double(), method="scipy_solver", options={"solver": "LSODA"})
    assert abs(info.value.t - 0.5) < 1e-9


def test_scipy_solver_honours_max_num_steps():
    with pytest.raises(MaxStepsExceededError, match=r"^max_num_steps=3 steps reached"):
        odeint(lambda t, y: torch.cos(10 * t) * y, Y0, torch.tensor([0.0, 50.0]), method="scipy_solver",
               options={"solver": "RK45", "max_num_steps": 3})  # fmt: skip


# the adjoint computes gradients only for adjoint_params: a captured tensor's .grad silently stayed None
GLOBAL_RATE = torch.tensor(2.0, requires_grad=True)  # a script's module-level tensor, read by forward


class GlobalRate(nn.Module):
    def forward(self, t, y):
        return -GLOBAL_RATE * y


def _captured_cases():
    w = torch.tensor(2.0, requires_grad=True)

    class Closure(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, t, y):
            return -w * self.lin(y)

    class Attribute(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.scale = w

        def forward(self, t, y):
            return -self.scale * self.lin(y)

    class Callable:
        def __init__(self):
            self.rates = [w]

        def __call__(self, t, y):
            return -self.rates[0] * y

    return w, [
        (Closure(), {}, r"closure variable 'w'"),
        (Attribute(), {}, r"attribute func.scale"),
        (lambda t, y: -w * y, {"adjoint_params": ()}, r"closure variable 'w'"),
        (Callable(), {"adjoint_params": ()}, r"attribute func.rates\[0\]"),
        (GlobalRate(), {}, r"global variable 'GLOBAL_RATE' used by GlobalRate.forward"),
    ]


@pytest.mark.parametrize("solve", [odeint_adjoint, odeint_checkpoint])
@pytest.mark.parametrize("case", range(5))
def test_a_captured_tensor_missing_from_adjoint_params_is_warned_about(solve, case):
    w, cases = _captured_cases()
    func, kwargs, where = cases[case]
    if case == 4:  # the module-level tensor
        w = GLOBAL_RATE
        w.grad = None
    with pytest.warns(
        AdjointParamsWarning, match=rf"^{solve.__name__}: .*{where}.*adjoint_params="
    ) as record:
        ys = solve(func, Y0.clone().requires_grad_(True), T, **kwargs)
    assert len(record) == 1
    ys.sum().backward()
    assert w.grad is None  # what the warning is about
    params = {
        **kwargs,
        "adjoint_params": (*(tuple(func.parameters()) if isinstance(func, nn.Module) else ()), w),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", AdjointParamsWarning)
        solve(func, Y0.clone().requires_grad_(True), T, **params).sum().backward()
    assert w.grad is not None and float(w.grad) != 0.0


def test_no_warning_for_plain_modules_or_functional_call():
    func = nn.Sequential(nn.Linear(3, 3))
    field = lambda t, y: func(y)  # noqa: E731
    params = [p.detach().clone().requires_grad_(True) for p in func.parameters()]
    names = [n for n, _ in func.named_parameters()]
    functional = lambda t, y: torch.func.functional_call(func, dict(zip(names, params)), (y,))  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error", AdjointParamsWarning)
        odeint_adjoint(Counting(), Y0, T)
        odeint_adjoint(field, Y0, T, adjoint_params=tuple(func.parameters()))
        odeint_adjoint(functional, Y0, T, adjoint_params=params)
        odeint_checkpoint(Counting(), Y0, T)
