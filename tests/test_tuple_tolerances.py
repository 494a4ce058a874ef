"""Per-component rtol/atol, as torchdiffeq accepts them (issue 15 follow-up): one per member of a tuple
y0 (FFJORD's ``atol=[atol, atol] + [1e20] * nreg``), or a tensor broadcastable to a tensor y0."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.integrate
import torch
import torchdiffeq
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from neuralode import SolveStats, ToleranceWarning, odeint, odeint_adjoint, odeint_checkpoint, odeint_dense
from neuralode._setup.tolerances import backward_tolerances, check_tolerance, rtol_floor
from neuralode._setup.validation import check_y0, make_solver

F64 = torch.float64
T = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
SHARED_METHODS = ["dopri5", "bosh3", "dopri8"]  # adaptive methods both libraries have (no tsit5 there)
SETTINGS = settings(max_examples=25)


class Field(nn.Module):
    """(z, logp, reg): z' = tanh(W z), logp' = -sum(z'), reg' = |z|^2 (reg never feeds back)."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(dim, dim).to(F64)
        self.nfe = 0

    def forward(self, t, state):
        self.nfe += 1
        z = state[0]
        dz = torch.tanh(self.lin(z)) - 0.3 * z
        out = (dz, -dz.sum(1, keepdim=True))
        return out + tuple(z.square().sum(1, keepdim=True) * (k + 1) for k in range(len(state) - 2))


def state(batch: int = 3, nreg: int = 1, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 2, generator=g, dtype=F64)
    return (z, torch.zeros(batch, 1, dtype=F64), *(torch.zeros(batch, 1, dtype=F64) for _ in range(nreg)))


def close_within_tolerance(ours, theirs, rtol, atol, factor=20.0):
    """|ours - theirs| <= factor * (atol + rtol |theirs|), member by member (both err at that level)."""
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        bound = factor * (atol[i] + rtol[i] * b.abs())
        assert bool(((a - b).abs() <= bound).all()), (i, float((a - b).abs().max()))


def as_accurate_as(ours, theirs, reference, atol):
    """Member by member, our error against a tight reference is at most 5 times torchdiffeq's (+ atol):
    a member whose tolerance were ignored (or taken from another member) would fail this."""
    for i, (a, b, r) in enumerate(zip(ours, theirs, reference, strict=True)):
        ours_err, theirs_err = float((a - r).abs().max()), float((b - r).abs().max())
        assert ours_err <= 5 * theirs_err + atol[i], (i, ours_err, theirs_err)


def reference(func, y0, t):
    with torch.no_grad():
        return odeint(func, y0, t, rtol=1e-12, atol=1e-13, method="dopri8")


# ----- equal to torchdiffeq -----


@SETTINGS
@given(
    method=st.sampled_from(SHARED_METHODS),
    exps=st.lists(st.integers(4, 9), min_size=3, max_size=3),
    loose_reg=st.booleans(),
)
def test_per_member_tolerances_match_torchdiffeq(method, exps, loose_reg):
    rtol = [10.0**-e for e in exps]
    atol = [r * 0.1 for r in rtol]
    if loose_reg:
        rtol[2] = atol[2] = 1e20
    y0, f_ours, f_theirs = state(), Field(), Field()
    with torch.no_grad():
        ours = odeint(f_ours, y0, T, rtol=rtol, atol=atol, method=method)
        theirs = torchdiffeq.odeint(f_theirs, y0, T, rtol=rtol, atol=atol, method=method)
    if loose_reg:  # reg is uncontrolled in both: it is as accurate as the steps z needs make it
        atol[2] = 1e-3
    as_accurate_as(ours, theirs, reference(Field(), y0, T), atol)
    # similar cost: not equal, since after an accepted step our controller may shrink the step (to
    # 0.9 ratio^-1/5 < 1), torchdiffeq's keeps it; the step sequences part after a few steps
    assert abs(f_ours.nfe - f_theirs.nfe) <= max(6, 0.35 * f_theirs.nfe), (f_ours.nfe, f_theirs.nfe)


@settings(max_examples=15)
@given(
    method=st.sampled_from(["dopri5", "bosh3", "tsit5", "fehlberg2"]),
    exps=st.lists(st.integers(3, 8), min_size=3, max_size=3),
)
def test_per_member_atol_equals_a_norm_that_scales_each_member(method, exps):
    """An independent oracle inside neuralode: with rtol=0, atol=[a_i] gives the scaled error
    err_i / a_i, which a custom norm computes from the error scaled by atol=1: the same steps."""
    atol = [10.0**-e for e in exps]

    def norm(x):
        return torch.stack([x_i.div(a).square().mean().sqrt() for x_i, a in zip(x, atol, strict=True)]).max()

    per_member, custom = SolveStats(), SolveStats()
    y0 = state()
    with torch.no_grad():
        ys = odeint(Field(), y0, T, rtol=0.0, atol=atol, method=method, stats=per_member)
        ref = odeint(Field(), y0, T, rtol=0.0, atol=1.0, method=method, options={"norm": norm}, stats=custom)
    assert per_member.forward.n_steps == custom.forward.n_steps
    assert per_member.forward.n_rejected == custom.forward.n_rejected
    for a, b in zip(ys, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_per_member_tolerance_takes_effect_per_member():
    """Tightening one member's tolerance costs steps, as in torchdiffeq; loosening the rest saves them."""
    y0 = state()
    counts = {}
    for name, tols in {"loose": [1e-3] * 3, "tight z": [1e-9, 1e-3, 1e-3], "tight": [1e-9] * 3}.items():
        f, g = Field(), Field()
        with torch.no_grad():
            odeint(f, y0, T, rtol=tols, atol=tols)
            torchdiffeq.odeint(g, y0, T, rtol=tols, atol=tols)
        counts[name] = (f.nfe, g.nfe)
    assert counts["loose"][0] < counts["tight z"][0] <= counts["tight"][0]
    assert counts["loose"][1] < counts["tight z"][1] <= counts["tight"][1]


@SETTINGS
@given(
    method=st.sampled_from(SHARED_METHODS),
    shape=st.sampled_from([(2,), (3, 1), (1, 2), (3, 2)]),
    seed=st.integers(0, 100),
)
def test_per_element_tensor_tolerance_matches_torchdiffeq(method, shape, seed):
    g = torch.Generator().manual_seed(seed)
    atol = 10.0 ** -torch.randint(4, 10, shape, generator=g).to(F64)
    rtol = atol * 10
    y0 = torch.randn(3, 2, generator=g, dtype=F64)
    w = torch.randn(2, 2, generator=g, dtype=F64)

    def f(t, y):
        return torch.tanh(y @ w) - 0.5 * y

    with torch.no_grad():
        ours = odeint(f, y0, T, rtol=rtol, atol=atol, method=method)
        theirs = torchdiffeq.odeint(f, y0, T, rtol=rtol, atol=atol, method=method)
    ref = reference(f, y0, T)
    # per element: our error at most 5x torchdiffeq's there, plus that element's atol
    assert bool(((ours - ref).abs() <= 5 * (theirs - ref).abs().amax(0) + atol).all())


# ----- 1e20: no error control on that member -----


@SETTINGS
@given(method=st.sampled_from(["dopri5", "bosh3", "tsit5", "dopri8", "fehlberg2"]), exp=st.integers(3, 10))
def test_huge_tolerance_leaves_a_member_out_of_step_control(method, exp):
    """(z, logp, reg) with reg at 1e20 takes exactly the steps of (z, logp) alone, since reg never feeds
    back: z and logp are those of the smaller solve, to a few ulps (the dense output is a matrix
    product whose blocking in BLAS depends on the state's length: 5.6e-16 relative, 3 ulps, for dopri8)."""
    tol = 10.0**-exp
    with_reg, without = SolveStats(), SolveStats()
    y0 = state(nreg=1)
    with torch.no_grad():
        ys = odeint(
            Field(), y0, T, rtol=[tol, tol, 1e20], atol=[tol, tol, 1e20], method=method, stats=with_reg
        )
        ref = odeint(Field(), y0[:2], T, rtol=tol, atol=tol, method=method, stats=without)
    assert with_reg.forward.n_steps == without.forward.n_steps
    assert with_reg.forward.n_rejected == without.forward.n_rejected
    torch.testing.assert_close(ys[:2], ref, rtol=1e-15, atol=0)  # a few ulps


def test_uniform_list_is_the_scalar_fast_path():
    y0 = state()
    layout = check_y0(y0)
    assert check_tolerance([1e-5, 1e-5, 1e-5], "rtol", layout) == 1e-5
    assert isinstance(check_tolerance(1e-5, "rtol", layout), float)
    tol = check_tolerance([1e-5, 1e-6, 1e20], "atol", layout)
    assert isinstance(tol, torch.Tensor) and tol.dtype == F64 and tol.shape == (3 * 2 + 3 + 3,)
    torch.testing.assert_close(tol, torch.tensor([1e-5] * 6 + [1e-6] * 3 + [1e20] * 3, dtype=F64))
    a = odeint(Field(), y0, T, rtol=[1e-6] * 3, atol=[1e-8] * 3)
    b = odeint(Field(), y0, T, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_huge_entries_fit_the_state_dtype():
    """1e300 is a valid float64 tolerance; in float32 it becomes float32's largest value, not inf
    (inf * 0 would make the error scale NaN)."""
    y0 = (torch.ones(2), torch.zeros(2))
    tol = check_tolerance([1e-5, 1e300], "atol", check_y0(y0))
    assert tol.dtype == torch.float32 and bool(torch.isfinite(tol).all())
    ys = odeint(lambda t, y: (-y[0], y[0]), y0, T.float(), rtol=[1e-5, 1e300], atol=[1e-6, 1e300])
    assert all(bool(torch.isfinite(y).all()) for y in ys)


# ----- refusals, each naming the argument, before any work -----


def _never(t, y):
    raise AssertionError("func was called before the bad argument was refused")


TUPLE_Y0 = (torch.ones(2, dtype=F64), torch.ones(3, 1, dtype=F64))
BAD = [
    ("rtol", TUPLE_Y0, [1e-5], ValueError, r"^rtol has 1 entries but y0 is a tuple of 2 tensors"),
    ("atol", TUPLE_Y0, [1e-5] * 3, ValueError, r"^atol has 3 entries but y0 is a tuple of 2 tensors"),
    ("atol", TUPLE_Y0, [1e-5, -1.0], ValueError, r"^atol\[1\] must be a finite number >= 0, got -1.0"),
    ("rtol", TUPLE_Y0, [1e-5, math.nan], ValueError, r"^rtol\[1\] must be a finite number >= 0, got nan"),
    ("rtol", TUPLE_Y0, [math.inf, 1e-5], ValueError, r"^rtol\[0\] must be a finite number >= 0, got inf"),
    ("atol", TUPLE_Y0, ["1e-5", 1e-5], TypeError, r"^atol\[0\] must be a number >= 0"),
    ("atol", TUPLE_Y0, [torch.ones(2), 1e-5], ValueError, r"^atol\[0\] must be a scalar"),
    ("rtol", TUPLE_Y0, torch.ones(2, 2), ValueError, r"^rtol is a tensor of shape \(2, 2\), but y0 is a"),
    ("rtol", TUPLE_Y0, torch.ones(3), ValueError, r"^rtol has 3 entries but y0 is a tuple of 2 tensors"),
    ("rtol", torch.ones(3, 2, dtype=F64), [1e-5, 1e-5], TypeError, r"^rtol is a list, but y0 is a tensor"),
    ("atol", torch.ones(3, 2, dtype=F64), torch.ones(3), ValueError, r"^atol has shape \(3,\), which does"),
    ("atol", torch.ones(3, 2, dtype=F64), torch.ones(1, 3, 2), ValueError, r"^atol has shape \(1, 3, 2\)"),
    ("atol", torch.ones(3, 2, dtype=F64), torch.tensor([1.0, -1.0]), ValueError,
     r"^atol must be finite numbers >= 0, got -1.0 at index \(1,\)"),
    ("rtol", torch.ones(3, 2, dtype=F64), torch.tensor([1.0, math.inf]), ValueError,
     r"^rtol must be finite numbers >= 0, got inf at index \(1,\) \(1e20"),
    ("rtol", torch.ones(3, 2, dtype=F64), torch.tensor([True, False]), TypeError, r"^rtol must be a real"),
    ("atol", torch.ones(3, 2, dtype=F64), torch.full((2,), 1e-5, requires_grad=True), ValueError,
     r"^atol requires grad: tolerances are not differentiable; pass atol.detach\(\)"),
    ("atol", TUPLE_Y0, [torch.tensor(1e-5, requires_grad=True), 1e-5], ValueError, r"^atol\[0\] requires"),
]  # fmt: skip


@pytest.mark.parametrize("solve", ["odeint", "odeint_adjoint", "odeint_checkpoint", "odeint_dense"])
@pytest.mark.parametrize(("name", "y0", "value", "error", "match"), BAD)
def test_bad_per_component_tolerance_is_refused_naming_it(solve, name, y0, value, error, match):
    with pytest.raises(error, match=match):
        if solve == "odeint":
            odeint(_never, y0, T, **{name: value})
        elif solve == "odeint_dense":
            odeint_dense(_never, y0, T[0], T[-1], **{name: value})
        else:
            fn = odeint_adjoint if solve == "odeint_adjoint" else odeint_checkpoint
            fn(_never, y0, T, adjoint_params=(), **{name: value})


@pytest.mark.parametrize(("name", "y0", "value", "error", "match"), BAD[:3] + BAD[9:11])
def test_bad_adjoint_tolerance_is_refused_naming_it(name, y0, value, error, match):
    with pytest.raises(error, match=match.replace("^", "^adjoint_")):
        odeint_adjoint(_never, y0, T, adjoint_params=(), **{f"adjoint_{name}": value})


def test_both_zero_at_one_member_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"^rtol and atol are both 0 for y0\[1\]: .*every step fail"):
        odeint(_never, TUPLE_Y0, T, rtol=[1e-5, 0.0], atol=[0.0, 0.0])
    with pytest.raises(ValueError, match=r"^rtol and atol are both 0 for y0 at index \(0, 1\)"):
        rtol = torch.tensor([1e-5, 0.0], dtype=F64)
        odeint(_never, torch.ones(3, 2, dtype=F64), T, rtol=rtol, atol=torch.tensor([[0.0], [1e-3], [0.0]]))
    with pytest.raises(
        ValueError, match=r"^adjoint_rtol and adjoint_atol are both 0 for y0\[0\] \(the state"
    ):
        odeint_adjoint(
            _never, TUPLE_Y0, T, adjoint_rtol=[0.0, 1e-3], adjoint_atol=[0.0, 1.0], adjoint_params=()
        )
    # the parameter integrals take the smallest rtol and the smallest atol: here both 0
    p = torch.ones(1, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match=r"^rtol and atol are both 0 for the parameter integrals"):
        odeint_adjoint(_never, TUPLE_Y0, T, rtol=[0.0, 1e-3], atol=[1e-6, 0.0], adjoint_params=(p,))
    # fixed-grid methods ignore them
    ys = odeint(lambda t, y: (-y[0], y[1]), TUPLE_Y0, T, rtol=[0.0, 0.0], atol=[0.0, 1.0], method="rk4")
    assert ys[0].shape == (3, 2)


def test_rtol_floor_applies_per_entry_with_one_warning():
    floor = rtol_floor(F64)
    y0 = state()
    with pytest.warns(
        ToleranceWarning, match=r"rtol has entries below what torch.float64 can deliver"
    ) as rec:
        ys = odeint(Field(), y0, T, rtol=[1e-6, 1e-18, 1e-20], atol=1e-9)
    assert len(rec) == 1 and rec[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = odeint(Field(), y0, T, rtol=[1e-6, floor, floor], atol=1e-9)
        odeint(Field(), y0, T, rtol=[1e-6, 0.0, 1e-3], atol=1e-9)  # rtol 0 is pure absolute control
    torch.testing.assert_close(ys, ref, rtol=0, atol=0)


# ----- the adjoint -----


def test_backward_tolerances_per_element_for_y_and_a_smallest_for_the_integrals():
    y0 = state(nreg=1)
    layout, solver = check_y0(y0), make_solver("dopri5", None)
    rtol, atol = backward_tolerances(solver, layout, [1e-5, 1e-6, 1e20], 1e-8, None, None, [4, 2])
    per_y = torch.tensor([1e-5] * 6 + [1e-6] * 3 + [1e20] * 3, dtype=F64)
    torch.testing.assert_close(rtol, torch.cat([per_y, per_y, torch.full((6,), 1e-6, dtype=F64)]))
    assert atol == 1e-8
    rtol, atol = backward_tolerances(solver, layout, 1e-5, 1e-6, 1e-4, [1e-3, 1e-4, 1e20], [4])
    assert rtol == 1e-4 and atol.shape == (2 * 12 + 4,) and float(atol[-4:].max()) == 1e-4


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5"])
@pytest.mark.parametrize("t_grad", [False, True])
def test_adjoint_gradients_match_direct_backprop_with_per_member_tolerances(method, t_grad):
    f = Field()
    y0 = tuple(x.clone().requires_grad_(True) for x in state(nreg=2))
    t = T.clone().requires_grad_(t_grad)
    tols = {"rtol": [1e-9, 1e-9, 1e20, 1e20], "atol": [1e-11, 1e-11, 1e20, 1e20]}

    def loss(ys):
        z, logp, r1, r2 = (y[-1] for y in ys)
        return z.square().sum() + logp.sum() + 0.1 * r1.sum() + 0.01 * r2.sum() + ys[0][1].sum()

    inputs = (*y0, *f.parameters(), *((t,) if t_grad else ()))
    direct = torch.autograd.grad(loss(odeint(f, y0, t, method=method, **tols)), inputs)
    adjoint = torch.autograd.grad(loss(odeint_adjoint(f, y0, t, method=method, **tols)), inputs)
    for d, a in zip(direct, adjoint, strict=True):
        torch.testing.assert_close(a, d, rtol=1e-5, atol=1e-7)


def test_ffjord_call_pattern_runs_and_matches_torchdiffeq_forward():
    """FFJORD's lib/layers/cnf.py: odeint_adjoint on (z, logp, reg_1, reg_2) with atol/rtol
    [tol, tol] + [1e20] * nreg (reg shapes (1,), not 0-dim), then backward."""

    class CNFFunc(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))

        def forward(self, t, states):
            z = states[0]
            with torch.enable_grad():
                z = z if z.requires_grad else z.requires_grad_(True)
                dz = self.net(torch.cat([z, t.expand(z.shape[0], 1)], 1))
                div = sum(
                    torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i] for i in range(2)
                )
            kinetic = dz.square().sum(1).mean().reshape(1)
            return dz, -div.reshape(-1, 1), kinetic, div.square().mean().reshape(1)

    func = CNFFunc()
    z = torch.randn(8, 2, generator=torch.Generator().manual_seed(3))
    states = (z, torch.zeros(8, 1), torch.zeros(1), torch.zeros(1))
    t = torch.tensor([0.0, 0.5])
    tol, nreg = 1e-5, 2
    kw = dict(atol=[tol, tol] + [1e20] * nreg, rtol=[tol, tol] + [1e20] * nreg, method="dopri5")
    z1, logp1, reg1, reg2 = (s[-1] for s in odeint_adjoint(func, states, t, **kw))
    loss = (z1.square().sum(1, keepdim=True) / 2 - logp1).mean() + 0.01 * reg1.sum() + 0.01 * reg2.sum()
    loss.backward()
    grads = [p.grad.clone() for p in func.parameters()]
    assert all(bool(torch.isfinite(g).all()) and bool(g.abs().sum() > 0) for g in grads)
    with torch.no_grad():
        theirs = torchdiffeq.odeint(func, states, t, **kw)
    close_within_tolerance((z1, logp1), (theirs[0][-1], theirs[1][-1]), [tol] * 2, [tol] * 2)
    # gradients: direct backprop through neuralode's solver, at the same tolerances
    func.zero_grad()
    z1, logp1, reg1, reg2 = (s[-1] for s in odeint(func, states, t, **kw))
    ((z1.square().sum(1, keepdim=True) / 2 - logp1).mean() + 0.01 * reg1.sum() + 0.01 * reg2.sum()).backward()
    for g, p in zip(grads, func.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-2, atol=1e-4)


# ----- every engine -----


@pytest.mark.parametrize("method", ["implicit_euler", "radauIIA5", "trapezoid", "implicit_adams"])
def test_implicit_and_adams_methods_take_per_member_tolerances(method):
    """Newton (implicit RK) and the Adams corrector stop on the per-element scale: a tight z member
    converges as far as a tight scalar solve of it, the loose member needs no more than that."""
    y0, opts = state(nreg=1), {"step_size": 0.05}
    tight = odeint(Field(), y0, T, method=method, rtol=1e-12, atol=1e-12, options=opts)
    counts = SolveStats(), SolveStats()
    mixed = odeint(Field(), y0, T, method=method, rtol=[1e-12, 1e-12, 1e20], atol=[1e-12, 1e-12, 1e20],
                   options=opts, stats=counts[0])  # fmt: skip
    odeint(Field(), y0, T, method=method, rtol=1e-12, atol=1e-12, options=opts, stats=counts[1])
    torch.testing.assert_close(mixed[:2], tight[:2], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(mixed[2], tight[2], rtol=1e-3, atol=1e-3)
    assert counts[0].forward.nfe <= counts[1].forward.nfe
    zero_atol = odeint(Field(), y0, T, method=method, rtol=[1e-12, 1e-6, 1e-6], atol=[0.0, 1e-9, 0.0],
                       options=opts)  # fmt: skip
    torch.testing.assert_close(zero_atol[0], tight[0], rtol=1e-9, atol=1e-10)


def test_implicit_adams_with_both_zero_at_every_element_makes_all_corrections():
    y0, opts = state(nreg=1), {"step_size": 0.1, "max_iters": 3}
    stats = SolveStats(), SolveStats()
    zero = [0.0, 0.0, 0.0]
    odeint(Field(), y0, T, method="implicit_adams", rtol=zero, atol=zero, options=opts, stats=stats[0])
    odeint(Field(), y0, T, method="implicit_adams", rtol=0, atol=0, options=opts, stats=stats[1])
    assert stats[0].forward.nfe == stats[1].forward.nfe


@pytest.mark.parametrize("solver", ["RK45", "RK23", "DOP853", "LSODA", "Radau", "BDF"])
def test_scipy_solver_takes_per_member_tolerances_as_arrays(solver):
    """RK45/RK23/DOP853/LSODA get the per-element arrays as they are (equal to calling solve_ivp with
    them); Radau and BDF take only a scalar rtol: the smallest entry (atol stays per element)."""
    y0 = (torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.5], dtype=F64))
    rtol, atol = [1e-6, 1e-3], [1e-9, 1e20]

    def f(t, y):
        return -y[0], y[0][:1] * 0.5

    ys = odeint(f, y0, T, method="scipy_solver", rtol=rtol, atol=atol, options={"solver": solver})
    r = np.array([1e-6, 1e-6, 1e-3])
    ref = scipy.integrate.solve_ivp(
        lambda t, y: np.array([-y[0], -y[1], 0.5 * y[0]]), (0.0, 1.0), [1.0, 2.0, 0.5], method=solver,
        rtol=r.min() if solver in ("Radau", "BDF") else r, atol=np.array([1e-9, 1e-9, 1e20]), t_eval=[1.0],
    )  # fmt: skip
    ours = torch.cat([ys[0][-1], ys[1][-1]]).numpy()
    np.testing.assert_allclose(ours, ref.y[:, -1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours[:2], [math.exp(-1), 2 * math.exp(-1)], rtol=1e-4)


def test_dense_checkpoint_and_events_take_per_member_tolerances():
    y0 = state(nreg=1)
    kw = {"rtol": [1e-8, 1e-8, 1e20], "atol": [1e-10, 1e-10, 1e20]}
    ys = odeint(Field(), y0, T, **kw)
    dense = odeint_dense(Field(), y0, T[0], T[-1], **kw)(T)
    for a, b in zip(dense, ys, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    f = Field()
    x0 = tuple(x.clone().requires_grad_(True) for x in y0)
    direct = torch.autograd.grad(sum(y[-1].sum() for y in odeint(f, x0, T, **kw)), (*x0, *f.parameters()))
    ckpt = torch.autograd.grad(
        sum(y[-1].sum() for y in odeint_checkpoint(f, x0, T, **kw)), (*x0, *f.parameters())
    )
    for a, b in zip(ckpt, direct, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # an event: z decays like exp(-t); find where the first entry halves, per-member tolerances
    x = (torch.ones(1, dtype=F64), torch.zeros(1, dtype=F64))
    event_t, _ = odeint(lambda t, y: (-y[0], y[0]), x, T[:2], event_fn=lambda t, y: y[0] - 0.5,
                        rtol=[1e-10, 1e20], atol=[1e-12, 1e20])  # fmt: skip
    assert abs(float(event_t) - math.log(2)) < 1e-8
