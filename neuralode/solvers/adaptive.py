"""The adaptive Runge-Kutta engine: embedded error control, step-size control and dense output.

Steps are not clamped to intermediate output times; outputs inside an accepted step come from the
method's own interpolant (one matrix product per step, whatever the number of outputs in it). The last
step ends exactly on the last output time (the controllers' ``clamp_end``): the final state is the
method's own solution there, not its lower-order interpolant (24x more accurate at the same cost on the
benchmark's MLP, and it is where the adjoint's backward solve starts).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from ..errors import (
    MaxStepsExceededError,
    NonFiniteStateError,
    SolverError,
    StepSizeUnderflowError,
    event_not_found,
)
from .base import FlatProblem, Solver
from .controllers import IntegralController, PIController
from .event_search import bisect
from .observer import StepObserver
from .options import AdaptiveOptions, resolve_max_num_steps
from .runge_kutta import DeviceTableau, StageBuffer, dense_eval, dense_stages, rk_step, stage_buffer

_MAX_NONFINITE_RETRIES = 8  # each retry shrinks the step tenfold


class StepFailed(Exception):
    """Raised by a step function when it cannot take the step (an implicit method's Newton iteration
    did not converge): the engine rejects the step and retries it ``shrink`` times as long."""

    def __init__(self, shrink: float) -> None:
        super().__init__(shrink)
        self.shrink = shrink


def _stop_times(values: Tensor | None, t0: float, t_end: float, direction: float) -> list[float]:
    """Times strictly inside (t0, t_end), sorted along the direction of integration."""
    if values is None:
        return []
    inside = [
        v
        for v in values.detach().cpu().double().tolist()
        if 0 < direction * (v - t0) < direction * (t_end - t0)
    ]
    return sorted(set(inside), key=lambda v: direction * v)


class AdaptiveRKSolver(Solver):
    """Engine for every embedded explicit Runge-Kutta tableau, and (through :meth:`stepper`) for the
    adaptive implicit ESDIRK pairs, which bring their own step function."""

    options_class: ClassVar[type] = AdaptiveOptions
    supported_callbacks: ClassVar[tuple[str, ...]] = (
        "callback_step",
        "callback_accept_step",
        "callback_reject_step",
    )
    replayable: ClassVar[bool] = True

    @property
    def order(self) -> int:
        return self.tableau.order

    def controller(self, carry: bool = False, clamp_end: bool = True) -> IntegralController:
        """The error controller the options ask for (``controller``, ``safety``, ``first_step``, ...);
        ``carry``: keep the last step size for a next solve; ``clamp_end``: end exactly on the last time."""
        opts: AdaptiveOptions = self.options
        controller_class = PIController if opts.controller == "pi" else IntegralController
        k = self.tableau.embedded_order + 1
        return controller_class(
            k,
            opts.safety,
            opts.ifactor,
            opts.dfactor,
            first_step=opts.first_step,
            carry=carry,
            clamp_end=clamp_end,
        )

    def integrate(self, problem: FlatProblem, observer: StepObserver, controller=None) -> Tensor:
        return self._run(problem, observer, controller or self.controller(), None)

    def integrate_until_event(
        self, problem: FlatProblem, event, observer: StepObserver
    ) -> tuple[float, Tensor, int]:
        """Step (without end) in the direction of times[0] -> times[1] until ``event`` crosses zero;
        return the event time, the state there (dense output) and the crossing component."""
        return self._run(problem, observer, self.controller(), event)

    def stepper(
        self, problem: FlatProblem, observer: StepObserver
    ) -> tuple[DeviceTableau, StageBuffer | None, Callable[..., tuple[Tensor, Tensor]]]:
        """What ``_run`` steps with, made once per solve: the device tableau (its ``b_err`` weights the
        error estimate and its ``dense_rows`` the interpolant), a stage buffer or None, and the step
        function ``step(func, dtab, t, dt, y, f0, buffer, perturb_end=...) -> (K, y1)``, (stages, N)
        and the new state (``rk_step`` here). A step function may raise :class:`StepFailed`."""
        y = problem.y0
        dtab = DeviceTableau(self.tableau, y.dtype, y.device)
        return dtab, stage_buffer(dtab, y), rk_step

    def _run(self, problem: FlatProblem, observer: StepObserver, controller, event):
        opts: AdaptiveOptions = self.options
        func, times = problem.func, problem.times
        y = problem.y0
        dtab, buffer, step = self.stepper(problem, observer)
        rtol, atol, norm = problem.rtol, problem.atol, problem.norm
        homogeneous = getattr(norm, "homogeneous", False)
        t, t_end = times[0], times[-1]
        direction = 1.0 if t_end > t else -1.0
        max_steps = resolve_max_num_steps(opts.max_num_steps, event is not None)
        # times and steps stay representable in the state's dtype (an event search has no end time)
        t_limit = torch.finfo(y.dtype).max
        if event is not None:  # no end time: the event ends the solve
            t_end = direction * math.inf
            times = [t, t_end]
            event.start(t, y)
        jumps = _stop_times(opts.jump_t, t, t_end, direction)
        stops = sorted(
            set(jumps) | set(_stop_times(opts.step_t, t, t_end, direction)), key=lambda v: direction * v
        )
        jump_set = set(jumps)
        if controller.clamp_end and event is None:
            stops.append(t_end)  # the interval's end: an adjoint interval is stepped to exactly
        checks_error = controller.checks_error

        f0 = func(t, y)
        h = controller.first_step(func, t, y, f0, direction, rtol, atol, norm)
        outputs: list[Tensor] = [y]
        next_out, n_out = 1, len(times)
        next_stop = 0
        y_abs = y.detach().abs()
        last_full = None
        attempts = nonfinite = 0
        last_rejection_nonfinite = False

        while next_out < n_out:
            h = min(max(h, opts.min_step), opts.max_step)
            h_wanted = h
            t1 = controller.step_end(t, h, direction)
            hit_stop = None
            if next_stop < len(stops) and direction * (t1 - stops[next_stop]) >= 0:
                hit_stop = stops[next_stop]
                t1 = hit_stop
            dt = t1 - t
            if not (abs(t1) < t_limit and abs(dt) < t_limit):  # the step grew until time would overflow
                if event is not None:
                    raise event_not_found(
                        "the solver", times[0], t, f"the step size grew to {h:.3g}, time would overflow"
                    )
                t1 = t_end if hit_stop is None else t1
                dt = t1 - t
            if (t1 == t or t + dt == t) and last_rejection_nonfinite:
                raise NonFiniteStateError(
                    f"the state or its derivative becomes non-finite (NaN or inf) just after t={t!r}: every "
                    "step past it failed. Check func for overflow or division by zero there.",
                    t,
                )
            if t1 == t or t + dt == t:
                raise StepSizeUnderflowError(
                    f"step size underflow at t={t!r}: the step {dt:.3g} no longer changes t. The problem may "
                    "be stiff or singular there; try looser tolerances (rtol/atol), options['min_step'], "
                    "or another method.",
                    t,
                )
            if attempts >= max_steps:
                if event is not None:
                    raise event_not_found("the solver", times[0], t, f"max_num_steps={max_steps:,} steps")
                raise MaxStepsExceededError(
                    f"max_num_steps={max_steps:,} steps reached at t={t!r} before t={t_end!r}; try "
                    "looser tolerances (rtol/atol) or raise options['max_num_steps'].",
                    t,
                )
            attempts += 1
            observer.attempt(t, y, dt)

            try:  # free unless raised (Python >= 3.11): the explicit steps pay nothing for it
                K, y1 = step(func, dtab, t, dt, y, f0, buffer, perturb_end=hit_stop in jump_set)
            except StepFailed as failed:
                if not checks_error:  # a replayed step (odeint_checkpoint) cannot be shrunk: it was accepted
                    raise SolverError(
                        f"the replayed step from t={t!r} to t={t1!r} failed (Newton's method did not "
                        "converge from the piece's fresh Jacobian): use odeint or odeint_adjoint, or raise "
                        "options['max_iters'].",
                        t,
                    ) from None
                observer.reject(t, y, dt)
                last_rejection_nonfinite = False
                if abs(dt) <= opts.min_step:
                    raise StepSizeUnderflowError(
                        f"the step from t={t!r} failed (Newton's method did not converge) even at "
                        f"options['min_step']={opts.min_step!r}: lower min_step, or raise "
                        "options['max_iters'].",
                        t,
                    ) from None
                h = abs(dt) * failed.shrink  # too short to change t: the underflow check names t
                continue
            if checks_error:
                y1_abs = y1.detach().abs() if y1.requires_grad else y1.abs()
                K_t = buffer.stages_t if buffer is not None else K.t()
                ratio = self._error_ratio(dtab, K_t, y_abs, y1_abs, abs(dt), rtol, atol, norm, homogeneous)
            else:  # replayed steps were accepted when they were recorded
                y1_abs, ratio = y_abs, 0.0

            if not math.isfinite(ratio):
                observer.reject(t, y, dt)
                nonfinite += 1
                last_rejection_nonfinite = True
                if nonfinite > _MAX_NONFINITE_RETRIES:
                    raise NonFiniteStateError(
                        f"the state or its derivative became non-finite (NaN or inf) right after t={t!r}, "
                        f"even with a step of {dt:.3g}: check func for overflow or division by zero there.",
                        t,
                    )
                h = abs(dt) * 0.1
                f0 = K[0] if buffer is not None else f0
                continue
            nonfinite = 0

            accepted = ratio <= 1.0 or abs(dt) <= opts.min_step
            if not accepted:
                observer.reject(t, y, dt)
                last_rejection_nonfinite = False
                f0 = K[0] if buffer is not None else f0  # the buffer row stays valid for a retry
                h = controller.next_step(abs(dt), ratio, accepted=False)
                if t + direction * h == t1:  # a step a few ULPs long that cannot shrink any more
                    raise StepSizeUnderflowError(
                        f"step size underflow at t={t!r}: a step of {dt:.3g} is rejected and cannot shrink. "
                        "The problem may be stiff or singular there; try looser tolerances (rtol/atol), "
                        "options['min_step'], or another method.",
                        t,
                    )
                continue

            observer.accept(t, t1, y, dt)
            if hit_stop is None:  # a step the controller chose, not one cut short by a stop or the end
                last_full = abs(dt)
            # FSAL: f1 is the buffer's last row; the next rk_step copies it to row 0 before reusing rows.
            f1 = K[-1] if dtab.fsal else func(t1, y1)
            if observer.dense is not None:  # odeint_dense keeps every step's interpolant (buffer copied)
                ext = dense_stages(func, dtab, t, dt, y, K, f1, buffer)
                observer.dense.record(t, dt, y, ext if buffer is None else ext.clone(), dtab)
            if event is not None and event.crossed(t1, y1):
                ext = dense_stages(func, dtab, t, dt, y, K, f1, buffer)
                interp = _interpolant(dtab, y, ext, t, dt, t1, y1)
                tau, k = bisect(event, interp, t, t1)
                return tau, interp(tau), k
            if next_out < n_out and direction * (times[next_out] - t1) <= 0:
                next_out = self._emit(func, dtab, t, dt, t1, y, y1, K, f1, buffer, times, next_out, outputs)
            if hit_stop is not None:
                next_stop += 1
                if hit_stop in jump_set:  # derivative after the discontinuity
                    f1 = func(t1, y1, direction)
            t, y, f0, y_abs = t1, y1, f1, y1_abs
            h = controller.next_step(abs(dt), ratio, accepted=True)

        controller.finish(h, h_wanted, last_full)
        return torch.stack(outputs)

    @staticmethod
    def _error_ratio(
        dtab: DeviceTableau,
        K_t: Tensor,
        y_abs: Tensor,
        y1_abs: Tensor,
        abs_dt: float,
        rtol: float | Tensor,
        atol: float | Tensor,
        norm,
        homogeneous: bool,
    ) -> float:
        """norm(dt * K^T b_err / (atol + rtol * max(|y0|, |y1|))), synchronised to the host.

        ``K_t`` is the (N, stages) transpose of the stage matrix. Without autograd this runs as it is
        (a ``no_grad`` context per step costs microseconds); with it, under ``no_grad``.
        """
        if torch.is_grad_enabled():
            with torch.no_grad():
                return AdaptiveRKSolver._error_ratio(
                    dtab, K_t, y_abs, y1_abs, abs_dt, rtol, atol, norm, homogeneous
                )
        scale = torch.maximum(y_abs, y1_abs).mul_(rtol).add_(atol)
        err = torch.mv(K_t, dtab.b_err).div_(scale)
        if dtab.b_err_secondary is not None:  # DOP853: blend the 5th- and 3rd-order estimates
            err3 = torch.mv(K_t, dtab.b_err_secondary).div_(scale)
            if not homogeneous:
                err, err3 = err * abs_dt, err3 * abs_dt
            # Blended per tensor, then the maximum over tensors: the blend falls as the 3rd-order
            # estimate grows, so blending two separate maxima let a seminorm (which drops tensors)
            # exceed the norm it replaces on the same step.
            per_tensor = getattr(norm, "segment_norms", None)
            n5, n3 = (per_tensor(err), per_tensor(err3)) if per_tensor else (norm(err), norm(err3))
            denom = torch.sqrt(n5 * n5 + 0.01 * n3 * n3)
            blend = torch.where(denom == 0, torch.zeros_like(denom), n5 * n5 / denom)
            value = float(blend.max())  # NaN stays NaN
            return value * abs_dt if homogeneous else value
        if homogeneous:
            return norm.host(err) * abs_dt
        return float(norm(err * abs_dt))

    @staticmethod
    def _emit(func, dtab, t, dt, t1, y, y1, K, f1, buffer, times, next_out, outputs) -> int:
        """Append the outputs that fall inside the accepted step (t, t1]; return the next index."""
        thetas, exact = [], []
        direction = 1.0 if dt > 0 else -1.0
        while next_out < len(times) and direction * (times[next_out] - t1) <= 0:
            tau = times[next_out]
            exact.append(tau == t1)
            thetas.append((tau - t) / dt)
            next_out += 1
        if all(exact):
            outputs.extend([y1] * len(thetas))
            return next_out
        ext = dense_stages(func, dtab, t, dt, y, K, f1, buffer)
        values = dense_eval(dtab, y, ext, dt, thetas)
        outputs.extend(y1 if is_exact else row for row, is_exact in zip(values.unbind(0), exact, strict=True))
        return next_out


def _interpolant(dtab: DeviceTableau, y: Tensor, ext: Tensor, t: float, dt: float, t1: float, y1: Tensor):
    """The dense output of one accepted step as a function of time."""

    def interp(tau: float) -> Tensor:
        if tau == t1:
            return y1
        return dense_eval(dtab, y, ext, dt, [(tau - t) / dt])[0]

    return interp
