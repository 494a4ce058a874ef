"""``Checkpointed``: exact gradients of the discrete solve with memory O(checkpoints).

The remedy of Section 6 of the paper for the adjoint's reconstruction error: the forward pass solves
without a graph but records its accepted steps (start and end times) and the state at every
``every``-th step. The backward pass goes over these pieces from last to first, re-runs each one
with autograd through the ordinary engine driven by a replaying controller (exactly the recorded
steps: no error control, no step re-selection), and backpropagates through it. The gradients are those
of direct backpropagation ("discretize-then-optimize"); memory is the checkpoints plus one piece's graph.

The implicit adaptive methods (kvaerno3, kvaerno5) replay the same accepted steps with their own step
function, whose Newton iterations start afresh in each piece (a Jacobian at the piece's start, not the
one the forward pass carried there): the replayed states agree with the forward's to Newton's
tolerance, not bit for bit, and so do the gradients with direct backprop's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._setup.captured import warn_uncaptured
from .._setup.flat_func import FlatFunc
from .._setup.precision import solver_precision
from .._setup.prepare import Setup
from .._setup.validation import check_adjoint_params
from ..solvers import AdaptiveRKSolver, FlatProblem
from ..solvers.controllers import GridController, ReplayController
from ..solvers.esdirk_methods import ESDIRKSolver
from ..solvers.observer import StepObserver, StepTrace
from ..stats import PassCounts, SolveStats

SUPPORTED = (
    "the explicit adaptive Runge-Kutta methods (dopri5, tsit5, bosh3, dopri8, fehlberg2, adaptive_heun), "
    "the adaptive implicit ESDIRK methods (kvaerno3, kvaerno5) and explicit fixed-grid Runge-Kutta "
    "(euler, midpoint, heun2, heun3, rk4)"
)


@dataclass(frozen=True)
class Checkpointed:
    """Gradients of direct backprop in memory O(checkpoints): the state is stored every ``every``
    accepted steps and each piece is re-run with autograd in the backward pass."""

    every: int = 1
    name = "checkpoint"
    caller = "odeint_checkpoint"

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(
                f"checkpoint_every must be a positive int (store the state every that many steps), "
                f"got {self.every!r}"
            )

    def params(self, func: Callable, params: Sequence[Tensor] | None) -> tuple[Tensor, ...]:
        found = check_adjoint_params(func, params, self.caller)
        warn_uncaptured(func, found, self.caller)
        return found

    def plan(self, setup: Setup, params: tuple[Tensor, ...], stats: SolveStats) -> _CheckpointPlan:
        """Refuse what cannot be replayed bit for bit, before any work."""
        if setup.event is not None:
            raise ValueError(
                "event_fn is not supported by odeint_checkpoint; use odeint or odeint_adjoint for event "
                "handling"
            )
        # ESDIRK: the same steps, Newton re-run in each piece (to its tolerance, see the module docstring)
        if not (setup.solver.replayable or isinstance(setup.solver, ESDIRKSolver)):
            raise ValueError(
                f"method={setup.method!r} is not supported by odeint_checkpoint; supported: {SUPPORTED}"
            )
        if isinstance(setup.solver, AdaptiveRKSolver) and setup.solver.options.jump_t is not None:
            raise ValueError(
                "options['jump_t'] is not supported by odeint_checkpoint (steps ending on a jump are "
                "evaluated from inside and cannot be replayed yet); use odeint or odeint_adjoint"
            )
        return _CheckpointPlan(setup, self.every, stats)


@dataclass
class _CheckpointPlan:
    setup: Setup
    every: int
    stats: SolveStats
    trace: StepTrace | None = None

    def solve(self, y0: Tensor, params: tuple[Tensor, ...]) -> Tensor:
        if torch.is_grad_enabled() and (y0.requires_grad or len(params) > 0):
            return _OdeintCheckpoint.apply(self, y0, *params)
        return self.setup.integrate(y0)  # nothing to differentiate (e.g. under no_grad): no checkpoints


class _OdeintCheckpoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan: _CheckpointPlan, y0: Tensor, *params: Tensor) -> Tensor:
        setup = plan.setup
        plan.trace = StepTrace(every=plan.every)
        with torch.no_grad():
            ys = setup.integrate(y0, setup.observer(trace=plan.trace))
        setup.counts.n_checkpoints = len(plan.trace.states)
        ctx.plan = plan
        ctx.save_for_backward(*params)
        return ys

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        params = ctx.saved_tensors
        plan: _CheckpointPlan = ctx.plan
        counts = PassCounts()
        setup = plan.setup
        func = FlatFunc(setup.user_func, setup.layout, counts, setup.autocast)
        with torch.enable_grad(), solver_precision(setup.autocast):
            grad_solve, grad_params = _backward_pieces(plan, func, tuple(params), grad_ys, counts)
        plan.stats.backward.add(counts)
        return (None, grad_solve + grad_ys[0], *grad_params)


def _piece_starts(trace: StepTrace, times: list[float]) -> list[tuple[int, int]]:
    """For each checkpoint: (its first step, the index of the first output not emitted before it)."""
    direction = 1.0 if times[-1] > times[0] else -1.0
    starts, next_out = [], 1
    for step, t1 in enumerate(trace.ends):
        if step % trace.every == 0:
            starts.append((step, next_out))
        while next_out < len(times) and direction * (times[next_out] - t1) <= 0:
            next_out += 1
    return starts


def _backward_pieces(
    plan: _CheckpointPlan, func: FlatFunc, params: tuple[Tensor, ...], grad_ys: Tensor, counts: PassCounts
) -> tuple[Tensor, list[Tensor]]:
    """Replay the pieces from last to first; return dL/dy0 through the solve and dL/dparams."""
    trace, times = plan.trace, plan.setup.problem.times
    a = torch.zeros_like(grad_ys[0])  # dL/d(state at the end of the current piece)
    grad_params = [torch.zeros_like(p) for p in params]
    if trace is None or not trace.starts:  # a single output time: nothing was solved
        return a, grad_params
    pieces = _piece_starts(trace, times)
    observer = StepObserver(counts)
    for p in range(len(pieces) - 1, -1, -1):
        first, next_out = pieces[p]
        last = pieces[p + 1][0] if p + 1 < len(pieces) else len(trace.starts)
        y_start = trace.states[p].detach().requires_grad_(True)
        outputs, y_end = _replay_piece(plan, func, y_start, first, last, next_out, observer)
        roots = [y for _, y in outputs]
        grads = [grad_ys[i] for i, _ in outputs]
        if p + 1 < len(pieces):  # the next piece's dL/d(its start state)
            roots.append(y_end)
            grads.append(a)
        keep = [i for i, r in enumerate(roots) if r.requires_grad]
        if not keep:
            a = torch.zeros_like(a)
            continue
        found = torch.autograd.grad(
            [roots[i] for i in keep], (y_start, *params), [grads[i] for i in keep], allow_unused=True
        )
        a = found[0] if found[0] is not None else torch.zeros_like(a)
        for j, g in enumerate(found[1:]):
            if g is not None:
                grad_params[j] = grad_params[j] + g
    return a, grad_params


def _replay_piece(
    plan: _CheckpointPlan,
    func: FlatFunc,
    y: Tensor,
    first: int,
    last: int,
    next_out: int,
    observer: StepObserver,
) -> tuple[list[tuple[int, Tensor]], Tensor]:
    """Re-run steps [first, last) from their checkpoint with autograd: the engine's own loop, driven
    by a controller that takes exactly the recorded steps. Returns the outputs inside the piece as
    (output index, value), and the end state."""
    setup, trace = plan.setup, plan.trace
    times, direction = setup.problem.times, setup.problem.direction
    start, ends = trace.starts[first], trace.ends[first:last]
    inside = []
    while next_out + len(inside) < len(times) and direction * (times[next_out + len(inside)] - ends[-1]) <= 0:
        inside.append(times[next_out + len(inside)])
    piece_times = [start, *inside] + ([] if inside and inside[-1] == ends[-1] else [ends[-1]])
    problem = setup.problem
    piece = FlatProblem(func, y, piece_times, problem.rtol, problem.atol, problem.norm)
    solver = setup.solver
    controller = (
        ReplayController(ends) if isinstance(solver, AdaptiveRKSolver) else GridController([start, *ends])
    )
    ys = solver.integrate(piece, observer, controller)
    return list(enumerate(ys[1 : 1 + len(inside)].unbind(0), start=next_out)), ys[-1]
