"""``Adjoint``: the adjoint method (Algorithm 1 of Chen et al., 2018).

The forward pass solves without recording a graph. The backward pass integrates the augmented
state [z, a, dL/dtheta] from t_N back to t_0, where a = dL/dz obeys da/dt = -a^T df/dz and dL/dtheta
accumulates -a^T df/dtheta; at every output time the loss gradient is added to a as a jump. Memory
does not grow with the number of solver steps. (dL/dt comes from the solve core, as for every strategy.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._setup.callbacks import StepCallbacks, make_callbacks
from .._setup.captured import warn_uncaptured
from .._setup.flat_func import FlatFunc
from .._setup.layout import StateLayout, time_tensor
from .._setup.norms import build_norm
from .._setup.precision import solver_precision
from .._setup.prepare import Setup
from .._setup.tolerances import Tolerance, backward_tolerances
from .._setup.validation import backward_options, check_adjoint_params, frozen_options, make_solver
from ..errors import SolverError
from ..solvers import FlatProblem, Solver
from ..solvers.controllers import GridController
from ..solvers.fixed_grid import constructed_grid
from ..solvers.observer import StepObserver
from ..solvers.options import resolve_max_num_steps
from ..stats import PassCounts, SolveStats


@dataclass(frozen=True)
class Adjoint:
    """The adjoint method: the backward solve's own settings, each defaulting to the forward solve's
    (``options`` without "norm"); ``options={"norm": "seminorm"}`` leaves the parameter integrals out
    of its error control (fewer backward steps, same gradients to tolerance)."""

    rtol: Any = None
    atol: Any = None
    method: str | None = None
    options: Mapping[str, Any] | None = field(default=None)
    name = "adjoint"
    caller = "odeint_adjoint"

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", frozen_options(self.options, "adjoint_options"))

    def params(self, func: Callable, params: Sequence[Tensor] | None) -> tuple[Tensor, ...]:
        """``params`` (default ``func.parameters()``), those that require grad; warns for tensors that
        func uses but the list leaves out (their gradient would silently be missing)."""
        found = check_adjoint_params(func, params, self.caller)
        warn_uncaptured(func, found, self.caller)
        return found

    def plan(self, setup: Setup, params: tuple[Tensor, ...], stats: SolveStats) -> _AdjointPlan:
        """Build and check the backward solve before the forward one runs."""
        options = backward_options(self.options, setup.options)
        solver = make_solver(self.method or setup.method, options, arg="adjoint_method")
        rtol, atol = backward_tolerances(
            solver, setup.layout, setup.rtol, setup.atol, self.rtol, self.atol, [p.numel() for p in params]
        )
        callbacks = make_callbacks(
            setup.user_func, _augmented_unflatten(setup.layout, params), solver.supported_callbacks,
            self.method or setup.method, setup.layout.dtype, suffix="_adjoint",
        )  # fmt: skip
        return _AdjointPlan(setup, solver, rtol, atol, callbacks, stats)


@dataclass
class _AdjointPlan:
    setup: Setup
    solver: Solver  # the backward solve's
    rtol: Tolerance  # per element of [y, a, dL/dparams] when a tensor (tolerances.backward_tolerances)
    atol: Tolerance
    callbacks: StepCallbacks | None
    stats: SolveStats
    precomputed: Tensor | None = None  # the forward solution, when an event search already found it
    forward_step: float | None = None  # the forward's last accepted step: the backward's first
    times: list[float] | None = None  # the forward output times (an event search's: [t0, event time])

    def solve(self, y0: Tensor, params: tuple[Tensor, ...]) -> Tensor:
        return _OdeintAdjoint.apply(self, y0, *params)

    def forward(self, y0: Tensor) -> Tensor:
        """The forward solve (no graph), keeping its last proposed step size for the backward solve."""
        setup = self.setup
        make = getattr(setup.solver, "controller", None)
        if make is None or setup.controller is not None:
            return setup.integrate(y0)
        controller = make(carry=True)
        ys = setup.integrate(y0, controller=controller)
        self.forward_step = controller.last_accepted or controller.carried
        return ys

    def until_event(self, y0: Tensor, params: tuple[Tensor, ...]) -> tuple[float, Tensor, int]:
        """Find the event without a graph, then treat [t0, event time] as an ordinary adjoint solve."""
        with torch.no_grad():
            tau, y_tau, k = self.setup.integrate_until_event(y0)
        self.times = [self.setup.problem.times[0], tau]
        self.precomputed = torch.stack([y0.detach(), y_tau])
        return tau, _OdeintAdjoint.apply(self, y0, *params)[-1], k


class _OdeintAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan: _AdjointPlan, y0: Tensor, *params: Tensor) -> Tensor:
        with torch.no_grad():
            ys = plan.precomputed if plan.precomputed is not None else plan.forward(y0)
        ctx.plan = plan
        ctx.save_for_backward(ys, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        ys, *params = ctx.saved_tensors
        plan: _AdjointPlan = ctx.plan
        counts = PassCounts()
        with solver_precision(plan.setup.autocast):
            grad_y0, grad_params = _backward_solve(plan, ys, tuple(params), grad_ys, counts)
        plan.stats.backward.add(counts)
        return (None, grad_y0, *grad_params)


def _backward_solve(
    plan: _AdjointPlan, ys: Tensor, params: tuple[Tensor, ...], grad_ys: Tensor, counts: PassCounts
) -> tuple[Tensor, list[Tensor]]:
    """Algorithm 1, interval by interval from the last output time to the first."""
    setup, solver = plan.setup, plan.solver
    times = plan.times or setup.problem.times
    n, dtype, device = ys.shape[1], ys.dtype, ys.device
    func = FlatFunc(setup.user_func, setup.layout, counts, setup.autocast)
    param_sizes = [p.numel() for p in params]
    n_params = sum(param_sizes)
    segments = (n, n, *param_sizes)
    dynamics = _augmented_dynamics(func, params, n, dtype)
    example = StateLayout((ys[0], ys[0], *(p.detach().to(dtype) for p in params)))
    norm = build_norm(
        getattr(solver.options, "norm", None), segments, example, "adjoint_options", solved=(0, 1)
    )
    controllers = _interval_controllers(plan, ys, times)
    observer = StepObserver(counts, plan.callbacks)
    a = grad_ys[-1].clone()
    a_params = torch.zeros(n_params, dtype=dtype, device=device)
    for i in range(len(times) - 1, 0, -1):
        aug = torch.cat([ys[i], a, a_params])
        problem = FlatProblem(dynamics, aug, [times[i], times[i - 1]], plan.rtol, plan.atol, norm)
        with torch.no_grad():
            try:
                aug = solver.integrate(problem, observer, controllers(i - 1))[-1]
            except SolverError as err:
                raise _backward_error(err, times[i], times[i - 1], grad_ys) from err
        a = aug[n : 2 * n] + grad_ys[i - 1]  # the state itself restarts from the saved forward value
        a_params = aug[2 * n :]
    grad_params = [g.view_as(p).to(p.dtype) for g, p in zip(a_params.split(param_sizes), params, strict=True)]
    return a, grad_params


def _interval_controllers(plan: _AdjointPlan, ys: Tensor, times: list[float]) -> Callable[[int], Any]:
    """The controller of each interval's solve: an adaptive method's one controller for them all (it
    carries the step size from one interval to the next), or a backward grid_constructor's slice."""
    solver = plan.solver
    constructor = getattr(solver.options, "grid_constructor", None)
    if constructor is not None:
        pieces = _backward_grids(plan, constructor, ys, times)
        return lambda i: GridController(pieces[i])
    make = getattr(solver, "controller", None)
    if make is None:
        return lambda i: None
    carry = getattr(solver.options, "carry_step_size", False)
    controller = make(carry=True, clamp_end=True) if carry else make()
    if carry:  # the first interval starts from the forward solve's last step, not a fresh selection
        controller.carried = plan.forward_step
    return lambda i: controller


def _backward_error(err: SolverError, start: float, end: float, grad_ys: Tensor) -> SolverError:
    """The same error class, saying that it happened in the backward pass and what can be changed."""
    cause = ""
    if not bool(torch.isfinite(grad_ys).all()):
        cause = (
            " The gradient flowing into odeint_adjoint (dL/dy at the output times) already contains NaN or "
            "inf: check the loss."
        )
    message = (
        f"in odeint_adjoint's backward pass (the adjoint solve from t={start!r} back to t={end!r}): {err}"
        f"{cause} The backward solve has its own settings: try adjoint_rtol/adjoint_atol, or adjoint_method "
        "(and adjoint_options)."
    )
    return type(err)(message, err.t)


def _backward_grids(
    plan: _AdjointPlan, constructor: Callable, ys: Tensor, times: list[float]
) -> list[list[float]]:
    """For a backward ``grid_constructor``: call it once with the reversed times (and the user's func
    and final state), then cut the grid at the output times: interval i runs from t[i+1] to t[i]."""
    setup = plan.setup
    reversed_t = torch.tensor(times[::-1], dtype=setup.t.dtype, device=setup.t.device)
    max_steps = resolve_max_num_steps(plan.solver.options.max_num_steps, event=False)
    what = "adjoint_options['grid_constructor'] (called with the reversed t)"
    final = setup.layout.unflatten(ys[-1])
    values = constructed_grid(constructor, setup.user_func, final, reversed_t, times[::-1], max_steps, what)
    direction = 1.0 if times[0] > times[-1] else -1.0  # of the backward solve
    pieces = []
    for i in range(len(times) - 1):
        start, end = times[i + 1], times[i]
        inside = [v for v in values if 0 < direction * (v - start) < direction * (end - start)]
        pieces.append([start, *inside, end])
    return pieces


def _augmented_unflatten(layout: StateLayout, params: tuple[Tensor, ...]) -> Callable[[Tensor], tuple]:
    """The backward solve's flat state -> (y, dL/dy, *dL/dparams) for the ``*_adjoint`` callbacks."""
    n = layout.size

    def unflatten(aug: Tensor) -> tuple:
        y, a = layout.unflatten(aug[:n]), layout.unflatten(aug[n : 2 * n])
        rest, out = aug[2 * n :], []
        for p in params:
            out.append(rest[: p.numel()].view_as(p))
            rest = rest[p.numel() :]
        return (y, a, *out)

    return unflatten


def _augmented_dynamics(
    func: FlatFunc, params: tuple[Tensor, ...], n: int, dtype: torch.dtype
) -> Callable[[float, Tensor], Tensor]:
    """d/dt [z, a, a_theta] = [f, -a^T df/dz, -a^T df/dtheta], one VJP."""

    def dynamics(t: float, aug: Tensor, perturb: float = 0.0) -> Tensor:
        y, a = aug[:n], aug[n : 2 * n]
        with torch.enable_grad():
            y_ = y.detach().requires_grad_(True)
            f = func.call_tensor_t(time_tensor(t, dtype, y.device, perturb), y_)
            inputs = (y_, *params)
            if f.requires_grad:
                vjps = torch.autograd.grad(f, inputs, -a, allow_unused=True)
            else:
                vjps = (None,) * len(inputs)
        pieces = [f.detach()]
        for g, x in zip(vjps, inputs, strict=True):
            pieces.append(
                torch.zeros(x.numel(), dtype=dtype, device=y.device) if g is None else g.reshape(-1).to(dtype)
            )
        return torch.cat(pieces)

    return dynamics
