"""The per-sample adaptive Runge-Kutta engine: each sample of a batch with its own step size, error
test, accept/reject, output times and outcome; all running samples step together, one func call per
stage.

Every operation is elementwise or a reduction within one sample's row (stage sums are written out as
products and sums, not matrix products), so a sample's steps and answer do not depend on which other
samples share its batch, to rounding: torch's reductions may order a sum differently for a larger
batch (a last-bit difference in a few entries of a 256-sample batch), and are the same for the small
batches of the tests, bit for bit. Finished and failed samples take zero-length steps (their state is
left exactly as it was); with ``compact`` func is called on the running rows only. The options
jump_t/step_t stop every sample at each such time inside its own span (:class:`SampleStops`); without
them the steps pay nothing for it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..solvers.esdirk import FAILED_SHRINK
from ..solvers.options import AdaptiveOptions, resolve_max_num_steps
from ..solvers.runge_kutta import DeviceTableau
from ..solvers.tableau import ButcherTableau
from .events import SampleEvent
from .outcome import MAX_STEPS, NON_FINITE, RUNNING, SUCCESS, UNDERFLOW
from .problem import SampleProblem

_MAX_NONFINITE_RETRIES = 8  # as the joint engine: each retry shrinks the step tenfold


class RowNorm:
    """Per-sample error norm: RMS over each member of the state, then the maximum over members, per row
    (the joint engine's norm applied to each sample on its own)."""

    def __init__(self, segments: tuple[int, ...]) -> None:
        self.segments = segments

    def __call__(self, x: Tensor) -> Tensor:
        """(B, N) -> (B,) float64."""
        if len(self.segments) == 1:
            return _rms(x)
        return torch.stack([_rms(p) for p in x.split(self.segments, dim=1)]).amax(dim=0)

    def per_member(self, x: Tensor) -> Tensor:
        """(B, N) -> (members, B): the RMS of each member (DOP853 blends its estimates per member)."""
        return torch.stack([_rms(p) for p in x.split(self.segments, dim=1)])


def _rms(x: Tensor) -> Tensor:
    n = max(x.shape[1], 1)
    return ((x * x).sum(dim=1) / n).sqrt().double()


def _combine(y: Tensor, dt: Tensor, stages: list[Tensor], weights) -> Tensor:
    """y + dt * sum_j w_j k_j, elementwise (the same rounding for a row wherever it sits)."""
    acc = None
    for k, w in zip(stages, weights, strict=False):
        if w == 0.0:
            continue
        term = k * w
        acc = term if acc is None else acc + term
    return y if acc is None else y + acc * dt


class StepCarry:
    """Each sample's proposed step size at the end of a solve, to start the next solve from (the
    per-sample adjoint's output intervals): a fresh selection per interval costs an evaluation and the
    steps that grow back to size."""

    def __init__(self, h: Tensor | None = None) -> None:
        self.h = h


class _Sense:
    """The direction of integration, +1 or -1 per row: a Python sign when every row goes the same way
    (the common case), so that stepping and comparing along it costs no multiplication."""

    def __init__(self, direction: Tensor) -> None:
        first = float(direction[0]) if direction.numel() else 1.0
        uniform = first in (1.0, -1.0) and bool((direction == first).all())
        self.sign, self.rows = (first if uniform else None), direction

    def advance(self, t: Tensor, h: Tensor) -> Tensor:
        """t + direction * h."""
        if self.sign == 1.0:
            return t + h
        if self.sign == -1.0:
            return t - h
        return t + self.rows * h

    def reached(self, a: Tensor, b: Tensor) -> Tensor:
        """direction * (a - b) >= 0: a is at b or beyond it."""
        if self.sign == 1.0:
            return (a - b) >= 0
        if self.sign == -1.0:
            return (a - b) <= 0
        return self.rows * (a - b) >= 0


class SampleStops:
    """options jump_t/step_t as each sample's stops, in its direction of integration: ``times`` (B, S),
    the stops strictly inside the sample's span (t0, t_end), padded with direction * inf (never reached;
    one such column at least); ``jumps`` (B, S) bool, a jump_t (func is discontinuous there), or None
    when there is no jump_t at all (step_t only: no step needs the discontinuity's treatment)."""

    def __init__(self, times: Tensor, jumps: Tensor | None) -> None:
        self.times, self.jumps = times, jumps
        self.next = torch.zeros(times.shape[0], dtype=torch.long, device=times.device)

    def at(self, t1: Tensor, sense: _Sense) -> tuple[Tensor, Tensor, Tensor | None]:
        """The step ends t1 clipped to each row's next stop; which rows end on it; which end on a jump."""
        stop_t = self.times.gather(1, self.next[:, None]).squeeze(1)
        hit = sense.reached(t1, stop_t)
        at_jump = None if self.jumps is None else hit & self.jumps.gather(1, self.next[:, None]).squeeze(1)
        return torch.where(hit, stop_t, t1), hit, at_jump


def sample_stops(
    jump_t: Tensor | None, step_t: Tensor | None, t0: Tensor, t_end: Tensor, direction: Tensor
) -> SampleStops | None:
    """Each sample's :class:`SampleStops` (None without jump_t and step_t: the steps pay nothing)."""
    if jump_t is None and step_t is None:
        return None

    def as_times(v: Tensor | None) -> Tensor:
        return t0.new_zeros(0) if v is None else v.detach().to(device=t0.device, dtype=torch.float64)

    jumps = as_times(jump_t)
    values = torch.unique(torch.cat([jumps, as_times(step_t)]))
    is_jump = torch.isin(values, jumps)
    span = (direction * (t_end - t0))[:, None]
    ahead = direction[:, None] * (values[None, :] - t0[:, None])
    inside = (ahead > 0) & (ahead < span)
    key = torch.where(inside, direction[:, None] * values[None, :], math.inf)
    key, order = key.sort(dim=1)
    found = torch.isfinite(key)
    never = (direction * math.inf)[:, None]  # and one more column: the stop after the last one
    stops = torch.cat([torch.where(found, values[order], never), never], dim=1)
    if jump_t is None or not bool((is_jump[order] & found).any()):
        return SampleStops(stops, None)
    return SampleStops(
        stops, torch.cat([is_jump[order] & found, torch.zeros_like(never, dtype=torch.bool)], dim=1)
    )


def _nudged(t: Tensor, dtype: torch.dtype, towards: Tensor) -> Tensor:
    """t moved to the next representable time towards ``towards`` (+-inf per row) in func's dtype (a
    float64 nudge would vanish when cast to float32), as the joint engine's ``time_tensor``."""
    return torch.nextafter(t.to(dtype), towards.to(dtype)).to(torch.float64)


class SampleController:
    """The integral or PI controller of the joint engine, vectorised over samples (float64 (B,))."""

    def __init__(self, opts: AdaptiveOptions, k: int, batch: int, device: torch.device) -> None:
        self.safety, self.ifactor, self.dfactor = opts.safety, opts.ifactor, opts.dfactor
        self.exponent = 1.0 / k
        self.pi = opts.controller == "pi"
        self.beta1, self.beta2 = 0.7 / k, 0.4 / k
        self.previous = torch.ones(batch, dtype=torch.float64, device=device)

    def next_step(self, h: Tensor, ratio: Tensor, accepted: Tensor) -> Tensor:
        """The next step of every sample after a step of size h with error ``ratio`` (finite)."""
        factor = (self.safety * ratio.clamp(min=1e-300).pow(-self.exponent)).clamp(self.dfactor, self.ifactor)
        integral = torch.where(accepted, factor, factor.clamp(max=1.0))
        integral = torch.where(ratio == 0, self.ifactor, integral)
        if not self.pi:
            return h * integral
        pi_ratio = ratio.clamp(min=1e-10)
        pi = (self.safety * pi_ratio.pow(-self.beta1) * self.previous.pow(self.beta2)).clamp(
            self.dfactor, self.ifactor
        )
        self.previous = torch.where(accepted, pi_ratio, self.previous)
        return h * torch.where(accepted, pi, integral)


@torch.no_grad()
def initial_steps(func, t, y, f0, direction, order, rtol, atol, norm, rows) -> Tensor:
    """Hairer & Wanner's starting step for every sample (one extra evaluation), float64 (B,)."""
    scale = y.abs() * rtol + atol
    d0, d1 = norm(y / scale), norm(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    y1 = y + (direction * h0).to(y.dtype)[:, None] * f0
    f1 = func(t + direction * h0, y1, rows)
    d2 = norm((f1 - f0) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(
        dmax <= 1e-15,
        torch.clamp(h0 * 1e-3, min=1e-6),
        (0.01 / dmax.clamp(min=1e-300)) ** (1.0 / (order + 1)),
    )
    h = torch.minimum(100 * h0, h1)
    return torch.where(torch.isfinite(h) & (h > 0), h, torch.full_like(h, 1e-6))


class _Coefficients:
    """A tableau's stage, solution and error weights as (k, 1, 1) tensors, for ``(K[:k] * w).sum(0)``:
    one product and one sum over stages per combination (a row's rounding is the same wherever it sits)."""

    def __init__(self, tab: ButcherTableau, dtype: torch.dtype, device: torch.device) -> None:
        def col(values) -> Tensor:
            return torch.tensor(list(values), dtype=dtype, device=device).reshape(-1, 1, 1)

        self.a = [None, *(col(row) for row in tab.a[1:])]
        # the stage times' fractions of the step, float64 (S, 1): times stay float64 whatever the state
        self.c = torch.tensor(list(tab.c), dtype=torch.float64, device=device)[:, None]
        self.b = col(tab.b)
        self.b_err = col(tab.b_err)
        self.b_err_secondary = None if tab.b_err_secondary is None else col(tab.b_err_secondary)

    newton = None  # explicit: no Newton state (the per-sample ESDIRK's coefficients carry theirs)


def _weighted(stages: Tensor, weights: Tensor) -> Tensor:
    """sum_j w_j K_j over the leading (stage) dimension."""
    return (stages * weights).sum(dim=0)


class _Stages:
    """The (stages, B, N) stage tensor: a buffer reused across steps without autograd, else stacked."""

    def __init__(self, num: int, y: Tensor) -> None:
        self.grad = torch.is_grad_enabled()
        self.buffer = None if self.grad else torch.empty((num, *y.shape), dtype=y.dtype, device=y.device)
        self.rows: list[Tensor] = []

    def reset(self, f0: Tensor) -> None:
        self.rows = [f0]
        if self.buffer is not None:
            self.buffer[0].copy_(f0)

    def append(self, k: Tensor) -> None:
        if self.buffer is not None:
            self.buffer[len(self.rows)].copy_(k)
        self.rows.append(k)

    def first(self, i: int) -> Tensor:
        """K[:i] as one tensor."""
        if self.buffer is not None:
            return self.buffer[:i]
        return torch.stack(self.rows[:i])


class SampleRKSolver:
    """Steps an embedded explicit tableau per sample; see the module docstring."""

    def __init__(self, tableau: ButcherTableau, options: AdaptiveOptions, compact: bool = False) -> None:
        self.tableau, self.options, self.compact = tableau, options, compact
        self.max_steps = resolve_max_num_steps(options.max_num_steps, event=False)

    def integrate(
        self,
        problem: SampleProblem,
        quadrature=None,
        event: SampleEvent | None = None,
        record=None,
        carry: StepCarry | None = None,
        jump=None,
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Solve; returns (ys (B, T, N), status (B,), t reached (B,), per-sample counts).

        ``quadrature``: an object whose ``add(dt, stage_times, stage_inputs, accepted)`` is called after
        every step some sample accepts (the adjoint integrates dL/dtheta over accepted steps with it).
        ``event``: step each sample without end (in the direction of its times[:, 0] -> times[:, 1])
        until its event; ys is then (B, 2, N) = [y0, y(event time)] and ``event.tau``/``event.k`` hold
        each sample's event time (NaN if none was found) and crossing entry. ``record``: an object whose
        ``step(t, t1, accepted, y, next_out)`` is called with every step some sample accepts, before the
        state moves (odeint_checkpoint replays the accepted steps from it). ``carry``: a
        :class:`StepCarry` whose step sizes (if set) start this solve and that keeps the ones it ends with
        (the adjoint's intervals, each starting where the last one's steps left off). ``jump``: every
        sample steps to each of its output times exactly and its state jumps there to
        ``jump(y1, rows, out_index)`` (the adjoint's backward solve: dL/dy(t_i) added to the adjoint),
        each sample at its own times, without waiting for the others at an output time."""
        opts, tab = self.options, self.tableau
        func, y = problem.func, problem.y0
        batch, n = y.shape
        dtype, device = y.dtype, y.device
        dtab, coeffs = self.device_tableaux(problem)
        newton = coeffs.newton  # an implicit method's per-row Newton state (None: explicit)
        times, n_out = problem.times, problem.times.shape[1]
        direction = problem.direction
        t = times[:, 0].clone()
        t_end = times[:, -1]
        max_steps = self.max_steps
        if event is not None:  # no end time: each sample's event ends its solve
            t_end = direction * math.inf
            max_steps = resolve_max_num_steps(opts.max_num_steps, event=True)
            event.start(t, y)
            event.tau = torch.full((batch,), math.nan, dtype=torch.float64, device=device)
            event.k = torch.zeros(batch, dtype=torch.long, device=device)
        t_limit = torch.finfo(dtype).max  # an event search stops before its time would overflow
        rtol, atol = problem.rtol, problem.atol
        norm = RowNorm(problem.segments)
        controller = SampleController(opts, tab.embedded_order + 1, batch, device)
        status = torch.full((batch,), RUNNING, dtype=torch.long, device=device)
        n_steps = torch.zeros(batch, dtype=torch.long, device=device)
        n_accepted = torch.zeros_like(n_steps)
        rows_all = torch.arange(batch, device=device)
        out_rows, out_cols, out_vals = [rows_all], [torch.zeros_like(rows_all)], [y]
        next_out = torch.ones(batch, dtype=torch.long, device=device)
        if n_out == 1:
            status[:] = SUCCESS
            counts = {"n_steps": n_steps, "n_accepted": n_accepted, "n_rejected": n_steps.clone()}
            return self._assemble(batch, n_out, n, out_rows, out_cols, out_vals, y, status, t, counts)
        next_tau = times[:, 1].clone()  # each sample's next output time
        # options jump_t/step_t: every sample's steps end on its stops; at a jump_t the step's last
        # stages see func from inside the step and the derivative is evaluated again after it
        stops = sample_stops(opts.jump_t, opts.step_t, t, t_end, direction)
        hit = at_jump = None
        # the time f0 was evaluated at (just past a jump_t after one), for the quadrature's first stage
        t_f0 = t.clone() if stops is not None and stops.jumps is not None else None

        f0 = func(t, y)
        if opts.first_step is not None:
            h = torch.full((batch,), float(opts.first_step), dtype=torch.float64, device=device)
        elif carry is not None and carry.h is not None:
            h = carry.h.clone()
        else:
            h = initial_steps(func, t, y, f0, direction, tab.embedded_order, rtol, atol, norm, None)
        nonfinite = torch.zeros_like(n_steps)
        last_nonfinite = torch.zeros(batch, dtype=torch.bool, device=device)
        stages = _Stages(dtab.num_stages, y)
        run = status == RUNNING
        sense = _Sense(direction)
        bounded = opts.min_step > 0 or opts.max_step < math.inf
        had_nonfinite = False

        while True:
            if bounded:
                h = h.clamp(min=opts.min_step, max=opts.max_step)
            t1 = sense.advance(t, h)
            t1 = torch.where(sense.reached(t1, t_end), t_end, t1)  # end exactly on the last time
            if jump is not None:  # and on every output time, where the state jumps
                t1 = torch.where(sense.reached(t1, next_tau), next_tau, t1)
            if stops is not None:  # and on every stop
                t1, hit, at_jump = stops.at(t1, sense)
            dt = torch.where(run, t1 - t, 0.0)
            stuck = run & (t + dt == t)
            out_of_steps = run & (n_steps >= max_steps)
            if event is not None:
                out_of_steps = out_of_steps | (run & ~((t1.abs() < t_limit) & (dt.abs() < t_limit)))
            if bool((stuck | out_of_steps).any()):  # rare: fail those samples
                status = torch.where(stuck, torch.where(last_nonfinite, NON_FINITE, UNDERFLOW), status)
                status = torch.where(out_of_steps & ~stuck, MAX_STEPS, status)
                run = status == RUNNING
                dt = torch.where(run, dt, 0.0)
            if not bool(run.any()):
                break
            n_steps += run

            active = run.nonzero().flatten() if self.compact else None
            if active is not None and active.numel() == batch:
                active = None
            if active is None:
                y_a, t_a, dt_a, f0_a = y, t, dt, f0
            else:
                y_a, t_a, dt_a, f0_a = y[active], t[active], dt[active], f0[active]
            if active is not None and stages.buffer is not None and stages.buffer.shape[1] != active.numel():
                stages_a = _Stages(dtab.num_stages, y_a)
            else:
                stages_a = stages
            dt_col = dt_a.to(dtype)[:, None]
            ends_on_jump = None if at_jump is None or not bool(at_jump.any()) else _take1(at_jump, active)
            y1_a, inputs, stage_times = self.step(
                func, dtab, coeffs, stages_a, y_a, t_a, dt_a, f0_a, active, ends_on_jump
            )
            k_all = stages_a.first(dtab.num_stages)
            ratio_a = self._ratio(
                k_all, coeffs, y_a, y1_a, dt_col, _take1(rtol, active), _take1(atol, active), norm
            )
            if active is None:
                ratio, y1 = ratio_a, y1_a
            else:
                ratio = _scatter(torch.zeros_like(t), active, ratio_a)
                y1 = _scatter(y, active, y1_a)

            failed = None if newton is None else newton.failed  # rows whose Newton iteration failed
            if failed is not None:
                ratio = torch.where(failed, 2.0, ratio)

            # a non-finite ratio (NaN) fails "<= 1": the step is rejected and retried ten times shorter
            # (a running row's dt is never 0, so with min_step 0 the second test never passes a step)
            passed = ratio <= 1.0
            accept = run & (passed | (dt.abs() <= opts.min_step) if opts.min_step > 0 else passed)
            if failed is not None:  # rejected, retried 4x shorter; at min_step the row cannot go on
                accept = accept & ~failed
                if opts.min_step > 0:
                    status = torch.where(failed & (dt.abs() <= opts.min_step), UNDERFLOW, status)
            n_accepted += accept
            if record is not None and bool(accept.any()):
                if at_jump is None:
                    record.step(t, t1, accept, y, next_out)
                else:  # what a replay needs to treat the jumps as this solve does
                    record.step(t, t1, accept, y, next_out, accept & at_jump, t_f0)
            if quadrature is not None and bool(accept.any()):
                if t_f0 is not None:
                    stage_times[0] = _take1(t_f0, active)
                quadrature.add(dt_a, stage_times, inputs, _take1(accept, active))
            finite = torch.isfinite(ratio)
            if not bool(finite.all()):
                bad = run & ~finite
                nonfinite = torch.where(bad, nonfinite + 1, torch.where(run, 0, nonfinite))
                status = torch.where(nonfinite > _MAX_NONFINITE_RETRIES, NON_FINITE, status)
                last_nonfinite = torch.where(run, bad, last_nonfinite)
                ratio = torch.where(finite, ratio, 0.0)
                had_nonfinite = True
            else:
                bad = None
                if had_nonfinite:
                    nonfinite.zero_()
                    last_nonfinite.zero_()
                    had_nonfinite = False

            if bool(accept.any()):
                if dtab.fsal:
                    f1_a = stages_a.rows[-1]
                else:
                    f1_a = func(_take1(t1, active), y1_a, active)
                f1 = f1_a if active is None else _scatter(f0, active, f1_a)
                if event is not None:
                    found = event.crossed(t1, y1, accept)
                    if bool(found.any()):
                        y_tau = self._locate(
                            event, dtab, stages_a.rows, f1_a, y_a, y1, t, t1, dt, dt_a, found, active, func
                        )
                        rows = found.nonzero().flatten()
                        out_rows.append(rows)
                        out_cols.append(torch.ones_like(rows))
                        out_vals.append(y_tau[rows])
                        status = torch.where(found, SUCCESS, status)
                emit = accept & sense.reached(t1, next_tau)
                landed_on = next_out  # with ``jump``, the output time each emitting row landed on
                if event is None and bool(emit.any()):
                    next_out, next_tau = self._emit(
                        dtab, stages_a.rows, f1_a, y_a, y1, t, t1, dt, dt_a, accept, active, times,
                        next_out, sense, out_rows, out_cols, out_vals, func,
                    )  # fmt: skip
                    status = torch.where(accept & (next_out >= n_out), SUCCESS, status)
                    if jump is not None:
                        jumped = emit & (next_out < n_out)  # the last output ends the solve: no jump
                        if bool(jumped.any()):
                            y1 = jump(y1, jumped, landed_on)
                            f_new = func(_take1(t1, active), _take1(y1, active), active)
                            f_new = f_new if active is None else _scatter(f1, active, f_new)
                            f1 = torch.where(jumped[:, None], f_new, f1)  # the derivative after the jump
                if stops is not None:
                    stops.next = stops.next + (accept & hit)
                    if at_jump is not None:  # the derivative after the discontinuity, from outside
                        f1, f1_time = self.after_jumps(func, t1, y1, f1, accept & at_jump, direction)
                        t_f0 = torch.where(accept, f1_time, t_f0)
                acc_col = accept[:, None]
                y = torch.where(acc_col, y1, y)
                f0 = torch.where(acc_col, f1, f0)
                t = torch.where(accept, t1, t)
            h_next = controller.next_step(dt.abs(), ratio, accept)
            if newton is not None:
                newton.accepted(accept)
                if failed is not None:
                    h_next = torch.where(failed, dt.abs() * FAILED_SHRINK, h_next)
            if bad is not None:
                h_next = torch.where(bad, dt.abs() * 0.1, h_next)
            else:  # a rejected step a few ULPs long that cannot shrink any more
                cannot_shrink = run & ~accept & (sense.advance(t, h_next) == t1)
                if bool(cannot_shrink.any()):
                    status = torch.where(cannot_shrink & (status == RUNNING), UNDERFLOW, status)
            h = torch.where(run, h_next, h)
            run = status == RUNNING

        counts = {"n_steps": n_steps, "n_accepted": n_accepted, "n_rejected": n_steps - n_accepted}
        if newton is not None:
            counts.update(newton.counts())
        if carry is not None:
            carry.h = h
        if event is not None:
            t = torch.where(torch.isnan(event.tau), t, event.tau)
        return self._assemble(batch, n_out, n, out_rows, out_cols, out_vals, y, status, t, counts)

    def device_tableaux(self, problem: SampleProblem) -> tuple[DeviceTableau, _Coefficients]:
        """The tableau on the solve's device, and its weights as the per-sample steps use them (with
        an implicit method's per-solve Newton state as ``newton``), made once per solve."""
        y = problem.y0
        return DeviceTableau(self.tableau, y.dtype, y.device), _Coefficients(self.tableau, y.dtype, y.device)

    def _locate(
        self, event, dtab, stages, f1_a, y_a, y1, t, t1, dt, dt_a, found, active, func
    ) -> Tensor:  # fmt: skip
        """Locate the event of every ``found`` row inside its step (t, t1] on the step's dense output
        (bisection without a graph); store the times in ``event`` and return y there (with the graph)."""
        ext = self._dense_stages(dtab, stages, f1_a, y_a, t, dt_a, active, func)
        dt_rows = _take1(dt, active)

        def interp(tau: Tensor) -> Tensor:
            theta = torch.where(dt != 0, (tau - t) / torch.where(dt != 0, dt, 1.0), 0.0)
            dense = self._dense_eval(dtab, y_a, ext, dt_rows, _take1(theta, active))
            if active is not None:
                dense = _scatter(y1, active, dense)
            return torch.where((tau == t1)[:, None], y1, dense)

        tau, k = event.locate(interp, t, t1, found)
        event.tau = torch.where(found, tau, event.tau)
        event.k = torch.where(found, k, event.k)
        return interp(tau)

    def after_jumps(
        self, func, t1: Tensor, y1: Tensor, f1: Tensor, jumped: Tensor, direction: Tensor
    ) -> tuple[Tensor, Tensor]:
        """f1 with the ``jumped`` rows' derivative evaluated again just past their step's end (a jump_t),
        and the times f1 was evaluated at; with ``compact`` on those rows only."""
        if not bool(jumped.any()):
            return f1, t1
        after = _nudged(t1, f1.dtype, direction * math.inf)
        if self.compact:
            rows = jumped.nonzero().flatten()
            f1 = _scatter(f1, rows, func(after[rows], y1[rows], rows))
        else:
            f1 = torch.where(jumped[:, None], func(after, y1, None), f1)
        return f1, torch.where(jumped, after, t1)

    @staticmethod
    def step(
        func, dtab, coeffs, stages: _Stages, y, t, dt, f0, active, ends_on_jump: Tensor | None = None
    ) -> tuple[Tensor, list, list]:
        """One step of the tableau for every row (dt (B,) float64, 0 for a row that stays): fills
        ``stages``; returns y1 and the stage inputs and times. ``ends_on_jump`` ((B,) bool): those
        rows' stages at c = 1 are evaluated just inside the step (func is discontinuous at its end)."""
        dt_col = dt if dt.dtype == y.dtype else dt.to(y.dtype)
        dt_col = dt_col[:, None]
        stages.reset(f0)
        inputs = [y]
        stage_times = list((t + coeffs.c * dt).unbind(0))  # (stages, B) in two operations
        stage_times[0] = t
        if ends_on_jump is not None:
            inward = torch.sign(dt) * math.inf
            for i in range(1, dtab.num_stages):
                if float(dtab.c[i]) == 1.0:
                    nudged = _nudged(stage_times[i], y.dtype, -inward)
                    stage_times[i] = torch.where(ends_on_jump, nudged, stage_times[i])
        for i in range(1, dtab.num_stages):
            yi = y + _weighted(stages.first(i), coeffs.a[i]) * dt_col
            inputs.append(yi)
            stages.append(func(stage_times[i], yi, active))
        y1 = yi if dtab.fsal else y + _weighted(stages.first(dtab.num_stages), coeffs.b) * dt_col
        return y1, inputs, stage_times

    def _ratio(
        self, stages: Tensor, coeffs: _Coefficients, y, y1, dt_col, rtol, atol, norm: RowNorm
    ) -> Tensor:
        """The per-sample error ratio (B,), float64; NaN where the step is not finite."""
        with torch.no_grad():
            if stages.requires_grad or y1.requires_grad or y.requires_grad:
                stages, y, y1 = stages.detach(), y.detach(), y1.detach()
            scale = torch.maximum(y.abs(), y1.abs()) * rtol + atol
            err = _weighted(stages, coeffs.b_err) * dt_col / scale
            if coeffs.b_err_secondary is None:
                ratio = norm(err)
            else:  # DOP853's blend of its 5th- and 3rd-order estimates, per member, then the maximum
                err3 = _weighted(stages, coeffs.b_err_secondary) * dt_col / scale
                n5, n3 = norm.per_member(err), norm.per_member(err3)
                denom = torch.sqrt(n5 * n5 + 0.01 * n3 * n3)
                ratio = torch.where(denom == 0, torch.zeros_like(denom), n5 * n5 / denom).amax(dim=0)
            # a non-finite state with a finite error estimate (inf - inf) must not pass the test
            return torch.where(torch.isfinite(y1).all(dim=1), ratio, math.nan)

    def _emit(
        self, dtab, stages, f1_a, y_a, y1, t, t1, dt, dt_a, accept, active, times, next_out, direction,
        out_rows, out_cols, out_vals, func,
    ) -> Tensor:  # fmt: skip
        """Record the outputs inside each accepted step (t, t1]; returns the next output index and time.

        Every (sample, output) pair inside its step is evaluated at once, on the pairs' rows only: one
        dense evaluation however many outputs a step covers."""
        batch, n_out = times.shape
        sense = direction if isinstance(direction, _Sense) else _Sense(direction)
        # the (sample, output) pairs inside the steps, a round per output a step passes (mostly one):
        # operations on (B,) tensors, not on the whole (B, T) grid of output times
        pair_rows, pair_cols, pair_tau = [], [], []
        col = next_out
        while True:
            clamped = col.clamp(max=n_out - 1)
            tau = times.gather(1, clamped[:, None]).squeeze(1)
            inside = accept & (col < n_out) & sense.reached(t1, tau)
            if not bool(inside.any()):
                break
            rows = inside.nonzero().flatten()
            pair_rows.append(rows)
            pair_cols.append(clamped.index_select(0, rows))
            pair_tau.append(tau.index_select(0, rows))
            col = col + inside
        next_tau = tau
        if not pair_rows:
            return col, next_tau
        one = len(pair_rows) == 1
        rows_p = pair_rows[0] if one else torch.cat(pair_rows)
        cols_p = pair_cols[0] if one else torch.cat(pair_cols)
        tau = pair_tau[0] if one else torch.cat(pair_tau)
        exact = tau == t1.index_select(0, rows_p)
        values = y1.index_select(0, rows_p)
        if not bool(exact.all()):
            ext = torch.stack(self._dense_stages(dtab, stages, f1_a, y_a, t, dt_a, active, func))
            if active is None:
                at = rows_p
            else:  # the pairs' positions among the active rows the stages were computed on
                position = torch.full((batch,), -1, dtype=torch.long, device=times.device)
                position[active] = torch.arange(active.numel(), device=times.device)
                at = position[rows_p]
            dt_p = dt.index_select(0, rows_p)
            t_p = t.index_select(0, rows_p)
            theta = torch.where(dt_p != 0, (tau - t_p) / torch.where(dt_p != 0, dt_p, 1.0), 0.0)
            dense = self._dense_eval(dtab, y_a.index_select(0, at), ext.index_select(1, at), dt_p, theta)
            values = torch.where(exact[:, None], values, dense)
        out_rows.append(rows_p)
        out_cols.append(cols_p)
        out_vals.append(values)
        return col, next_tau

    def _dense_stages(self, dtab, stages, f1_a, y_a, t, dt_a, active, func) -> list[Tensor]:
        """K, then f(t1, y1) unless FSAL, then the interpolant's extra stages."""
        ext = list(stages) if dtab.fsal else [*stages, f1_a]
        t_a = _take1(t, active)
        dt_col = dt_a.to(y_a.dtype)[:, None]
        for c, a in zip(dtab.extra_c, self.tableau.dense.extra_a, strict=True):
            ext.append(func(t_a + c * dt_a, _combine(y_a, dt_col, ext, a), active))
        return ext

    @staticmethod
    def _dense_eval(dtab, y, ext, dt, theta) -> Tensor:
        """y + dt * sum_i b_i(theta) k_i, per sample (theta, dt float64 (B,)); every reduction is within
        one sample's entries, so a row's value does not depend on the rest of the batch."""
        powers = theta[:, None].expand(-1, dtab.dense_degree).cumprod(dim=1)  # theta, theta^2, ...
        weights = getattr(dtab, "dense_weights_f64", None)
        if weights is None:  # (stages, degree), made once per solve
            weights = torch.tensor(dtab.dense_rows, dtype=torch.float64, device=y.device)
            dtab.dense_weights_f64 = weights
        w = (powers[:, None, :] * weights[None]).sum(dim=2) * dt[:, None]  # (B, stages)
        stacked = ext if isinstance(ext, Tensor) else torch.stack(ext)  # (stages, B, N)
        return y + (stacked * w.t().to(y.dtype)[:, :, None]).sum(dim=0)

    @staticmethod
    def _assemble(batch, n_out, n, out_rows, out_cols, out_vals, y, status, t, counts):
        rows, cols, vals = torch.cat(out_rows), torch.cat(out_cols), torch.cat(out_vals)
        ys = torch.full((batch, n_out, n), math.nan, dtype=y.dtype, device=y.device)
        ys = ys.index_put((rows, cols), vals)
        return ys, status, t, counts


def _take1(x: Tensor, rows: Tensor | None) -> Tensor:
    return x if rows is None else x[rows]


def _scatter(base: Tensor, rows: Tensor, values: Tensor) -> Tensor:
    return base.index_put((rows,), values)
