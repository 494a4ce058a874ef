"""``odeint_dense``: torchdiffeq's fourth function: solve once, evaluate the solution anywhere in [t0, t1].

Every accepted step of an adaptive Runge-Kutta solve keeps its start, size, state and interpolant
stages; the returned function evaluates the method's own interpolant (dopri5's, tsit5's, DOP853's,
cubic Hermite for the low-order pairs) in the step holding each time. The stored tensors keep the
solve's graph, so gradients with respect to y0 and func's parameters flow by direct backprop.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ._setup.layout import StateLayout, UserState
from ._setup.precision import solver_precision
from ._setup.prepare import prepare
from ._setup.tolerances import ToleranceArg
from .solvers import AdaptiveRKSolver
from .solvers.runge_kutta import DeviceTableau

DenseOutputFn = Callable[[Tensor], UserState]


@dataclasses.dataclass
class DenseRecord:
    """The accepted steps of one solve (StepObserver.dense): t, dt, y at the start, interpolant stages."""

    starts: list[float] = dataclasses.field(default_factory=list)
    sizes: list[float] = dataclasses.field(default_factory=list)
    states: list[Tensor] = dataclasses.field(default_factory=list)
    stages: list[Tensor] = dataclasses.field(default_factory=list)
    weights: Tensor | None = None  # (dense stages, degree): stage weight = sum_k w[., k] dt theta^(k+1)

    def record(self, t: float, dt: float, y: Tensor, stages: Tensor, dtab: DeviceTableau) -> None:
        if self.weights is None:
            self.weights = torch.tensor(dtab.dense_rows, dtype=y.dtype, device=y.device)
        self.starts.append(t)
        self.sizes.append(dt)
        self.states.append(y)
        self.stages.append(stages)


def odeint_dense(
    func: Callable[[Tensor, UserState], UserState],
    y0: UserState,
    t0: Tensor | float,
    t1: Tensor | float,
    *,
    rtol: ToleranceArg = 1e-7,
    atol: ToleranceArg = 1e-9,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> DenseOutputFn:
    """Solve ``dy/dt = func(t, y)`` from ``y(t0) = y0`` to t1 and return ``dense_output_fn(t_eval)``.

    ``dense_output_fn`` takes a 0-dim tensor (returns y's shape) or a 1-D tensor of times (returns
    ``(len, *y0.shape)``; a tuple of such for a tuple y0), each in [t0, t1]; t1 < t0 integrates backwards.
    Methods: the adaptive Runge-Kutta ones (default dopri5), each with its own interpolant, and the
    adaptive implicit kvaerno3/kvaerno5 (cubic Hermite through each step's ends). Gradients
    reach y0, func's parameters and t_eval by backprop through the stored steps (not t0 or t1).

    Raises:
        ValueError: a method without an interpolant of its own (fixed-grid, implicit, scipy_solver),
            t0 == t1, or (from ``dense_output_fn``) a time outside [t0, t1].
    """
    t = torch.stack([_time(t0, "t0"), _time(t1, "t1")])
    prepared = prepare(func, y0, t, rtol, atol, method, options, None)
    if not isinstance(prepared.solver, AdaptiveRKSolver):
        raise ValueError(
            f"odeint_dense needs an adaptive Runge-Kutta method (dopri5, tsit5, dopri8, bosh3, fehlberg2, "
            f"adaptive_heun, kvaerno3, kvaerno5), got method={method!r}: fixed-grid (explicit or implicit) "
            "and scipy_solver methods have no interpolant of their own; use odeint(func, y0, t_eval, ...) "
            "with the times you need"
        )
    record = DenseRecord()
    with solver_precision(prepared.autocast):
        prepared.integrate(prepared.problem.y0, prepared.observer(dense=record))
    span = prepared.problem.times
    return _DenseSolution(record, prepared.layout, span[0], span[-1])


def _time(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar time, got a tensor of shape {tuple(value.shape)}")
        return value.reshape(()).detach().to(torch.float64)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number or a 0-dim tensor, got {type(value).__name__}")
    return torch.tensor(float(value), dtype=torch.float64)


class _DenseSolution:
    """``dense_output_fn``: the solution at any time(s) in [t0, t1], from the stored interpolants."""

    def __init__(self, record: DenseRecord, layout: StateLayout, t0: float, t1: float) -> None:
        self.record, self.layout, self.t0, self.t1 = record, layout, t0, t1
        self.direction = 1.0 if t1 > t0 else -1.0
        self._keys = [self.direction * s for s in record.starts]  # increasing along the solve

    def __call__(self, t_eval: Tensor) -> UserState:
        if not isinstance(t_eval, Tensor) or t_eval.dim() > 1:
            raise ValueError("t_eval must be a 0-dim or 1-D tensor of times in [t0, t1]")
        scalar = t_eval.dim() == 0
        times = t_eval.reshape(-1)
        values = times.detach().cpu().double().tolist()
        low, high = min(self.t0, self.t1), max(self.t0, self.t1)
        outside = [v for v in values if not low <= v <= high]
        if outside:
            raise ValueError(
                f"t_eval has {len(outside)} time(s) outside [t0, t1] = [{self.t0!r}, {self.t1!r}], e.g. "
                f"{outside[0]!r}: the dense output only covers the solved span"
            )
        steps = [max(bisect.bisect_right(self._keys, self.direction * v) - 1, 0) for v in values]
        rows = [self._evaluate(i, times[j]) for j, i in enumerate(steps)]
        flat = rows[0] if scalar else torch.stack(rows) if rows else self._empty()
        return self.layout.unflatten(flat)

    def _evaluate(self, i: int, tau: Tensor) -> Tensor:
        """The interpolant of step i at time tau (differentiable in tau, the state and the stages)."""
        rec = self.record
        y, stages, dt = rec.states[i], rec.stages[i], rec.sizes[i]
        theta = ((tau.to(torch.float64) - rec.starts[i]) / dt).to(y.device, y.dtype)
        weights = rec.weights
        assert weights is not None
        powers = dt * theta ** torch.arange(1, weights.shape[1] + 1, dtype=y.dtype, device=y.device)
        return torch.addmv(y, stages.t(), weights @ powers)

    def _empty(self) -> Tensor:
        state = self.record.states[0]
        return state.new_zeros((0, state.numel()))
