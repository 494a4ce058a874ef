"""Fixed-grid methods without step_size/grid_constructor step on the points of t, as in torchdiffeq."""

from __future__ import annotations

import torch
import torchdiffeq
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from torch import nn

from neuralode import SolveStats, odeint, odeint_adjoint, odeint_checkpoint

from .conftest import ALL_FIXED_METHODS

F64 = torch.float64
SETTINGS = settings(
    max_examples=40,
    phases=[Phase.explicit, Phase.generate],
)


class Field(nn.Module):
    """A nonlinear, time-dependent field that records where each step starts (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([[0.3, -1.1], [0.8, 0.2]], dtype=F64))
        self.starts: list[float] = []
        self.backward_starts: list[float] = []

    def forward(self, t, y):
        return torch.tanh(y @ self.a) + torch.sin(3 * t)

    def callback_step(self, t0, y0, dt):
        self.starts.append(float(t0))

    def callback_step_adjoint(self, t0, y0, dt):
        self.backward_starts.append(float(t0))


times = st.lists(st.floats(-2.0, 2.0), min_size=2, max_size=6, unique=True).filter(
    lambda v: min(abs(a - b) for a in v for b in v if a != b) > 1e-3
)


@SETTINGS
@given(
    method=st.sampled_from(["euler", "midpoint", "rk4", "heun3"]),
    values=times,
    decreasing=st.booleans(),
    perturb=st.booleans(),
    interp=st.sampled_from(["linear", "cubic"]),
)
def test_solution_equals_torchdiffeq_and_the_grid_is_t(method, values, decreasing, perturb, interp):
    t = torch.tensor(sorted(values, reverse=decreasing), dtype=F64)
    y0 = torch.tensor([0.4, -0.3], dtype=F64)
    options = {"perturb": perturb, "interp": interp}
    field = Field()
    stats = SolveStats()
    ours = odeint(field, y0, t, method=method, options=options, stats=stats)
    theirs = torchdiffeq.odeint(Field(), y0, t, method=method, options=options)
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-13)
    assert field.starts == t[:-1].tolist() and stats.forward.n_steps == len(t) - 1


@SETTINGS
@given(method=st.sampled_from(ALL_FIXED_METHODS), values=times)
def test_every_fixed_grid_method_defaults_to_the_grid_t(method, values):
    t = torch.tensor(sorted(values), dtype=F64)
    y0 = torch.tensor([0.4, -0.3], dtype=F64)
    on_t = odeint(Field(), y0, t, method=method, options={"grid_constructor": lambda f, y, t: t})
    torch.testing.assert_close(odeint(Field(), y0, t, method=method), on_t, rtol=0, atol=0)


def test_adjoint_backward_steps_on_the_reversed_t_and_matches_torchdiffeq():
    t = torch.tensor([0.0, 0.3, 0.35, 1.0, 1.7], dtype=F64)
    grads = []
    for solve in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        field = Field()
        y0 = torch.tensor([0.4, -0.3], dtype=F64, requires_grad=True)
        ys = solve(field, y0, t, method="rk4")
        (ys**2).sum().backward()
        grads.append((ys.detach(), y0.grad, field.a.grad))
        if solve is odeint_adjoint:
            assert field.backward_starts == t.flip(0)[:-1].tolist()
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_checkpoint_on_t_gives_odeint_values_and_gradients():
    t = torch.tensor([0.0, 0.5, 0.6, 1.4], dtype=F64)
    results = []
    for solve in (odeint, odeint_checkpoint):
        field = Field()
        y0 = torch.tensor([0.4, -0.3], dtype=F64, requires_grad=True)
        ys = solve(field, y0, t, method="midpoint")
        (ys**2).sum().backward()
        results.append((ys.detach(), y0.grad, field.a.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
