"""The front doors, with torchdiffeq's signatures: ``odeint`` (backprop through the solver),
``odeint_adjoint`` (the adjoint method) and ``odeint_checkpoint`` (checkpointed replay). Each is
:func:`neuralode.solve` with one gradient strategy, its solution unpacked."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from ._setup.layout import UserState
from ._setup.tolerances import ToleranceArg
from .gradients import Adjoint, Checkpointed, Direct
from .per_sample import PerSample
from .solution import Solution
from .solve import solve
from .stats import SolveStats


def odeint(
    func: Callable[[Tensor, UserState], UserState],
    y0: UserState,
    t: Tensor,
    *,
    rtol: ToleranceArg = 1e-7,
    atol: ToleranceArg = 1e-9,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
    event_fn: Callable | None = None,
    stats: SolveStats | None = None,
    per_sample: bool | PerSample = False,
) -> UserState:
    """Integrate ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` and return y at every time in ``t``.

    Gradients flow by backpropagation through the solver's operations (memory grows with the
    number of steps); use :func:`odeint_adjoint` for constant memory.

    Args:
        func: ``func(t, y)`` with t a 0-dim tensor and y shaped like ``y0``; returns dy/dt.
        y0: initial state, a tensor of any shape (e.g. ``(batch, *state)``) or a tuple of tensors.
        t: ``(T,)`` output times, strictly increasing or strictly decreasing; ``t[0]`` is y0's time.
        rtol: relative tolerance of adaptive methods: a number, or per component one per member of a
            tuple y0 (a list/tuple, e.g. ``[1e-5, 1e-5, 1e20]``; 1e20: no error control on that member),
            or a tensor broadcastable to a tensor y0's shape.
        atol: absolute tolerance, in the same forms as ``rtol``.
        method: a name from ``neuralode.SOLVERS``; None means "dopri5".
        options: method options (see ``AdaptiveOptions``/``FixedGridOptions``); unknown keys raise.
        event_fn: ``event_fn(t, y) -> tensor``: integrate until any of its entries changes sign; then
            ``t`` is ``[t0]`` or ``[t0, t1]`` (t1 only gives the direction) and the return value is
            ``(event_t, solution)`` with solution ``[y0, y(event_t)]``; gradients flow through event_t.
        stats: a :class:`SolveStats` whose ``forward`` counts are set by this call.
        per_sample: True (or a :class:`PerSample` with its settings) solves each sample on its own: dim 0
            of y0 (of every member of a tuple y0) is the sample; each sample has its own step size,
            error test and outcome, so its answer does not depend on the rest of the batch. Then func
            receives t as a (B,) tensor (one time per sample) and y as (B, ...); ``t`` may be (T,) or
            (B, T) (a row of output times per sample, each strictly monotone, directions may differ);
            rtol/atol numbers or (B,) tensors; ``stats`` fields are (B,) tensors and ``stats.status``
            says how each sample ended. Explicit Runge-Kutta methods (adaptive, or fixed-grid on
            each sample's own grid) and kvaerno3/kvaerno5 (a dense Newton block per sample; no krylov).
            The explicit adaptive ones honour ``jump_t``/``step_t``: each sample's steps end on every
            such time inside its own span, and a jump_t is treated as a discontinuity (func from inside
            the step, evaluated again past it), as in joint mode. With ``event_fn`` (a fixed-grid method
            needs ``step_size``) every sample stops at its own event: event_fn gets t as (B,) and returns
            (B,) or (B, K) values, ``t`` is [t0] / [t0, t1] or (B, 1) / (B, 2), and event_t is (B,).

    Returns:
        ``(T, *y0.shape)`` (a tuple of such for a tuple y0); ``t`` of length 1 returns y0 stacked.
        With ``event_fn``: ``(event_t, solution)``, solution of shape ``(2, *y0.shape)``.

    Raises:
        TypeError, ValueError: bad arguments, before any work.
        MaxStepsExceededError, StepSizeUnderflowError, NonFiniteStateError: during the solve.
    """
    common = {"rtol": rtol, "atol": atol, "method": method, "options": options, "event_fn": event_fn}
    return _unpack(solve(func, y0, t, gradient=Direct(), stats=stats, per_sample=per_sample, **common))


def odeint_adjoint(
    func: Callable[[Tensor, UserState], UserState],
    y0: UserState,
    t: Tensor,
    *,
    rtol: ToleranceArg = 1e-7,
    atol: ToleranceArg = 1e-9,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
    event_fn: Callable | None = None,
    adjoint_rtol: ToleranceArg | None = None,
    adjoint_atol: ToleranceArg | None = None,
    adjoint_method: str | None = None,
    adjoint_options: Mapping[str, Any] | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
    stats: SolveStats | None = None,
    per_sample: bool | PerSample = False,
) -> UserState:
    """Like :func:`odeint`, with gradients from the adjoint method in O(1) memory in the steps.

    Args:
        adjoint_rtol: the backward solve's relative tolerance (default: ``rtol``), in the forms of
            ``rtol`` (per member of y0 or per element): its entries apply to the state and to its
            adjoint dL/dy, and the parameter integrals take the smallest entry.
        adjoint_atol: the backward solve's absolute tolerance (default: ``atol``), as ``adjoint_rtol``.
        adjoint_method: the backward solve's method (default: ``method``).
        adjoint_options: the backward solve's options (default: ``options`` without "norm").
            ``{"norm": "seminorm"}`` controls the error on the state and adjoint only, not on the
            parameter integrals: fewer backward steps, same gradients to tolerance.
        adjoint_params: tensors to differentiate with respect to; default ``func.parameters()``.
            Required (use ``()`` if there are none) when func is not an ``nn.Module``.
        stats: a :class:`SolveStats`; ``forward`` is set now, ``backward`` when backward runs.
        per_sample: as in :func:`odeint`: each sample's backward solve takes its own steps, batched
            (adaptive methods: error-controlled per sample, dL/dparams left out of the error control;
            fixed-grid methods: over its own forward grid reversed); dL/dparams is summed over samples.
            ``adjoint_method`` must be of the same kind (adaptive or fixed-grid) as ``method``. With
            ``jump_t``/``step_t`` the backward solve stops at them too (unless ``adjoint_options`` are
            given without them).

    Other arguments, the return value and the errors are those of :func:`odeint`. Gradients with
    respect to y0, every parameter (zero if unused) and every entry of t are returned.
    """
    gradient = Adjoint(rtol=adjoint_rtol, atol=adjoint_atol, method=adjoint_method, options=adjoint_options)
    common = {"rtol": rtol, "atol": atol, "method": method, "options": options, "event_fn": event_fn}
    return _unpack(
        solve(
            func,
            y0,
            t,
            gradient=gradient,
            params=adjoint_params,
            stats=stats,
            per_sample=per_sample,
            **common,
        )
    )


def odeint_checkpoint(
    func: Callable[[Tensor, UserState], UserState],
    y0: UserState,
    t: Tensor,
    *,
    rtol: ToleranceArg = 1e-7,
    atol: ToleranceArg = 1e-9,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
    event_fn: Callable | None = None,
    checkpoint_every: int = 1,
    adjoint_params: Sequence[Tensor] | None = None,
    stats: SolveStats | None = None,
    per_sample: bool | PerSample = False,
) -> UserState:
    """Like :func:`odeint`, with the gradients of direct backprop in memory O(checkpoints).

    Use it instead of :func:`odeint_adjoint` when the gradient must be that of the discrete solve
    (no reconstruction error of the state backwards in time, no backward tolerances), and instead
    of :func:`odeint` when the graph of every step does not fit in memory.

    Args:
        checkpoint_every: store the state every this many accepted steps (a positive int). Memory:
            ceil(steps / checkpoint_every) states plus the graph of checkpoint_every steps; the
            backward pass re-evaluates func about as often as the forward pass did.
        adjoint_params: tensors to differentiate with respect to; default ``func.parameters()``.
            Required (use ``()`` if there are none) when func is not an ``nn.Module``.
        event_fn: not supported (raises ValueError); use :func:`odeint` or :func:`odeint_adjoint`.
        per_sample: as in :func:`odeint` (adaptive and fixed-grid methods): the per-sample steps are
            recorded (a fixed grid: the grid), the batch's state is stored every ``checkpoint_every``
            lockstep steps, and backward replays each piece (the gradients of
            ``odeint(..., per_sample=True)``, to rounding), with ``jump_t``/``step_t`` too.
        stats: a :class:`SolveStats`; ``forward`` is set now (``n_checkpoints``: states stored),
            ``backward`` (the replay's evaluations) when backward runs.

    Other arguments, the return value and the errors are those of :func:`odeint`; gradients with
    respect to y0, the parameters and t (the formulas :func:`odeint` uses) are returned.

    Raises:
        ValueError: also for a method or option whose steps cannot be replayed exactly: supported are
            the explicit adaptive Runge-Kutta family (without ``jump_t``, except with
            ``per_sample=True``) and explicit fixed-grid RK.
    """
    gradient = Checkpointed(every=checkpoint_every)
    common = {"rtol": rtol, "atol": atol, "method": method, "options": options, "event_fn": event_fn}
    return _unpack(
        solve(
            func,
            y0,
            t,
            gradient=gradient,
            params=adjoint_params,
            stats=stats,
            per_sample=per_sample,
            **common,
        )
    )


def _unpack(solution: Solution) -> UserState | tuple[Tensor, UserState]:
    """What torchdiffeq's functions return: the states, or ``(event_t, states)`` after an event."""
    if solution.event_t is not None:
        return solution.event_t, solution.ys
    return solution.ys
