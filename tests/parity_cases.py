"""Generated problems for the torchdiffeq parity tests (tests/test_parity_torchdiffeq.py).

A case is a field (an ``nn.Module`` with parameters, linear or nonlinear), a state structure (0-dim,
1-dim, batched, or a tuple of mixed shapes and dtypes), output times and a method; both libraries get
the very same tensors. ``reference`` solves the case to 1e-12 in float64 for the accuracy checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torchdiffeq
from hypothesis import strategies as st
from torch import Tensor, nn
from torchdiffeq._impl.odeint import SOLVERS as TORCHDIFFEQ_SOLVERS

import neuralode

# Methods both libraries have (fixed_adams is an alias of implicit_adams in both).
COMMON_METHODS = sorted(set(TORCHDIFFEQ_SOLVERS) & set(neuralode.SOLVERS))
ADAPTIVE = ("dopri5", "bosh3", "fehlberg2", "adaptive_heun", "dopri8")
FIXED_RK = ("euler", "midpoint", "heun2", "heun3", "rk4")
ADAMS = ("explicit_adams", "implicit_adams", "fixed_adams")

# Shapes of the state: a tensor shape, or a tuple of them (a tuple state).
STRUCTURES: dict[str, tuple[tuple[int, ...], ...] | tuple[int, ...]] = {
    "scalar": (),
    "vector": (3,),
    "batched": (4, 2),
    "tuple": ((), (3,), (2, 2)),
    "tuple_nonscalar": ((3,), (2, 2)),
}


class CountedField(nn.Module):
    """Base of the fields: counts its calls (the NFE, measured the same way for both libraries)."""

    def __init__(self) -> None:
        super().__init__()
        self.nfe = 0

    def forward(self, t: Tensor, y):
        self.nfe += 1
        ys = y if isinstance(y, tuple) else (y,)
        mean = sum(v.mean().double() for v in ys) / len(ys)  # couples the members of a tuple state
        out = tuple(self.member(i, t, v, mean) for i, v in enumerate(ys))
        return out if isinstance(y, tuple) else out[0]


class LinearField(CountedField):
    """dy_i/dt = -k_i y_i + c * mean(y): linear, every entry coupled through the mean."""

    def __init__(self, members: int) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.linspace(0.6, 1.4, members, dtype=torch.float64))
        self.c = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def member(self, i: int, t: Tensor, y: Tensor, mean: Tensor) -> Tensor:
        return -self.k[i].to(y.dtype) * y + (self.c * mean).to(y.dtype)


class NonlinearField(CountedField):
    """dy_i/dt = a_i sin(y_i) - b y_i + w cos(t) tanh(mean(y)): nonlinear and time-dependent."""

    def __init__(self, members: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.linspace(0.8, 1.2, members, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
        self.w = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def member(self, i: int, t: Tensor, y: Tensor, mean: Tensor) -> Tensor:
        drive = (self.w * torch.cos(t.double()) * torch.tanh(mean)).to(y.dtype)
        return self.a[i].to(y.dtype) * torch.sin(y) - self.b.to(y.dtype) * y + drive


FIELDS = {"linear": LinearField, "nonlinear": NonlinearField}


@dataclass
class Case:
    """One generated problem: the same tensors go to both libraries."""

    field_name: str
    structure: str
    dtypes: tuple[torch.dtype, ...]  # one per member (one entry for a plain tensor)
    times: tuple[float, ...]
    time_dtype: torch.dtype
    seed: int
    y0: tuple[Tensor, ...] = field(init=False)

    def __post_init__(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        shapes = self.shapes
        self.y0 = tuple(
            (0.5 + torch.rand(s, generator=gen, dtype=torch.float64)).to(d)
            for s, d in zip(shapes, self.dtypes, strict=True)
        )
        self.weights = tuple(
            torch.randn((len(self.times), *s), generator=gen, dtype=torch.float64) for s in shapes
        )

    @property
    def is_tuple(self) -> bool:
        return self.structure.startswith("tuple")

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        s = STRUCTURES[self.structure]
        return s if self.is_tuple else (s,)  # type: ignore[return-value]

    @property
    def state_dtype(self) -> torch.dtype:
        """The dtype the solve runs in (the promoted dtype of the members)."""
        out = self.dtypes[0]
        for d in self.dtypes[1:]:
            out = torch.promote_types(out, d)
        return out

    @property
    def eps(self) -> float:
        """Machine epsilon of the least precise member."""
        return max(torch.finfo(d).eps for d in self.dtypes)

    def make_field(self) -> CountedField:
        return FIELDS[self.field_name](len(self.shapes))

    def inputs(self, requires_grad: bool = False, dtype: torch.dtype | None = None):
        """Fresh leaf copies (y0 in the user's structure, t), optionally differentiable, optionally cast."""
        ys = tuple(
            (y if dtype is None else y.to(dtype)).detach().clone().requires_grad_(requires_grad)
            for y in self.y0
        )
        t = torch.tensor(self.times, dtype=self.time_dtype if dtype is None else dtype)
        t.requires_grad_(requires_grad)
        return (ys if self.is_tuple else ys[0]), t

    def loss(self, sol) -> Tensor:
        """A fixed random linear functional of the whole solution, in float64."""
        sols = sol if isinstance(sol, tuple) else (sol,)
        return sum((s.double() * w).sum() for s, w in zip(sols, self.weights, strict=True))


def solve(lib, case: Case, func: nn.Module, grad: bool, interface: str = "odeint", **kwargs):
    """Run ``lib.<interface>`` on the case; returns (solution as float64 tuple, grads or None, nfe, dtypes).

    grads is a dict with the gradient of ``case.loss`` for "y0" (tuple), "t" and "params" (tuple).
    """
    y0, t = case.inputs(requires_grad=grad)
    func.nfe = 0
    sol = getattr(lib, interface)(func, y0, t, **kwargs)
    nfe = func.nfe
    sols = sol if isinstance(sol, tuple) else (sol,)
    dtypes = tuple(s.dtype for s in sols)
    grads = None
    if grad:
        leaves = [*(y0 if isinstance(y0, tuple) else (y0,)), t, *func.parameters()]
        g = torch.autograd.grad(case.loss(sol), leaves, allow_unused=True)
        g = [torch.zeros_like(x) if gi is None else gi for gi, x in zip(g, leaves, strict=True)]
        n = len(case.shapes)
        grads = {"y0": tuple(g[:n]), "t": g[n], "params": tuple(g[n + 1 :])}
    return tuple(s.detach().double() for s in sols), grads, nfe, dtypes


def reference(case: Case, grad: bool = True):
    """The case solved in float64 to rtol = atol = 1e-12 (torchdiffeq's dopri8), with gradients.

    Time gradients are the exact flow sensitivities: dL/dt_i = g_i . f(t_i, y_i) for i >= 1 and
    dL/dt_0 = -(dL/dy0 - g_0) . f(t_0, y_0), from the accurate solution and its y0-gradient.
    """
    func = case.make_field()
    y0, t = case.inputs(requires_grad=grad, dtype=torch.float64)
    sol = torchdiffeq.odeint(func, y0, t, rtol=1e-12, atol=1e-12, method="dopri8")
    sols = sol if isinstance(sol, tuple) else (sol,)
    if not grad:
        return tuple(s.detach() for s in sols), None
    leaves = [*(y0 if isinstance(y0, tuple) else (y0,)), *func.parameters()]
    g = torch.autograd.grad(case.loss(sol), leaves, allow_unused=True)
    n = len(case.shapes)
    gy0, gp = tuple(g[:n]), tuple(g[n:])
    with torch.no_grad():
        gt = torch.zeros(len(case.times), dtype=torch.float64)
        for i in range(len(case.times)):
            yi = tuple(s[i] for s in sols)
            fi = func(t[i], yi if case.is_tuple else yi[0])
            fi = fi if isinstance(fi, tuple) else (fi,)
            if i == 0:
                # y(t_0) = y0 does not move with t_0: only the later outputs' share of dL/dy0 counts
                later = tuple(a - w[0] for a, w in zip(gy0, case.weights, strict=True))
                gt[0] = -sum((a * b).sum() for a, b in zip(later, fi, strict=True))
            else:
                gt[i] = sum((w[i] * b).sum() for w, b in zip(case.weights, fi, strict=True))
    return tuple(s.detach() for s in sols), {"y0": gy0, "t": gt, "params": gp}


def max_abs(xs, ys) -> float:
    """Largest entry of |x - y| over tuples of tensors (float64)."""
    return max(
        float((x.double() - y.double()).abs().max()) if x.numel() else 0.0
        for x, y in zip(xs, ys, strict=True)
    )


def scale_of(xs) -> float:
    return max(float(x.double().abs().max()) if x.numel() else 0.0 for x in xs)


# ----------------------------------------------------------------------------- hypothesis strategies


def dyadic_times(min_len: int = 1, max_len: int = 4):
    """Monotone output times on multiples of 1/8 (exact in binary, so both libraries' grids agree)."""

    @st.composite
    def build(draw):
        n = draw(st.integers(min_len, max_len))
        start = draw(st.integers(-4, 4)) / 8
        gaps = draw(st.lists(st.integers(1, 4), min_size=n - 1, max_size=n - 1))
        sign = draw(st.sampled_from([1.0, -1.0]))
        times, now = [start], start
        for g in gaps:
            now += sign * g / 8
            times.append(now)
        return tuple(times)

    return build()


@st.composite
def cases(draw, min_len: int = 1, max_len: int = 4, structures=tuple(STRUCTURES), allow_float32: bool = True):
    """A Case: field, structure, member dtypes (float32/float64, mixed in tuples), times, time dtype."""
    structure = draw(st.sampled_from(structures))
    members = len(STRUCTURES[structure]) if structure.startswith("tuple") else 1
    dtype_choices = [torch.float64, torch.float32] if allow_float32 else [torch.float64]
    dtypes = tuple(draw(st.sampled_from(dtype_choices)) for _ in range(members))
    state_dtype = torch.float64 if torch.float64 in dtypes else torch.float32
    # float32 states may come with float64 times (torchdiffeq's mixed precision); float64 states with float64
    time_dtype = (
        draw(st.sampled_from([torch.float32, torch.float64]))
        if state_dtype == torch.float32
        else torch.float64
    )
    return Case(
        field_name=draw(st.sampled_from(sorted(FIELDS))),
        structure=structure,
        dtypes=dtypes,
        times=draw(dyadic_times(min_len, max_len)),
        time_dtype=time_dtype,
        seed=draw(st.integers(0, 2**16)),
    )
