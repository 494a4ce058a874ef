"""torchdiffeq 0.2.5 as the oracle: the same generated inputs to both libraries, the same outcome.

Fixed grids must agree to float rounding; adaptive solves are each compared with a 1e-12 float64
reference (their step-size selection differs in details) and with each other; gradients (y0, t,
parameters) likewise; where torchdiffeq raises for a real reason, neuralode raises a typed error that
names the argument. Every deliberate difference is a row of DELIBERATE_DIFFERENCES, used by a test.
Run with ``-s`` to see the number of generated cases per test and the NFE comparison.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter

import pytest
import torch
import torchdiffeq
from hypothesis import Phase, assume, given, settings
from hypothesis import strategies as st

import neuralode
from tests.parity_cases import (
    ADAMS,
    ADAPTIVE,
    COMMON_METHODS,
    FIXED_RK,
    STRUCTURES,
    Case,
    LinearField,
    cases,
    max_abs,
    reference,
    scale_of,
    solve,
)
from tests.parity_differences import DELIBERATE_DIFFERENCES
from tests.parity_events import EventProblem, event_reference, solve_event

# no shrinking: a failure is reported as generated (shrinking a slow solve costs minutes)
SETTINGS = dict(
    phases=(Phase.explicit, Phase.generate),
)
LOG: Counter = Counter()  # generated cases per test, printed at the end of the module (-s)
NFE_NOTES: list[str] = []  # cases where neuralode took > 1.5x torchdiffeq's NFE
ORACLE_NOTES: list[str] = []  # cases where torchdiffeq's gradient missed the bound neuralode met


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nparity cases generated per test:", dict(LOG), "total", sum(LOG.values()))
    print("cases with neuralode NFE > 1.5x torchdiffeq's:", NFE_NOTES or "none")
    print("cases outside the oracle checks (noted, not failed):", len(ORACLE_NOTES), ORACLE_NOTES[:40])


def note_nfe(what: str, nd: int, td: int) -> None:
    if nd > 1.5 * td:
        NFE_NOTES.append(f"{what}: neuralode {nd} vs torchdiffeq {td}")


@contextlib.contextmanager
def _quiet():
    """torchdiffeq warns about unused options and Adams convergence; the tests check values instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def assert_close(name: str, got, want, bound: float) -> None:
    err = max_abs(got, want)
    assert err <= bound, f"{name}: max |difference| {err:.3e} > {bound:.3e}"


def check_grads(name: str, got: dict, want: dict, bound_of) -> None:
    """y0, parameter and time gradients within ``bound_of(scale)`` of ``want``."""
    for key in ("y0", "params"):
        assert_close(f"{name} d/d{key}", got[key], want[key], bound_of(scale_of(want[key])))
    assert_close(f"{name} d/dt", (got["t"],), (want["t"],), bound_of(scale_of((want["t"],))))


# ------------------------------------------------------------------------------------------- methods


def test_every_common_method_is_covered():
    """Every method both libraries have is in one of the groups the tests below generate from."""
    assert set(COMMON_METHODS) == set(ADAPTIVE) | set(FIXED_RK) | set(ADAMS) | {"scipy_solver"}


# ---------------------------------------------------------------------------------------- fixed grids

NONSCALAR = ("vector", "batched")
WITH_0DIM = ("scalar", "tuple")  # 0-dim states and tuples with a 0-dim member (crashed before issue 15)


def fixed_grid_options(method: str, grid: str, h: float, perturb: bool, interp: str):
    """(torchdiffeq options, neuralode options) for the same grid."""
    opts: dict = {"perturb": perturb, "interp": interp}
    if grid == "step_size":
        opts["step_size"] = h
    elif grid == "grid_constructor":

        def constructor(func, y0, t, h=h):
            n = max(2, math.ceil(abs(float(t[-1] - t[0])) / h) + 1)
            return torch.linspace(float(t[0]), float(t[-1]), n, dtype=t.dtype)

        opts["grid_constructor"] = constructor
    td_opts, nd_opts = dict(opts), dict(opts)
    if method == "explicit_adams":
        td_opts["max_order"], nd_opts["max_order"] = 4, 3  # DELIBERATE_DIFFERENCES["adams_max_order"]
    return td_opts, nd_opts


def _fixed_grid_case(case: Case, method: str, grid: str, h: float, perturb: bool, interp: str, name: str):
    LOG[name] += 1
    td_opts, nd_opts = fixed_grid_options(method, grid, h, perturb, interp)
    func = case.make_field()
    with _quiet():
        td_sol, td_g, td_nfe, _ = solve(torchdiffeq, case, func, True, method=method, options=td_opts)
    nd_sol, nd_g, nd_nfe, _ = solve(neuralode, case, func, True, method=method, options=nd_opts)
    steps = max(1, len(case.times) * 8, int(abs(case.times[-1] - case.times[0]) / h) + 2)
    rounding = lambda scale: 64 * case.eps * steps * max(scale, 1.0)  # noqa: E731
    assert_close("solution", nd_sol, td_sol, rounding(scale_of(td_sol)))
    for key in ("y0", "params"):  # same discrete solve: same discrete gradient
        assert_close(f"d/d{key}", nd_g[key], td_g[key], rounding(scale_of(td_g[key])))
    assert nd_nfe <= td_nfe + 2 * len(case.times) + 2, (nd_nfe, td_nfe)


fixed_grid_strategy = dict(
    method=st.sampled_from((*FIXED_RK, "explicit_adams")),
    grid=st.sampled_from(["step_size", "grid_constructor"]),
    h=st.sampled_from([1 / 8, 1 / 16, 3 / 16]),
    perturb=st.booleans(),
    interp=st.sampled_from(["linear", "cubic"]),
)


@settings(max_examples=60, **SETTINGS)
@given(case=cases(structures=(*NONSCALAR, "tuple_nonscalar")), **fixed_grid_strategy)
def test_fixed_grid_identical(case, method, grid, h, perturb, interp):
    """euler..rk4 and explicit_adams on the same grid: the same solution and y0/parameter gradients."""
    _fixed_grid_case(case, method, grid, h, perturb, interp, "fixed_grid_identical")


@settings(max_examples=10, **SETTINGS)
@given(case=cases(structures=WITH_0DIM), **fixed_grid_strategy)
def test_fixed_grid_identical_0dim(case, method, grid, h, perturb, interp):
    _fixed_grid_case(case, method, grid, h, perturb, interp, "fixed_grid_identical_0dim")


@settings(max_examples=15, **SETTINGS)
@given(case=cases(structures=NONSCALAR), method=st.sampled_from(FIXED_RK), perturb=st.booleans())
def test_fixed_grid_steps_on_t(case, method, perturb):
    """Neither step_size nor grid_constructor: both step on the points of t (torchdiffeq's default)."""
    _fixed_grid_case(case, method, "t", 1.0, perturb, "linear", "fixed_grid_steps_on_t")


@pytest.mark.parametrize("times", [[0.0, 0.1, 0.5, 0.6, 1.3, 1.4, 2.0], [0.0, 0.3, 0.35, 0.9, 1.0, 1.6]])
def test_adams_on_a_nonuniform_t_keeps_its_order(times):
    """explicit_adams stepping on an uneven t: neuralode's coefficients follow the actual spacing, so it
    is more accurate than torchdiffeq's, whose coefficients assume equal steps (DELIBERATE_DIFFERENCES)."""
    t = torch.tensor(times, dtype=torch.float64)
    y0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    exact = y0 * torch.exp(-2.0 * t)[:, None]
    f = lambda t, y: -2.0 * y  # noqa: E731
    ours = neuralode.odeint(f, y0, t, method="explicit_adams", options={"max_order": 3})
    with _quiet():
        theirs = torchdiffeq.odeint(f, y0, t, method="explicit_adams", options={"max_order": 4})
    assert (ours - theirs).abs().max() > 1e-6  # they do differ here: the row below is needed
    assert (ours - exact).abs().max() < (theirs - exact).abs().max()
    assert "adams_nonuniform_t" in DELIBERATE_DIFFERENCES


def test_adams_on_a_uniform_t_is_identical():
    """On an evenly spaced t the two Adams methods take the same steps (max_order mapped as above)."""
    t = torch.linspace(0.0, 2.0, 9, dtype=torch.float64)
    y0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    f = lambda t, y: torch.sin(t) - y**3  # noqa: E731
    ours = neuralode.odeint(f, y0, t, method="explicit_adams", options={"max_order": 3})
    with _quiet():
        theirs = torchdiffeq.odeint(f, y0, t, method="explicit_adams", options={"max_order": 4})
    assert (ours - theirs).abs().max() < 1e-13


# ------------------------------------------------------------------------------------ adaptive methods


def tolerance_bound(case: Case, rtol: float, atol: float, factor: float = 100.0):
    """Allowed error for a quantity of size ``scale``: a small multiple of the tolerance, plus rounding."""
    return lambda scale: factor * (atol + rtol * scale) + 1e3 * case.eps * max(scale, 1.0)


def linf_norm(y):
    """A user norm on the state's own structure (a tensor or a tuple), as both libraries call it."""
    ys = y if isinstance(y, tuple) else (y,)
    return torch.stack([v.abs().max() for v in ys]).max()


@st.composite
def adaptive_options(draw, case: Case):
    """One of the adaptive options both libraries take, with values inside the case's span."""
    kind = draw(st.sampled_from(["none", "max_step", "min_step", "norm", "jump_t", "step_t", "first_step"]))
    t0, t1 = case.times[0], case.times[-1]
    inside = t0 + (t1 - t0) * draw(st.sampled_from([0.3, 0.55, 0.8]))
    if kind == "none" or (t0 == t1 and kind in ("jump_t", "step_t")):
        return {}
    return {
        "max_step": {"max_step": 0.1},
        "min_step": {"min_step": 1e-3},
        "norm": {"norm": linf_norm},
        "jump_t": {"jump_t": torch.tensor([inside], dtype=torch.float64)},
        "step_t": {"step_t": torch.tensor([inside], dtype=torch.float64)},
        "first_step": {"first_step": 0.01},
    }[kind]


# Global error over a solve is a multiple of the local tolerance: larger for the low-order pairs
ERROR_MULTIPLE = {
    "dopri5": 100.0,
    "dopri8": 100.0,
    "bosh3": 300.0,
    "fehlberg2": 1000.0,
    "adaptive_heun": 1000.0,
}


def _check_accuracy(name: str, nd, td, ref, bound: float, oracle_bound: bool = True) -> None:
    """neuralode within ``bound`` of the reference. If ``oracle_bound``, also torchdiffeq, the two within
    2 * bound, and neuralode's error no more than twice torchdiffeq's (unless a tenth of the bound); else
    (gradients of a discrete adaptive solve are not under error control, and either library's can be
    the luckier) those are noted for the report."""
    nd_err, td_err = max_abs(nd, ref), max_abs(td, ref)
    assert nd_err <= bound, f"{name}: neuralode's error {nd_err:.3e} > {bound:.3e}"
    if oracle_bound:
        assert nd_err <= max(2 * td_err, bound / 10), (
            f"{name}: neuralode {nd_err:.3e} vs torchdiffeq {td_err:.3e}"
        )
        assert td_err <= bound, f"{name}: torchdiffeq's error {td_err:.3e} > {bound:.3e}"
        assert max_abs(nd, td) <= 2 * bound
    elif td_err > bound or nd_err > max(2 * td_err, bound / 10):
        ORACLE_NOTES.append(
            f"{name}: torchdiffeq's error {td_err:.2e}, neuralode's {nd_err:.2e}, bound {bound:.2e}"
        )


def _adaptive_case(case: Case, method: str, rtol: float, atol: float, options: dict, name: str) -> None:
    ref, ref_g = reference(case)
    func = case.make_field()
    bound = tolerance_bound(case, loosest(rtol), loosest(atol), ERROR_MULTIPLE[method])
    kwargs = dict(method=method, rtol=rtol, atol=atol)
    td_sol, td_g, td_nfe, _ = solve(torchdiffeq, case, func, True, options=dict(options), **kwargs)
    nd_sol, nd_g, nd_nfe, _ = solve(neuralode, case, func, True, options=options, **kwargs)
    # torchdiffeq is held to the bound for dopri5 only: its dopri8 output times miss it by design
    # (DELIBERATE_DIFFERENCES["dopri8_interpolant"]), its bosh3 at rtol 1e-8 by 1.6x (noted)
    _check_accuracy("solution", nd_sol, td_sol, ref, bound(scale_of(ref)), method == "dopri5")
    for key in ("y0", "params"):
        _check_accuracy(f"d/d{key}", nd_g[key], td_g[key], ref_g[key], bound(scale_of(ref_g[key])), False)
    # DELIBERATE_DIFFERENCES["time_gradient"]: only neuralode's are checked against the exact ones here
    assert_close("d/dt (exact sensitivities)", (nd_g["t"],), (ref_g["t"],), bound(scale_of((ref_g["t"],))))
    what = f"{name} {method} rtol={loosest(rtol)} atol={loosest(atol)} {case.structure} {case.dtypes}"
    what += f" {sorted(options)}"
    note_nfe(what, nd_nfe, td_nfe)
    assert nd_nfe <= 3 * td_nfe + 20, f"NFE {nd_nfe} is not the order of torchdiffeq's {td_nfe}"
    LOG[name] += 1


TOLERANCES = {
    torch.float64: [(1e-6, 1e-8), (1e-8, 1e-10), (1e-5, 1e-7)],
    torch.float32: [(1e-4, 1e-6), (1e-5, 1e-7)],
}
LOW_ORDER = ("adaptive_heun", "fehlberg2")  # thousands of steps below 1e-6: kept to loose tolerances


def per_component(case: Case, tol: float, factors) -> list[float] | torch.Tensor:
    """A per-component tolerance from ``tol``: a list (one per member) for a tuple state, else a tensor
    of the state's shape (torchdiffeq's and neuralode's forms); ``factors`` scale the entries."""
    if case.is_tuple:
        return [tol * factors[i % len(factors)] for i in range(len(case.shapes))]
    n = max(1, math.prod(case.shapes[0]))
    values = [tol * factors[i % len(factors)] for i in range(n)]
    return torch.tensor(values, dtype=torch.float64).reshape(case.shapes[0])


def loosest(tol) -> float:
    if isinstance(tol, list):
        return float(max(tol))
    return float(tol.max()) if isinstance(tol, torch.Tensor) else float(tol)


@st.composite
def adaptive_problems(draw, structures, zero_tolerance: bool = False, componentwise: bool = False):
    case = draw(cases(structures=structures, min_len=2))
    method = draw(st.sampled_from(ADAPTIVE))
    rtol, atol = draw(st.sampled_from(TOLERANCES[case.state_dtype]))
    if method in LOW_ORDER:
        rtol, atol = max(rtol, 1e-5), max(atol, 1e-7)
    if zero_tolerance:  # pure absolute or pure relative error control
        rtol, atol = draw(st.sampled_from([(0.0, atol), (rtol, 0.0)]))
    if componentwise:  # per-component tolerances: a list per tuple member, a tensor for a tensor state
        factors = draw(st.sampled_from([(1.0, 0.1), (0.1, 1.0, 0.3), (1.0,)]))
        rtol = per_component(case, rtol, factors)
        atol = per_component(case, atol, factors) if draw(st.booleans()) else atol
    return case, method, rtol, atol, draw(adaptive_options(case))


@settings(max_examples=60, **SETTINGS)
@given(problem=adaptive_problems(tuple(STRUCTURES)))
def test_adaptive_against_reference(problem):
    """dopri5..dopri8 with every adaptive option: both within the tolerance of a 1e-12 reference, and of
    each other, for the solution and the y0/parameter/time gradients (backprop through the solver)."""
    _adaptive_case(*problem, "adaptive_against_reference")


@settings(max_examples=15, **SETTINGS)
@given(problem=adaptive_problems(tuple(STRUCTURES), zero_tolerance=True))
def test_zero_tolerance(problem):
    """rtol=0 (pure absolute) or atol=0 (pure relative error control), as torchdiffeq and SciPy take them."""
    _adaptive_case(*problem, "zero_tolerance")


@settings(max_examples=15, **SETTINGS)
@given(problem=adaptive_problems(tuple(STRUCTURES), componentwise=True))
def test_per_component_tolerances(problem):
    """rtol (and atol) per component: a list with one entry per tuple member, a tensor of a tensor state's
    shape, the same objects to both libraries; held to the loosest entry's bound."""
    _adaptive_case(*problem, "per_component_tolerances")


def test_both_tolerances_zero():
    """DELIBERATE_DIFFERENCES["both_tolerances_zero"]: rtol = atol = 0 for an adaptive method."""
    f, y0, t = (lambda t, y: -y), torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0])
    with pytest.raises(AssertionError, match="underflow"):
        torchdiffeq.odeint(f, y0, t.double(), rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match="rtol and atol are both 0"):
        neuralode.odeint(f, y0, t.double(), rtol=0.0, atol=0.0)
    for lib in (torchdiffeq, neuralode):  # a fixed grid does not use them: both accept
        sol = lib.odeint(f, y0, t.double(), rtol=0.0, atol=0.0, method="rk4", options={"step_size": 0.1})
        assert abs(float(sol[-1, 0]) - math.exp(-1.0)) < 1e-6


@settings(max_examples=12, **SETTINGS)
@given(
    case=cases(structures=tuple(STRUCTURES), min_len=2, allow_float32=False),
    method=st.sampled_from(["dopri5", "bosh3", "dopri8"]),
    min_step=st.sampled_from([1 / 16, 1 / 8]),
)
def test_min_step_binds(case, method, min_step):
    """min_step above the steps rtol 1e-10 asks for: both libraries accept steps of min_step (no error
    control left); both within the fixed-step error of the reference, and of each other."""
    LOG["min_step_binds"] += 1
    ref, _ = reference(case, grad=False)
    func = case.make_field()
    kwargs = dict(method=method, rtol=1e-10, atol=1e-12, options={"min_step": min_step})
    td_sol, _, td_nfe, _ = solve(torchdiffeq, case, func, False, **kwargs)
    nd_sol, _, nd_nfe, _ = solve(neuralode, case, func, False, **kwargs)
    order = {"dopri5": 4, "bosh3": 3, "dopri8": 4}[method]  # 4: torchdiffeq's dopri8 output fit
    bound = min_step**order * max(1.0, scale_of(ref))
    assert max_abs(nd_sol, ref) <= bound and max_abs(td_sol, ref) <= bound
    assert max_abs(nd_sol, td_sol) <= bound
    span = abs(case.times[-1] - case.times[0])
    assert nd_nfe <= td_nfe + 20 and td_nfe <= (span / min_step + 2) * 13 + 10, (nd_nfe, td_nfe)


# ----------------------------------------------------------------------------------------- adjoint


ADJOINT_VARIANTS = (
    "module",
    "adjoint_params",
    "plain_function",
    "adjoint_method",
    "seminorm",
    "adjoint_options",  # adjoint_options (and adjoint_rtol/atol) given separately from options
)
# Fixed grids in the adjoint: the backward solve steps on the same kind of grid (rk4 only: 4th order)
ADJOINT_FIXED = {"rk4_step_size": {"step_size": 1 / 64}, "rk4_on_t": {}}


@st.composite
def adjoint_problems(draw):
    case = draw(cases(min_len=2))
    method = draw(st.sampled_from(["dopri5", "bosh3", "dopri8", *ADJOINT_FIXED]))
    variant = draw(st.sampled_from(ADJOINT_VARIANTS))
    return case, method, variant


def _adjoint_kwargs(case: Case, method: str, variant: str, field):
    """(func, kwargs, rtol, atol) for odeint_adjoint in both libraries."""
    rtol, atol = (1e-7, 1e-9) if case.state_dtype == torch.float64 else (1e-5, 1e-7)
    kwargs: dict = dict(method=method, rtol=rtol, atol=atol)
    if method in ADJOINT_FIXED:
        kwargs = dict(method="rk4", options=dict(ADJOINT_FIXED[method]))
    func = field
    if variant in ("adjoint_params", "plain_function"):
        kwargs["adjoint_params"] = tuple(field.parameters())
    if variant == "plain_function":

        class PlainFunction:  # not an nn.Module: the parameters come only from adjoint_params
            nfe = 0

            def __call__(self, t, y):
                self.nfe += 1
                return field(t, y)

        func = PlainFunction()
    if variant == "adjoint_method" and method not in ADJOINT_FIXED:
        kwargs["adjoint_method"] = "dopri5" if method != "dopri5" else "dopri8"
    if variant == "seminorm" and method not in ADJOINT_FIXED:
        kwargs["adjoint_options"] = {"norm": "seminorm"}
    if variant == "adjoint_options":
        if method in ADJOINT_FIXED:  # the backward pass on its own grid
            kwargs["adjoint_options"] = {"step_size": 1 / 48}
        else:
            kwargs["options"] = {"max_step": 0.2}
            kwargs["adjoint_options"] = {"first_step": 0.01}
            kwargs["adjoint_rtol"], kwargs["adjoint_atol"] = rtol / 10, atol / 10
    return func, kwargs, rtol, atol


def _adjoint_bound(case: Case, method: str, rtol: float, atol: float):
    if method in ADJOINT_FIXED:  # rk4's global error: C h^4, h = 1/64 or t's spacing (<= 1/2)
        h = ADJOINT_FIXED[method].get("step_size") or max(
            abs(b - a) for a, b in zip(case.times, case.times[1:], strict=False)
        )
        return lambda scale: 4 * h**4 * max(scale, 1.0) + 1e3 * case.eps * max(scale, 1.0)
    return tolerance_bound(case, rtol, atol, ERROR_MULTIPLE[method])


@settings(max_examples=30, **SETTINGS)
@given(problem=adjoint_problems())
def test_adjoint_against_reference(problem):
    """odeint_adjoint in both libraries, with and without adjoint_params (an nn.Module or a plain function),
    with adjoint_method, with the seminorm, with adjoint_options/adjoint_rtol/adjoint_atol given
    separately, on fixed grids (rk4 with step_size, and stepping on t), for 0-dim, tensor and tuple
    states in float64 and float32 (with float32 or float64 t): gradients for y0, parameters and t within
    the tolerance of the reference."""
    case, method, variant = problem
    ref, ref_g = reference(case)
    field = case.make_field()
    func, kwargs, rtol, atol = _adjoint_kwargs(case, method, variant, field)
    bound = _adjoint_bound(case, method, rtol, atol)
    results = {}
    for lib in (torchdiffeq, neuralode):
        y0, t = case.inputs(requires_grad=True)
        with _quiet():
            sol = lib.odeint_adjoint(func, y0, t, **kwargs)
        nfe_forward = func.nfe
        leaves = [*(y0 if isinstance(y0, tuple) else (y0,)), t, *field.parameters()]
        g = torch.autograd.grad(case.loss(sol), leaves, allow_unused=True)
        n = len(case.shapes)
        sols = tuple(s.detach().double() for s in (sol if isinstance(sol, tuple) else (sol,)))
        grads = {
            "y0": g[:n],
            "t": g[n],
            "params": tuple(
                torch.zeros_like(p) if x is None else x
                for x, p in zip(g[n + 1 :], field.parameters(), strict=True)
            ),
        }
        results[lib.__name__] = sols, grads, func.nfe - nfe_forward
        func.nfe = 0
    (nd_sol, nd_g, nd_back), (td_sol, td_g, td_back) = results["neuralode"], results["torchdiffeq"]
    if method in ADJOINT_FIXED:  # the same forward grid: the same solution
        assert_close(
            "adjoint solution (fixed grid)", nd_sol, td_sol, 64 * case.eps * 200 * max(1, scale_of(td_sol))
        )
    held = method == "dopri5" or method in ADJOINT_FIXED
    _check_accuracy("adjoint solution", nd_sol, td_sol, ref, bound(scale_of(ref)), held)
    for key in ("y0", "params"):
        _check_accuracy(
            f"adjoint d/d{key}", nd_g[key], td_g[key], ref_g[key], bound(scale_of(ref_g[key])), False
        )
    # the adjoint's time gradients are exact flow sensitivities in both libraries
    _check_accuracy(
        "adjoint d/dt", (nd_g["t"],), (td_g["t"],), (ref_g["t"],), bound(scale_of((ref_g["t"],))), False
    )
    note_nfe(f"adjoint backward {method} {variant} {case.structure} {case.dtypes}", nd_back, td_back)
    if len(set(case.dtypes)) == 1:  # mixed dtypes: test_mixed_dtype_adjoint_*_nfe
        assert nd_back <= 3 * td_back + 20
    LOG["adjoint_against_reference"] += 1


# ------------------------------------------------------------------------------- implicit Adams, SciPy


@settings(max_examples=12, **SETTINGS)
@given(
    case=cases(structures=(*NONSCALAR, "scalar"), min_len=2),
    method=st.sampled_from(["implicit_adams", "fixed_adams"]),
    h=st.sampled_from([1 / 16, 1 / 32]),
)
def test_implicit_adams_against_reference(case, method, h):
    """implicit_adams (= fixed_adams) with step_size: the two libraries' predictor-corrector schemes differ
    (DELIBERATE_DIFFERENCES["implicit_adams_algorithm"]), so each is held to its 4th order against the
    reference instead of to the other."""
    LOG["implicit_adams_against_reference"] += 1
    ref, _ = reference(case, grad=False)
    func = case.make_field()
    with _quiet():
        td_sol, _, _, _ = solve(torchdiffeq, case, func, False, method=method, options={"step_size": h})
    nd_sol, _, _, _ = solve(neuralode, case, func, False, method=method, options={"step_size": h})
    bound = 10 * h**4 * max(1.0, scale_of(ref)) + 1e3 * case.eps * max(1.0, scale_of(ref))
    assert max_abs(nd_sol, ref) <= bound and max_abs(td_sol, ref) <= bound
    if max_abs(nd_sol, ref) > 3 * max_abs(td_sol, ref) + 1e3 * case.eps:  # seen: up to 11x torchdiffeq's
        ORACLE_NOTES.append(
            f"{method} h={h}: neuralode {max_abs(nd_sol, ref):.2e}, td {max_abs(td_sol, ref):.2e}"
        )


def test_implicit_adams_algorithm_differs():
    """DELIBERATE_DIFFERENCES["implicit_adams_algorithm"]: no max_order mapping makes them identical."""
    f = lambda t, y: torch.sin(t) - y**3  # noqa: E731
    y0, t = torch.tensor([1.0, -0.5], dtype=torch.float64), torch.linspace(0, 2, 9, dtype=torch.float64)
    ours = neuralode.odeint(f, y0, t, method="implicit_adams", options={"step_size": 1 / 16})
    for max_order in (4, 5, 12):
        with _quiet():
            theirs = torchdiffeq.odeint(
                f, y0, t, method="implicit_adams", options={"step_size": 1 / 16, "max_order": max_order}
            )
        assert (ours - theirs).abs().max() > 1e-7


@settings(max_examples=10, **SETTINGS)
@given(
    case=cases(structures=NONSCALAR, min_len=2, allow_float32=False),
    solver=st.sampled_from(["RK45", "DOP853", "LSODA", "Radau"]),
    tol=st.sampled_from([1e-6, 1e-9]),
)
def test_scipy_solver_identical(case, solver, tol):
    """scipy_solver: forwards in time both libraries call solve_ivp the same way: the same solution to
    rounding; backwards torchdiffeq integrates -f on -t, neuralode on t itself (LSODA's steps then differ
    slightly): within the tolerance."""
    LOG["scipy_solver_identical"] += 1
    func = case.make_field()
    kwargs = dict(method="scipy_solver", rtol=tol, atol=tol, options={"solver": solver})
    td_sol, _, _, _ = solve(torchdiffeq, case, func, False, **kwargs)
    nd_sol, _, _, _ = solve(neuralode, case, func, False, **kwargs)
    forwards = case.times[-1] > case.times[0]
    assert max_abs(nd_sol, td_sol) <= (1e-12 if forwards else 100 * tol) * max(1.0, scale_of(td_sol))


# ------------------------------------------------------------------------------------------- events

EVENT_METHODS = {  # method: (options, rtol and atol by dtype)
    **{m: {} for m in ADAPTIVE},
    "rk4_linear": {"step_size": 1 / 64, "interp": "linear"},
    "rk4_cubic": {"step_size": 1 / 64, "interp": "cubic"},
}


@st.composite
def event_problems(draw):
    case = draw(cases(min_len=1, max_len=1))
    problem = EventProblem(case, draw(st.sampled_from([1, -1])))
    assume(problem.monotone and problem.rate > 1e-2)
    method = draw(st.sampled_from(sorted(EVENT_METHODS)))
    entry = draw(st.sampled_from(["odeint", "odeint_event"]))
    interface = draw(st.sampled_from(["odeint", "odeint_adjoint"]))
    return problem, method, entry, interface


def _event_kwargs(case: Case, method: str):
    rtol, atol = (1e-7, 1e-9) if case.state_dtype == torch.float64 else (1e-5, 1e-7)
    if method.startswith("rk4"):  # rk4's error at h = 1/64, interpolant included
        kwargs = dict(method="rk4", options=dict(EVENT_METHODS[method]))
        h4 = (1 / 64) ** (4 if method == "rk4_cubic" else 2)
        return kwargs, lambda scale: 0.1 * h4 * max(scale, 1.0) + 1e3 * case.eps * max(scale, 1.0)
    if method in LOW_ORDER:  # an event search stops at 1,000 steps: loose tolerances as above
        rtol, atol = max(rtol, 1e-5), max(atol, 1e-7)
    mult = ERROR_MULTIPLE[method]
    return dict(method=method, rtol=rtol, atol=atol), tolerance_bound(case, rtol, atol, mult)


@settings(max_examples=40, **SETTINGS)
@given(problem=event_problems())
def test_event_against_reference(problem):
    """event_fn forwards and backwards in time, through odeint (t = [t0, t1] gives the direction) and
    odeint_event (reverse_time), with odeint or odeint_adjoint, for the adaptive methods and rk4 with
    step_size, 0-dim, tensor and tuple states in float64 and float32: the event time within the tolerance
    of the exact t0 +- 1/2 and of torchdiffeq's, the state at the event likewise; gradients of the event
    time and the state at the event for y0, t0 and the parameters within the tolerance of the reference
    (torchdiffeq's adjoint at 1e-12) and, through odeint_event, of torchdiffeq's."""
    problem, method, entry, interface = problem
    case = problem.case
    kwargs, bound = _event_kwargs(case, method)
    ref_t, ref_state, ref_g, _ = event_reference(problem)
    assert abs(ref_t - problem.exact_event_t) < 1e-9
    func = case.make_field()
    with _quiet():
        td_t, td_state, td_g, td_linked = solve_event(torchdiffeq, problem, func, entry, interface, **kwargs)
    nd_t, nd_state, nd_g, nd_linked = solve_event(neuralode, problem, func, entry, interface, **kwargs)
    state_bound = bound(scale_of(ref_state))
    time_bound = state_bound / problem.rate
    # torchdiffeq locates the event on its 4th-order fit (dopri5's own interpolant; a fit of the step for
    # the others), which misses the bound for bosh3/dopri8: DELIBERATE_DIFFERENCES["event_location"]
    td_fit = method not in ("dopri5", "rk4_cubic", "rk4_linear")
    assert abs(nd_t - problem.exact_event_t) <= time_bound, (nd_t, problem.exact_event_t, time_bound)
    assert abs(nd_t - td_t) <= (10 * time_bound + 1e-4 if td_fit else 2 * time_bound), (nd_t, td_t)
    assert_close("state at the event", nd_state, ref_state, state_bound)
    assert_close("state at the event vs torchdiffeq", nd_state, td_state, 10 * state_bound)
    # DELIBERATE_DIFFERENCES["event_t_gradient"]: torchdiffeq's odeint(event_fn=...) returns event_t
    # without a gradient (its odeint_event and odeint_adjoint link it); neuralode's odeint links it too
    assert nd_linked and td_linked == (entry == "odeint_event" or interface == "odeint_adjoint")
    # ... and its odeint_adjoint(event_fn=...) misses the implicit-function term of event_t's gradient
    # (off by O(1)): torchdiffeq's gradients are compared only through its odeint_event
    td_held = entry == "odeint_event"
    if not td_held:
        td_g = nd_g
    grad_bound = lambda s: 10 * bound(s)  # noqa: E731  gradients of a discrete solve: not under error control
    what = f"event {method} {entry} {interface} dir={problem.direction} {case.structure} {case.dtypes}"
    for key in ("y0", "params"):
        _check_accuracy(
            f"{what} d/d{key}", nd_g[key], td_g[key], ref_g[key], grad_bound(scale_of(ref_g[key])), td_held
        )
    _check_accuracy(f"{what} d/dt0", (nd_g["t0"],), (td_g["t0"],), (ref_g["t0"],), grad_bound(1.3), td_held)
    LOG["event_against_reference"] += 1


# ----------------------------------------------------------------------------------- bad input, differences

BAD_INPUTS = {  # name: (kwargs for odeint, neuralode's error type, a word its message must contain)
    "t_not_monotone": (dict(t=torch.tensor([0.0, 1.0, 0.5])), ValueError, "t must be strictly"),
    "t_two_dimensional": (dict(t=torch.zeros(2, 2)), ValueError, "t must be 1-D"),
    "unknown_method": (dict(method="nope"), ValueError, "method"),
    "event_with_three_times": (
        dict(t=torch.tensor([0.0, 1.0, 2.0]), event_fn=lambda t, y: y[0] - 0.5),
        ValueError,
        "event_fn",
    ),
    "step_size_and_grid_constructor": (
        dict(method="rk4", options=dict(step_size=0.1, grid_constructor=lambda f, y, t: t)),
        ValueError,
        "grid_constructor",
    ),
    "event_fixed_grid_without_step_size": (
        dict(method="rk4", event_fn=lambda t, y: y[0] - 0.5),
        ValueError,
        "step_size",
    ),
    "integer_y0": (dict(y0=torch.ones(2, dtype=torch.long)), TypeError, "y0"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_in_both(name):
    """Where torchdiffeq raises (often by assert), neuralode raises a typed error naming the argument."""
    kwargs, error, word = BAD_INPUTS[name]
    call = dict(func=lambda t, y: -y, y0=torch.ones(2), t=torch.tensor([0.0, 1.0])) | kwargs
    with _quiet(), pytest.raises((AssertionError, ValueError, TypeError, NotImplementedError)):
        torchdiffeq.odeint(call.pop("func"), call.pop("y0"), call.pop("t"), **call)
    call = dict(func=lambda t, y: -y, y0=torch.ones(2), t=torch.tensor([0.0, 1.0])) | kwargs
    with pytest.raises(error, match=word):
        neuralode.odeint(call.pop("func"), call.pop("y0"), call.pop("t"), **call)


def test_adjoint_plain_function_needs_adjoint_params_in_both():
    """Not a difference: both libraries refuse a plain function without adjoint_params, with a ValueError."""
    for lib in (torchdiffeq, neuralode):
        with pytest.raises(ValueError, match="adjoint_params"):
            lib.odeint_adjoint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]))


def test_time_gradient_is_exact_flow_sensitivity():
    """Euler on t's own grid: torchdiffeq's dL/dt1 is the derivative of y0 (1 - (t1 - t0)), i.e. -y0;
    neuralode's is the flow's f(t1, y1) = -y1 (DELIBERATE_DIFFERENCES["time_gradient"])."""
    y0 = torch.tensor([1.0], dtype=torch.float64)
    grads = {}
    for lib in (torchdiffeq, neuralode):
        t = torch.tensor([0.0, 0.5], dtype=torch.float64, requires_grad=True)
        sol = lib.odeint(
            lambda t, y: -y, y0, t, method="euler", options={"grid_constructor": lambda f, y, t: t}
        )
        (grads[lib.__name__],) = torch.autograd.grad(sol[-1].sum(), t)
    assert torch.allclose(grads["torchdiffeq"], torch.tensor([1.0, -1.0], dtype=torch.float64))
    assert torch.allclose(grads["neuralode"], torch.tensor([0.5, -0.5], dtype=torch.float64))


def test_event_with_one_time():
    """DELIBERATE_DIFFERENCES["event_t_length"]: t=[t0] is an event search forwards in neuralode only."""
    f, g = (lambda t, y: -y), (lambda t, y: y[0] - 0.5)
    with pytest.raises(ValueError, match="len"):
        torchdiffeq.odeint(f, torch.ones(1), torch.tensor([0.0]), event_fn=g)
    event_t, _ = neuralode.odeint(f, torch.ones(1), torch.tensor([0.0]), event_fn=g)
    assert abs(float(event_t) - math.log(2.0)) < 1e-5


def test_integer_times():
    """DELIBERATE_DIFFERENCES["integer_t"]: integer t is accepted by neuralode, refused by torchdiffeq."""
    with pytest.raises(TypeError):
        torchdiffeq.odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0, 1]))
    sol = neuralode.odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0, 1]))
    assert abs(float(sol[-1]) - math.exp(-1.0)) < 1e-5


def test_mixed_dtype_tuple_keeps_member_dtypes():
    """DELIBERATE_DIFFERENCES["mixed_dtype_tuple"]: member dtypes kept; values agree to float32 rounding."""
    y0 = (torch.ones(2, dtype=torch.float32), torch.ones(3, dtype=torch.float64))
    f = lambda t, y: tuple(-v for v in y)  # noqa: E731
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    td, nd = torchdiffeq.odeint(f, y0, t), neuralode.odeint(f, y0, t)
    assert [x.dtype for x in td] == [torch.float64, torch.float64]
    assert [x.dtype for x in nd] == [torch.float32, torch.float64]
    assert max_abs(nd, td) < 1e-6


def _mixed_dtype_nfe() -> dict[str, tuple[int, int]]:
    """(forward, backward) evaluations of both libraries' adjoint on a float64 + float32 tuple state."""
    case = Case("nonlinear", "tuple_nonscalar", (torch.float64, torch.float32), (0.5, 1.0), torch.float64, 1)
    counts = {}
    for lib in (torchdiffeq, neuralode):
        func = case.make_field()
        y0, t = case.inputs(requires_grad=True)
        sol = lib.odeint_adjoint(func, y0, t, method="dopri8", rtol=1e-7, atol=1e-9)
        forward = func.nfe
        case.loss(sol).backward()
        counts[lib.__name__] = (forward, func.nfe - forward)
    return counts


def test_mixed_dtype_adjoint_backward_nfe():
    """Was 627 backward evaluations against torchdiffeq's 55 (a strict xfail with this bound); the backward
    solve now starts from the forward's last accepted step instead of a fresh selection: 63 (measured)."""
    counts = _mixed_dtype_nfe()
    assert counts["neuralode"][1] <= 3 * counts["torchdiffeq"][1] + 20, counts


@pytest.mark.xfail(
    strict=True,
    reason="library bug: a tuple state with a float32 and a float64 member under float64 tolerances takes "
    "about 2x torchdiffeq's forward evaluations (dopri8: 50 vs 28); the float32 member, kept in float32 "
    "(mixed_dtype_tuple), cannot meet rtol 1e-7/atol 1e-9",
)
def test_mixed_dtype_adjoint_forward_nfe():
    counts = _mixed_dtype_nfe()
    assert counts["neuralode"][0] <= 1.5 * counts["torchdiffeq"][0], counts


def test_odeint_dense():
    """DELIBERATE_DIFFERENCES["dense_domain"]: in torchdiffeq's domain (dopri5, tensor y0, t0 < t1, scalar
    times in [t0, t1)) the two dense outputs agree within the tolerance."""
    func = LinearField(1)
    y0 = torch.tensor([1.0, 0.7], dtype=torch.float64)
    t0, t1 = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    td = torchdiffeq.odeint_dense(func, y0, t0, t1, rtol=1e-8, atol=1e-10)
    nd = neuralode.odeint_dense(func, y0, t0, t1, rtol=1e-8, atol=1e-10)
    for s in (0.0, 0.1, 0.37, 0.5, 0.93):
        ts = torch.tensor(s, dtype=torch.float64)
        assert float((td(ts) - nd(ts)).abs().max()) < 1e-6


def test_event_location():
    """DELIBERATE_DIFFERENCES["event_location"]: y' = -0.3 y from 1.3 to 0.9, exact t = ln(13/9)/0.3."""
    exact = math.log(1.3 / 0.9) / 0.3
    errors = {}
    for method, kwargs in [
        ("bosh3", {}),
        ("dopri8", {}),
        ("rk4", {"atol": 1e-3, "options": {"step_size": 1 / 64, "interp": "cubic"}}),
    ]:
        for lib in (torchdiffeq, neuralode):
            event_t, _ = lib.odeint(
                lambda t, y: -0.3 * y,
                torch.tensor(1.3, dtype=torch.float64),
                torch.tensor([0.0, 1.0], dtype=torch.float64),
                event_fn=lambda t, y: y - 0.9,
                method=method,
                **kwargs,
            )
            errors[lib.__name__, method] = abs(float(event_t) - exact)
    for method in ("bosh3", "dopri8", "rk4"):
        assert errors["neuralode", method] < 1e-6 < errors["torchdiffeq", method], errors
        assert errors["neuralode", method] < errors["torchdiffeq", method] / 30, errors


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_event_t_gradient(interface):
    """DELIBERATE_DIFFERENCES["event_t_gradient"]: y' = -y from y0 = 2 to 0.5: t = ln(y0 / 0.5), dt/dy0 = 1/2;
    through odeint_event both libraries give it."""
    f, g = (lambda t, y: -y), (lambda t, y: y[0] - 0.5)
    kwargs = {"adjoint_params": ()} if interface == "odeint_adjoint" else {}
    grads = {}
    for lib in (torchdiffeq, neuralode):
        for entry in ("odeint", "odeint_event"):
            y0 = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
            t0 = torch.tensor(0.0, dtype=torch.float64)
            run = getattr(lib, interface)
            if entry == "odeint":
                event_t, _ = run(f, y0, torch.stack([t0, t0 + 1]), event_fn=g, **kwargs)
            else:
                event_t, _ = lib.odeint_event(f, y0, t0, event_fn=g, odeint_interface=run, **kwargs)
            grads[lib.__name__, entry] = (
                float(torch.autograd.grad(event_t, y0)[0]) if event_t.requires_grad else None
            )
    for key in [("neuralode", "odeint"), ("neuralode", "odeint_event"), ("torchdiffeq", "odeint_event")]:
        assert abs(grads[key] - 0.5) < 1e-6, (key, grads)
    td = grads["torchdiffeq", "odeint"]
    assert td is None if interface == "odeint" else abs(td - 0.5) > 0.4, grads


def test_every_deliberate_difference_is_tested():
    """Each row of DELIBERATE_DIFFERENCES names a test of this module that exists."""
    import re

    for key, text in DELIBERATE_DIFFERENCES.items():
        names = re.findall(r"\((test_\w+)\)", text)
        assert names and all(n in globals() for n in names), key
