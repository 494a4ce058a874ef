"""rtol/atol: any finite number >= 0 in the usual numeric types; both 0 refused for adaptive methods;
an rtol the dtype cannot deliver raised with a ToleranceWarning."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuralode import SolveStats, ToleranceWarning, odeint, odeint_adjoint
from neuralode._setup.tolerances import check_tolerance, rtol_floor

from .conftest import ADAMS_METHODS, ADAPTIVE_METHODS, ALL_FIXED_METHODS, FIXED_METHODS, IMPLICIT_METHODS

F64 = torch.float64
T = torch.tensor([0.0, 1.0], dtype=F64)
WRAPPERS = {
    "float": float,
    "int": None,
    "np.float32": np.float32,
    "np.float64": np.float64,
    "np 0-d array": np.array,
    "tensor": lambda v: torch.tensor(v, dtype=F64),
}


@settings(max_examples=200)
@given(value=st.floats(0.0, 1e6), kind=st.sampled_from(sorted(WRAPPERS)))
def test_any_finite_non_negative_number_is_accepted(value, kind):
    if kind == "int":
        value = int(value)
        wrapped = value
    else:
        wrapped = WRAPPERS[kind](value)
        value = float(np.float32(value)) if kind == "np.float32" else value
    assert check_tolerance(wrapped, "rtol") == value


@pytest.mark.parametrize("name", ["rtol", "atol", "adjoint_rtol", "adjoint_atol"])
@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (True, TypeError, "must be a number >= 0"),
        (np.bool_(True), TypeError, "must be a number >= 0"),
        ("1e-3", TypeError, "must be a number >= 0"),
        (math.nan, ValueError, "must be a finite number >= 0, got nan"),
        (np.float32("inf"), ValueError, "must be a finite number >= 0, got inf"),
        (-1e-6, ValueError, "must be a finite number >= 0, got -1e-06"),
        (
            np.array([1e-3, 1e-4, 1e-5]),
            ValueError,
            r"has shape \(3,\), which does not broadcast to y0's shape",
        ),
    ],
)
def test_bad_tolerance_is_refused_naming_the_argument(name, value, error, message):
    calls = []

    def f(t, y):
        calls.append(t)
        return -y

    with pytest.raises(error, match=rf"^{name} {message}"):
        odeint_adjoint(f, torch.ones(2, dtype=F64), T, adjoint_params=(), **{name: value})
    assert not calls


@pytest.mark.parametrize("method", [*ADAPTIVE_METHODS, "scipy_solver"])
def test_both_zero_is_refused_for_adaptive_methods_with_the_reason(method):
    with pytest.raises(ValueError, match=r"rtol and atol are both 0.*both zero would make every step fail"):
        odeint(lambda t, y: -y, torch.ones(2, dtype=F64), T, method=method, rtol=0, atol=0)
    with pytest.raises(ValueError, match="adjoint_rtol and adjoint_atol are both 0"):
        odeint_adjoint(lambda t, y: -y, torch.ones(2, dtype=F64), T, adjoint_method=method,
                       adjoint_rtol=0, adjoint_atol=0, adjoint_params=())  # fmt: skip


@pytest.mark.parametrize("method", FIXED_METHODS)
def test_both_zero_is_fine_for_explicit_fixed_grid_methods_which_ignore_them(method):
    y0, opts = torch.ones(2, dtype=F64), {"step_size": 0.1}
    ys = odeint(lambda t, y: -y, y0, T, method=method, rtol=0, atol=0, options=opts)
    torch.testing.assert_close(
        ys, odeint(lambda t, y: -y, y0, T, method=method, options=opts), rtol=0, atol=0
    )


@pytest.mark.parametrize("method", ADAMS_METHODS + IMPLICIT_METHODS)
def test_both_zero_works_for_implicit_and_adams_methods(method):
    """Newton (implicit RK) stops at 100 eps of the state; the implicit_adams corrector does all
    max_iters iterations. A zero entry of the state is the hard case (no relative scale)."""
    y0, opts = torch.tensor([1.0, 0.0], dtype=F64), {"step_size": 0.05}
    ys = odeint(lambda t, y: -y, y0, T, method=method, rtol=0, atol=0, options=opts)
    tight = odeint(lambda t, y: -y, y0, T, method=method, rtol=1e-12, atol=1e-14, options=opts)
    torch.testing.assert_close(ys, tight, rtol=1e-10, atol=0)  # converged at least as far as at 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rtol_below_what_the_dtype_delivers_is_raised_with_a_warning(dtype):
    """y' = -y at rtol = atol = 1e-14 (main: float64 842 evaluations, float32 1,484,888 evaluations for
    a relative error of 2.6e-4; now float64 782 / 1.5e-16 and float32 56 / 1.6e-7)."""
    stats = SolveStats()
    with pytest.warns(ToleranceWarning, match=r"rtol=1e-14 is below what torch.float\d\d can deliver") as rec:
        ys = odeint(lambda t, y: -y, torch.ones(1, dtype=dtype), T, rtol=1e-14, atol=1e-14, stats=stats)
    assert rec[0].filename == __file__  # the warning points at the caller's line
    error = abs(float(ys[-1, 0]) - math.exp(-1)) / math.exp(-1)
    if dtype == torch.float64:
        assert stats.forward.nfe < 1500 and error < 1e-13
    else:
        assert stats.forward.nfe < 200 and error < 1e-6


def test_default_tolerances_never_warn_and_the_floor_is_sane():
    assert rtol_floor(torch.float64) == 100 * torch.finfo(torch.float64).eps
    assert rtol_floor(torch.float32) == 1e-7  # float32 delivers 1e-7: the default must not warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            odeint(lambda t, y: -y, torch.ones(2, dtype=dtype), T)
        odeint(lambda t, y: -y, torch.ones(2), T, rtol=0, atol=1e-6)  # pure absolute control: as asked


def test_warning_is_shown_once_per_call_site_and_covers_the_adjoint_tolerances():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("default")
        for _ in range(3):
            odeint(lambda t, y: -y, torch.ones(2), T, rtol=1e-9)
    assert [type(w.message) for w in rec] == [ToleranceWarning]
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    with pytest.warns(ToleranceWarning, match="adjoint_rtol=1e-16"):
        ys = odeint_adjoint(lambda t, y: -y, y0, T, adjoint_rtol=1e-16, adjoint_params=())
    ys[-1].sum().backward()
    torch.testing.assert_close(y0.grad, torch.full((2,), math.exp(-1), dtype=F64), rtol=1e-8, atol=0)


def test_fixed_grid_methods_are_never_warned_about_their_unused_tolerances():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ALL_FIXED_METHODS:
            odeint(lambda t, y: -y, torch.ones(2), T, method=method, rtol=1e-12, atol=1e-14)
