"""Generated event problems for the torchdiffeq parity tests (tests/test_parity_torchdiffeq.py).

An event problem is a Case (tests/parity_cases.py) started at ``case.times[0]`` with the event
``mean(y) = threshold``, the threshold being the reference solution's mean at ``t0 + direction / 2``:
the exact event time is ``t0 +- 1/2`` by construction (the mean is checked monotone on the way). The
gradient reference is torchdiffeq's ``odeint_event`` through its adjoint with dopri5 at 1e-11 in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchdiffeq
from torch import Tensor

from tests.parity_cases import Case

EVENT_SPAN = 0.5  # the exact event time is t0 + direction * EVENT_SPAN


def state_mean(y) -> Tensor:
    """The mean over a state's members of each member's mean, in float64 (the event's quantity)."""
    ys = y if isinstance(y, tuple) else (y,)
    return sum(v.mean().double() for v in ys) / len(ys)


@dataclass
class EventProblem:
    """A case, a direction (+1 forwards, -1 backwards) and the event threshold with its exact time."""

    case: Case
    direction: int
    threshold: float = 0.0
    monotone: bool = True
    rate: float = 1.0  # |d mean / dt| at the event: turns a state error into a time error

    def __post_init__(self) -> None:
        func = self.case.make_field()
        y0, _ = self.case.inputs(dtype=torch.float64)
        t0 = self.case.times[0]
        grid = torch.linspace(t0, t0 + self.direction * EVENT_SPAN, 17, dtype=torch.float64)
        with torch.no_grad():
            # dopri8 stepping on the grid (step_t): the outputs are step ends, not interpolated
            sol = torchdiffeq.odeint(
                func, y0, grid, rtol=1e-12, atol=1e-12, method="dopri8", options={"step_t": grid}
            )
            sols = sol if isinstance(sol, tuple) else (sol,)
            means = torch.stack([state_mean(tuple(s[i] for s in sols)) for i in range(len(grid))])
            steps = means[1:] - means[:-1]
            self.monotone = bool((steps > 0).all() or (steps < 0).all())
            self.threshold = float(means[-1])
            end = tuple(s[-1] for s in sols)
            f_end = func(grid[-1], end if self.case.is_tuple else end[0])
            self.rate = abs(float(state_mean(f_end)))

    @property
    def t0(self) -> float:
        return self.case.times[0]

    @property
    def exact_event_t(self) -> float:
        return self.t0 + self.direction * EVENT_SPAN

    def event_fn(self, t: Tensor, y) -> Tensor:
        return state_mean(y) - self.threshold

    def loss(self, event_t: Tensor, sol) -> Tensor:
        """A fixed linear functional of the event time and the state at the event (float64)."""
        sols = sol if isinstance(sol, tuple) else (sol,)
        out = 1.3 * event_t.double()
        for w, s in zip(self.case.weights, sols, strict=True):
            out = out + (s[-1].double() * w[0]).sum()
        return out


def solve_event(lib, problem: EventProblem, func, entry: str, interface: str, grad: bool = True, **kwargs):
    """Run an event solve: ``entry`` "odeint" (t = [t0, t0 +- 1]) or "odeint_event" (reverse_time),
    through ``lib.<interface>``. Returns (event_t, state at the event as a float64 tuple, grads or None,
    event_t's requires_grad); grads: "y0" (tuple), "t0", "params" (tuple), of ``problem.loss``."""
    case = problem.case
    y0, _ = case.inputs(requires_grad=grad, dtype=kwargs.pop("dtype", None))
    t0 = torch.tensor(problem.t0, dtype=case.time_dtype if "t_dtype" not in kwargs else kwargs.pop("t_dtype"))
    t0.requires_grad_(grad)
    run = getattr(lib, interface)
    if entry == "odeint":
        t = torch.stack([t0, t0.detach() + problem.direction])
        event_t, sol = run(func, y0, t, event_fn=problem.event_fn, **kwargs)
    else:
        event_t, sol = lib.odeint_event(
            func,
            y0,
            t0,
            event_fn=problem.event_fn,
            reverse_time=problem.direction < 0,
            odeint_interface=run,
            **kwargs,
        )
    sols = sol if isinstance(sol, tuple) else (sol,)
    state = tuple(s[-1].detach().double() for s in sols)
    linked = event_t.requires_grad
    grads = None
    if grad:
        leaves = [*(y0 if isinstance(y0, tuple) else (y0,)), t0, *func.parameters()]
        g = torch.autograd.grad(problem.loss(event_t, sol), leaves, allow_unused=True)
        g = [torch.zeros_like(x) if gi is None else gi for gi, x in zip(g, leaves, strict=True)]
        n = len(case.shapes)
        grads = {"y0": tuple(g[:n]), "t0": g[n], "params": tuple(g[n + 1 :])}
    return float(event_t.detach()), state, grads, linked


def event_reference(problem: EventProblem):
    """The event solved by torchdiffeq's odeint_event through its adjoint, dopri5 at 1e-11, float64."""
    func = problem.case.make_field()
    return solve_event(
        torchdiffeq,
        problem,
        func,
        "odeint_event",
        "odeint_adjoint",
        rtol=1e-11,
        atol=1e-11,
        method="dopri5",
        dtype=torch.float64,
        t_dtype=torch.float64,
    )
