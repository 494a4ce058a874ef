"""Bad arguments raise TypeError/ValueError naming the argument, before func is ever called;
failures found during the solve raise the classes of ``neuralode.errors`` with the time reached.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from neuralode import (
    SOLVERS,
    MaxStepsExceededError,
    NonFiniteStateError,
    SolverError,
    SolveStats,
    StepSizeUnderflowError,
    odeint,
    odeint_adjoint,
)

from .conftest import ALL_FIXED_METHODS, FIXED_METHODS, METHODS

NAN = float("nan")
F64 = torch.float64

SOLVE = pytest.mark.parametrize("solve", [odeint, odeint_adjoint], ids=["odeint", "odeint_adjoint"])


class CountingFunc:
    """dy/dt = rhs(t, y) (default -y), counting its calls; a plain callable, not an nn.Module."""

    def __init__(self, rhs=None) -> None:
        self.rhs = (lambda t, y: -y) if rhs is None else rhs
        self.calls = 0

    def __call__(self, t, y):
        self.calls += 1
        return self.rhs(t, y)


def call(solve, func, y0, t, **kwargs):
    """Call odeint or odeint_adjoint; the adjoint gets adjoint_params=() unless told otherwise."""
    if solve is odeint_adjoint:
        kwargs.setdefault("adjoint_params", ())
    return solve(func, y0, t, **kwargs)


def y0_() -> torch.Tensor:
    return torch.tensor([1.0, 2.0], dtype=F64)


def t_() -> torch.Tensor:
    return torch.tensor([0.0, 1.0], dtype=F64)


def assert_rejected_before_work(solve, exc, match, *, func=None, y0=None, t=None, **kwargs):
    """The call raises ``exc`` matching ``match`` and func was never evaluated."""
    f = CountingFunc() if func is None else func
    with pytest.raises(exc, match=match):
        call(solve, f, y0_() if y0 is None else y0, t_() if t is None else t, **kwargs)
    assert f.calls == 0


# ---------------------------------------------------------------------------------------------
# t


@SOLVE
@pytest.mark.parametrize("t", [torch.zeros(2, 2, dtype=F64), torch.tensor(1.0, dtype=F64)], ids=["2d", "0d"])
def test_t_not_1d_raises_value_error_naming_t(solve, t):
    assert_rejected_before_work(solve, ValueError, r"^t must be 1-D", t=t)


@SOLVE
def test_empty_t_raises_value_error_naming_t(solve):
    assert_rejected_before_work(solve, ValueError, r"^t must contain at least one time", t=torch.tensor([]))


@SOLVE
@pytest.mark.parametrize(
    "times",
    [[0.0, 1.0, 1.0], [0.0, 0.0], [0.0, 1.0, 0.5], [1.0, 0.0, 0.5]],
    ids=["repeat", "all-same", "up-down", "down-up"],
)
def test_t_not_strictly_monotone_raises_value_error(solve, times):
    assert_rejected_before_work(
        solve,
        ValueError,
        r"^t must be strictly increasing or strictly decreasing",
        t=torch.tensor(times, dtype=F64),
    )


@SOLVE
@pytest.mark.parametrize("bad", [NAN, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_t_with_nan_or_inf_raises_value_error_naming_t(solve, bad):
    assert_rejected_before_work(
        solve, ValueError, r"^t contains NaN or infinite", t=torch.tensor([0.0, bad, 2.0], dtype=F64)
    )


@SOLVE
@pytest.mark.parametrize("t", [[0.0, 1.0], (0.0, 1.0), 1.0], ids=["list", "tuple", "float"])
def test_t_not_a_tensor_raises_type_error_naming_t(solve, t):
    assert_rejected_before_work(solve, TypeError, r"^t must be a 1-D torch.Tensor", t=t)


@SOLVE
def test_complex_t_raises_type_error_naming_t(solve):
    t = torch.tensor([0.0, 1.0], dtype=torch.complex128)
    assert_rejected_before_work(solve, TypeError, r"^t must be real-valued", t=t)


# ---------------------------------------------------------------------------------------------
# y0


@SOLVE
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_y0_raises_type_error_naming_y0(solve, dtype):
    y0 = torch.tensor([1, 0], dtype=dtype)
    assert_rejected_before_work(solve, TypeError, r"^y0 must be floating point", y0=y0)


@SOLVE
@pytest.mark.parametrize(
    "y0", [1.0, None, "y", (), []], ids=["float", "none", "str", "empty-tuple", "empty-list"]
)
def test_y0_not_a_tensor_raises_type_error_naming_y0(solve, y0):
    f = CountingFunc()
    with pytest.raises(TypeError, match=r"^y0 must be a tensor or a non-empty tuple of tensors"):
        call(solve, f, y0, t_())
    assert f.calls == 0


@SOLVE
def test_y0_numpy_array_raises_type_error_naming_y0(solve):
    np = pytest.importorskip("numpy")
    f = CountingFunc()
    with pytest.raises(TypeError, match=r"^y0 must be a tensor"):
        call(solve, f, np.ones(2), t_())
    assert f.calls == 0


@SOLVE
def test_tuple_y0_with_non_tensor_raises_type_error_naming_the_entry(solve):
    f = CountingFunc()
    with pytest.raises(TypeError, match=r"^y0\[1\] must be a torch.Tensor, got float"):
        call(solve, f, (y0_(), 3.0), t_())
    assert f.calls == 0


@SOLVE
def test_tuple_y0_with_integer_tensor_raises_type_error_naming_the_entry(solve):
    f = CountingFunc()
    with pytest.raises(TypeError, match=r"^y0\[1\] must be floating point"):
        call(solve, f, (y0_(), torch.tensor([1, 2])), t_())
    assert f.calls == 0


# ---------------------------------------------------------------------------------------------
# func


@SOLVE
@pytest.mark.parametrize("func", [3, "f", None], ids=["int", "str", "none"])
def test_func_not_callable_raises_type_error_naming_func(solve, func):
    with pytest.raises(TypeError, match=r"^func must be callable"):
        call(solve, func, y0_(), t_())


@SOLVE
def test_func_returning_wrong_shape_raises_value_error_at_first_evaluation(solve):
    f = CountingFunc(lambda t, y: torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match=r"^func returned shape \(3,\) but y0 has shape \(2,\)"):
        call(solve, f, y0_(), t_())
    assert f.calls == 1


@SOLVE
def test_func_returning_wrong_dtype_raises_value_error_naming_both_dtypes(solve):
    f = CountingFunc(lambda t, y: -y.float())
    with pytest.raises(
        ValueError, match=r"^func returned dtype torch.float32 but y0 has dtype torch.float64"
    ):
        call(solve, f, y0_(), t_())
    assert f.calls == 1


@SOLVE
def test_func_returning_non_tensor_raises_value_error(solve):
    f = CountingFunc(lambda t, y: [0.0, 0.0])
    with pytest.raises(ValueError, match=r"^func must return a torch.Tensor, got list"):
        call(solve, f, y0_(), t_())
    assert f.calls == 1


@SOLVE
@pytest.mark.parametrize(
    "rhs",
    [lambda t, y: (-y[0],), lambda t, y: (-y[0], -y[1], -y[1]), lambda t, y: -y[0]],
    ids=["too-short", "too-long", "tensor"],
)
def test_func_returning_wrong_tuple_length_for_tuple_state_raises_value_error(solve, rhs):
    f = CountingFunc(rhs)
    y0 = (y0_(), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match=r"^func must return a tuple of 2 tensors"):
        call(solve, f, y0, t_())
    assert f.calls == 1


@SOLVE
def test_func_returning_wrong_shape_in_tuple_names_the_tensor(solve):
    f = CountingFunc(lambda t, y: (-y[0], torch.zeros(2, dtype=F64)))
    y0 = (y0_(), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match=r"func returned shape \(2,\) \(tensor 1 of the tuple\)"):
        call(solve, f, y0, t_())
    assert f.calls == 1


@SOLVE
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_func_returning_nan_at_t0_raises_value_error_at_first_evaluation(solve, method):
    options = {"step_size": 0.1} if method == "rk4" else None
    f = CountingFunc(lambda t, y: torch.full_like(y, NAN))
    with pytest.raises(ValueError, match=r"^func returned a non-finite derivative .* at t=0\.0"):
        call(solve, f, y0_(), t_(), method=method, options=options)
    assert f.calls == 1


# ---------------------------------------------------------------------------------------------
# method and options


@SOLVE
@pytest.mark.parametrize("method", ["dopri6", "RK4", ""])
def test_unknown_method_lists_valid_names(solve, method):
    f = CountingFunc()
    with pytest.raises(ValueError, match=rf'^method="{method}" is unknown; choose one of: ') as info:
        call(solve, f, y0_(), t_(), method=method)
    for name in SOLVERS:
        assert name in str(info.value)
    assert f.calls == 0


@SOLVE
def test_unknown_adaptive_option_key_lists_valid_keys(solve):
    f = CountingFunc()
    with pytest.raises(
        ValueError, match=r"^options has unknown key\(s\) 'stepsize' for method='dopri5'"
    ) as info:
        call(solve, f, y0_(), t_(), method="dopri5", options={"stepsize": 0.1})
    for key in ("first_step", "max_num_steps", "min_step", "jump_t", "norm"):
        assert key in str(info.value).split("valid keys:")[1]
    assert f.calls == 0


@SOLVE
def test_unknown_fixed_grid_option_key_lists_valid_keys(solve):
    f = CountingFunc()
    with pytest.raises(ValueError, match=r"^options has unknown key\(s\) 'rtol' for method='rk4'") as info:
        call(solve, f, y0_(), t_(), method="rk4", options={"step_size": 0.1, "rtol": 1e-3})
    for key in ("step_size", "grid_constructor", "perturb", "interp"):
        assert key in str(info.value).split("valid keys:")[1]
    assert f.calls == 0


@SOLVE
def test_options_not_a_mapping_raises_type_error_naming_options(solve):
    assert_rejected_before_work(solve, TypeError, r"^options must be a dict", options=[("first_step", 0.1)])


@SOLVE
@pytest.mark.parametrize("name", ["rtol", "atol"])
@pytest.mark.parametrize("value", [-1e-6, NAN, math.inf], ids=["negative", "nan", "inf"])
def test_negative_or_non_finite_tolerance_raises_value_error_naming_it(solve, name, value):
    assert_rejected_before_work(solve, ValueError, rf"^{name} must be a finite number >= 0", **{name: value})


@SOLVE
def test_both_tolerances_zero_for_an_adaptive_method_raises_with_the_reason(solve):
    assert_rejected_before_work(
        solve,
        ValueError,
        r"^rtol and atol are both 0: .*both zero would make every step fail",
        rtol=0,
        atol=0,
    )


@SOLVE
@pytest.mark.parametrize("name", ["rtol", "atol"])
@pytest.mark.parametrize("value", ["1e-3", True], ids=["str", "bool"])
def test_non_numeric_tolerance_raises_type_error_naming_it(solve, name, value):
    assert_rejected_before_work(solve, TypeError, rf"^{name} must be a number >= 0", **{name: value})


@SOLVE
@pytest.mark.parametrize("name", ["rtol", "atol"])
def test_non_scalar_tensor_tolerance_raises_value_error_naming_it(solve, name):
    value = torch.tensor([1e-6, 1e-3], dtype=F64)
    assert_rejected_before_work(
        solve, ValueError, rf"^{name} must be a scalar, got a tensor of shape \(2,\)", **{name: value}
    )


@SOLVE
@pytest.mark.parametrize("method", ALL_FIXED_METHODS)
@pytest.mark.parametrize("options", [None, {}, {"interp": "cubic"}], ids=["none", "empty", "no-grid"])
def test_fixed_grid_method_without_step_size_or_grid_constructor_steps_on_t(solve, method, options):
    """torchdiffeq's default (this used to raise "fixed-grid methods need a grid"): one step per
    interval of t, so the solution equals the same solve with grid_constructor returning t."""
    t = torch.tensor([0.0, 0.25, 0.4, 1.0], dtype=F64)
    on_t = {**(options or {}), "grid_constructor": lambda func, y0, t: t}
    ys = call(solve, CountingFunc(), y0_(), t, method=method, options=options)
    torch.testing.assert_close(ys, call(solve, CountingFunc(), y0_(), t, method=method, options=on_t))


@SOLVE
def test_fixed_grid_with_both_step_size_and_grid_constructor_raises(solve):
    options = {"step_size": 0.1, "grid_constructor": lambda func, y0, t: t}
    assert_rejected_before_work(
        solve,
        ValueError,
        r"^options: give either 'step_size' or 'grid_constructor', not both",
        method="rk4",
        options=options,
    )


@SOLVE
@pytest.mark.parametrize("interp", ["quadratic", "Linear", None])
def test_bad_interp_raises_value_error_naming_interp(solve, interp):
    options = {"step_size": 0.1, "interp": interp}
    assert_rejected_before_work(
        solve,
        ValueError,
        r"^options\['interp'\] must be 'linear' or 'cubic'",
        method="euler",
        options=options,
    )


@SOLVE
@pytest.mark.parametrize("step", [0.0, -0.1, NAN, math.inf], ids=["zero", "negative", "nan", "inf"])
def test_bad_step_size_raises_value_error_naming_step_size(solve, step):
    assert_rejected_before_work(
        solve,
        ValueError,
        r"^options\['step_size'\] must be a finite number > 0",
        method="rk4",
        options={"step_size": step},
    )


@SOLVE
def test_non_callable_grid_constructor_raises_value_error(solve):
    assert_rejected_before_work(
        solve,
        ValueError,
        r"^options\['grid_constructor'\] must be callable",
        method="rk4",
        options={"grid_constructor": 3},
    )


BAD_ADAPTIVE_OPTIONS = [
    ({"first_step": -0.1}, r"^options\['first_step'\] must be a finite number > 0"),
    ({"first_step": 0.0}, r"^options\['first_step'\] must be a finite number > 0"),
    ({"min_step": -1.0}, r"^options\['min_step'\] must be a finite number >= 0"),
    ({"min_step": 1.0, "max_step": 0.5}, r"^options: min_step=1.0 is larger than max_step=0.5"),
    ({"max_step": 0.0}, r"^options\['max_step'\] must be a number > 0"),
    ({"max_num_steps": 0}, r"^options\['max_num_steps'\] must be an int >= 1"),
    ({"max_num_steps": 10.5}, r"^options\['max_num_steps'\] must be an int >= 1"),
    ({"dfactor": 1.5}, r"^options: need 0 < dfactor <= 1 <= ifactor, got dfactor=1.5"),
    ({"dfactor": 0.0}, r"^options: need 0 < dfactor <= 1 <= ifactor, got dfactor=0.0"),
    ({"ifactor": 0.5}, r"^options: need 0 < dfactor <= 1 <= ifactor, .*ifactor=0.5"),
    ({"safety": 0.0}, r"^options\['safety'\] must be a finite number > 0"),
    ({"controller": "pid"}, r"^options\['controller'\] must be one of \('integral', 'pi'\), got 'pid'"),
    ({"norm": "l2"}, r"^options\['norm'\] must be a callable or one of"),
    ({"norm": 3}, r"^options\['norm'\] must be a callable or one of"),
    ({"jump_t": [0.5]}, r"^options\['jump_t'\] must be a 1-D tensor of times"),
    ({"step_t": torch.tensor([0.5, NAN])}, r"^options\['step_t'\] contains NaN or infinite times"),
    ({"dtype": torch.int64}, r"^options\['dtype'\] must be a floating torch.dtype"),
]


@SOLVE
@pytest.mark.parametrize(
    ("options", "match"),
    BAD_ADAPTIVE_OPTIONS,
    ids=[next(iter(o)) + f"-{i}" for i, (o, _) in enumerate(BAD_ADAPTIVE_OPTIONS)],
)
def test_bad_adaptive_option_value_raises_value_error_naming_the_option(solve, options, match):
    assert_rejected_before_work(solve, ValueError, match, method="dopri5", options=options)


@SOLVE
def test_seminorm_in_forward_options_raises_and_points_to_adjoint_options(solve):
    match = r"^options\['norm'\]='seminorm' only applies to the adjoint: put it in adjoint_options"
    assert_rejected_before_work(solve, ValueError, match, options={"norm": "seminorm"})


@SOLVE
def test_event_fn_not_callable_raises_type_error(solve):
    assert_rejected_before_work(solve, TypeError, r"^event_fn must be callable", event_fn=0.5)


# ---------------------------------------------------------------------------------------------
# adjoint-only arguments


class CountingModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(1.0, dtype=F64))
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return -self.rate * y


def test_adjoint_with_plain_function_and_no_adjoint_params_names_adjoint_params():
    f = CountingFunc()
    with pytest.raises(ValueError, match=r"func is not an nn.Module.*pass adjoint_params="):
        odeint_adjoint(f, y0_(), t_())
    assert f.calls == 0


def test_adjoint_with_plain_function_and_empty_adjoint_params_solves():
    f = CountingFunc()
    ys = odeint_adjoint(f, y0_(), t_(), adjoint_params=())
    torch.testing.assert_close(ys[-1], y0_() * math.exp(-1.0), rtol=1e-6, atol=0.0)
    assert f.calls > 0


def test_adjoint_params_with_non_tensor_raises_type_error_naming_the_entry():
    f = CountingFunc()
    with pytest.raises(TypeError, match=r"^adjoint_params\[1\] must be a torch.Tensor, got float"):
        odeint_adjoint(f, y0_(), t_(), adjoint_params=(torch.ones(1), 2.0))
    assert f.calls == 0


@pytest.mark.parametrize("method", ["dopri6", "adjoint"])
def test_unknown_adjoint_method_is_named_and_lists_valid_names(method):
    f = CountingModule()
    with pytest.raises(ValueError, match=rf'^adjoint_method="{method}" is unknown; choose one of: .*dopri5'):
        odeint_adjoint(f, y0_(), t_(), adjoint_method=method)
    assert f.calls == 0


def test_unknown_adjoint_options_key_names_adjoint_options():
    f = CountingModule()
    with pytest.raises(ValueError, match=r"^adjoint_options has unknown key\(s\) 'nrom'.*valid keys: .*norm"):
        odeint_adjoint(f, y0_(), t_(), adjoint_options={"nrom": "seminorm"})
    assert f.calls == 0


@pytest.mark.parametrize(
    ("adjoint_options", "match"),
    [
        ({"max_num_steps": 0}, r"^adjoint_options\['max_num_steps'\] must be an int >= 1"),
        ({"norm": "seminrom"}, r"^adjoint_options\['norm'\] must be a callable or one of"),
        ({"controller": "p"}, r"^adjoint_options\['controller'\] must be one of"),
    ],
)
def test_bad_adjoint_option_value_names_adjoint_options(adjoint_options, match):
    f = CountingModule()
    with pytest.raises(ValueError, match=match):
        odeint_adjoint(f, y0_(), t_(), adjoint_options=adjoint_options)
    assert f.calls == 0


def test_fixed_grid_adjoint_method_without_grid_steps_backward_on_the_reversed_t():
    """The backward rk4 solve takes one step per interval of t (it used to need a step_size)."""
    f = CountingModule()
    stats = SolveStats()
    y0, t = y0_().requires_grad_(True), torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    odeint_adjoint(f, y0, t, adjoint_method="rk4", stats=stats)[-1].sum().backward()
    assert stats.backward.n_steps == len(t) - 1


@pytest.mark.parametrize("name", ["adjoint_rtol", "adjoint_atol"])
@pytest.mark.parametrize("value", [-1.0, NAN], ids=["negative", "nan"])
def test_bad_adjoint_tolerance_raises_value_error_naming_it(name, value):
    f = CountingModule()
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number >= 0"):
        odeint_adjoint(f, y0_(), t_(), **{name: value})
    assert f.calls == 0


# ---------------------------------------------------------------------------------------------
# failures found during the solve


@SOLVE
@pytest.mark.parametrize(("t0", "t1"), [(0.0, 100.0), (100.0, 0.0)], ids=["forward", "reversed"])
def test_max_num_steps_exceeded_reports_the_time_reached(solve, t0, t1):
    f = CountingFunc(lambda t, y: torch.cos(10 * t) * y)
    t = torch.tensor([t0, t1], dtype=F64)
    with pytest.raises(MaxStepsExceededError, match=r"max_num_steps=5 steps reached at t=") as info:
        call(solve, f, y0_(), t, options={"max_num_steps": 5})
    err = info.value
    assert isinstance(err.t, float)
    assert min(t0, t1) < err.t < max(t0, t1)
    assert f"t={err.t!r}" in str(err)  # the time in the message is the attribute's
    assert "max_num_steps" in str(err)
    assert isinstance(err, SolverError) and isinstance(err, RuntimeError)


@pytest.mark.parametrize(("t_end", "sign"), [(2.0, 1.0), (-2.0, -1.0)], ids=["forward", "reversed"])
def test_finite_time_blowup_raises_step_size_underflow_near_the_singularity(t_end, sign):
    # y' = sign * y^2, y(0) = 1 has y = 1 / (1 - sign * t): a pole at t = sign * 1. Step sizes shrink
    # geometrically towards it, so a few hundred steps reach t + dt == t; max_num_steps only bounds
    # the test's run time if the solver stalls instead.
    f = CountingFunc(lambda t, y: sign * y**2)
    with pytest.raises(StepSizeUnderflowError, match=r"step size underflow at t=.*looser tolerances") as info:
        odeint(
            f,
            torch.ones(1, dtype=F64),
            torch.tensor([0.0, t_end], dtype=F64),
            options={"max_num_steps": 3000},
        )
    assert info.value.t == pytest.approx(sign * 1.0, abs=0.05)


def nan_after_half(t, y):
    return torch.where(t > 0.5, torch.full_like(y, NAN), -y)


def nan_before_half(t, y):
    return torch.where(t < 0.5, torch.full_like(y, NAN), -y)


@SOLVE
@pytest.mark.parametrize(
    ("rhs", "times"),
    [(nan_after_half, [0.0, 1.0]), (nan_before_half, [1.0, 0.0])],
    ids=["forward", "reversed"],
)
def test_nan_derivative_mid_solve_raises_non_finite_state_error_with_the_time(solve, rhs, times):
    f = CountingFunc(rhs)
    with pytest.raises(NonFiniteStateError, match=r"non-finite \(NaN or inf\).* t=") as info:
        call(solve, f, y0_(), torch.tensor(times, dtype=F64), method="dopri5")
    assert info.value.t == pytest.approx(0.5, abs=0.1)
    assert repr(info.value.t) in str(info.value)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_nan_derivative_mid_solve_is_never_returned_silently(method):
    options = {"step_size": 0.1} if method in ALL_FIXED_METHODS else None
    f = CountingFunc(nan_after_half)
    with pytest.raises(SolverError):
        odeint(f, y0_(), t_(), method=method, options=options)


@SOLVE
@pytest.mark.parametrize("method", FIXED_METHODS)
def test_fixed_grid_non_finite_state_names_the_output_interval(solve, method):
    # dy/dt is infinite for t > 0.62. Euler evaluates only at grid points, so the step from 0.7 is the
    # first to see it; every other method has a stage inside (0.62, 0.7] in the step from 0.6.
    f = CountingFunc(lambda t, y: torch.where(t > 0.62, torch.full_like(y, math.inf), -y))
    t = torch.linspace(0.0, 1.0, 11, dtype=F64)
    with pytest.raises(NonFiniteStateError, match=r"between t=.* and t=.*smaller step_size") as info:
        call(solve, f, y0_(), t, method=method, options={"step_size": 0.1})
    lo, hi = (float(x) for x in re.search(r"between t=(\S+) and t=(\S+?):", str(info.value)).groups())
    expected = (0.7, 0.8) if method == "euler" else (0.6, 0.7)
    assert (lo, hi) == pytest.approx(expected)
    assert info.value.t == pytest.approx(expected[1])


def test_fixed_grid_non_finite_state_reversed_time_names_the_output_interval():
    f = CountingFunc(lambda t, y: torch.where(t < 0.45, torch.full_like(y, math.inf), -y))
    t = torch.linspace(1.0, 0.0, 11, dtype=F64)
    with pytest.raises(NonFiniteStateError, match=r"between t=") as info:
        odeint(f, y0_(), t, method="euler", options={"step_size": 0.1})
    lo, hi = (float(x) for x in re.search(r"between t=(\S+) and t=(\S+?):", str(info.value)).groups())
    assert lo == pytest.approx(0.4) and hi == pytest.approx(0.3)
    assert info.value.t == pytest.approx(0.3)


def test_torchdiffeq_option_names_are_accepted_as_aliases():
    f = CountingFunc()
    jumps = torch.tensor([0.5], dtype=F64)
    a = odeint(f, y0_(), t_(), options={"jump_locations": jumps, "step_locations": jumps})
    b = odeint(f, y0_(), t_(), options={"jump_t": jumps, "step_t": jumps})
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"^options: give either 'jump_locations' or 'jump_t'"):
        odeint(f, y0_(), t_(), options={"jump_locations": jumps, "jump_t": jumps})
