"""The per-sample adaptive Runge-Kutta engine: each sample of a batch with its own step size, error
test, accept/reject, output times and outcome; all running samples step together, one func call per
stage.

Every operation is elementwise or a reduction within one sample's row (stage sums are written out as
products and sums, not matrix products, whose rounding can depend on a row's position), so a
sample's steps and answer do not depend on which other samples share its batch. Finished and failed
samples take zero-length steps (their state is left exactly as it was); with ``compact`` func is
called on the running rows only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..solvers.options import AdaptiveOptions, resolve_max_num_steps
from ..solvers.runge_kutta import DeviceTableau
from ..solvers.tableau import ButcherTableau
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
        integral = torch.where(ratio == 0, torch.full_like(factor, self.ifactor), integral)
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


class SampleRKSolver:
    """Steps an embedded explicit tableau per sample; see the module docstring."""

    def __init__(self, tableau: ButcherTableau, options: AdaptiveOptions, compact: bool = False) -> None:
        self.tableau, self.options, self.compact = tableau, options, compact
        self.max_steps = resolve_max_num_steps(options.max_num_steps, event=False)

    def integrate(self, problem: SampleProblem) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Solve; returns (ys (B, T, N), status (B,), t reached (B,), per-sample counts)."""
        opts, tab = self.options, self.tableau
        func, y = problem.func, problem.y0
        batch, n = y.shape
        dtype, device = y.dtype, y.device
        dtab = DeviceTableau(tab, dtype, device)
        times, n_out = problem.times, problem.times.shape[1]
        direction = problem.direction
        t = times[:, 0].clone()
        t_end = times[:, -1]
        rtol, atol = problem.rtol, problem.atol
        norm = RowNorm(problem.segments)
        max_steps = self.max_steps
        controller = SampleController(opts, tab.embedded_order + 1, batch, device)
        status = torch.full((batch,), RUNNING, dtype=torch.long, device=device)
        zeros = torch.zeros(batch, dtype=torch.long, device=device)
        counts = {"n_steps": zeros.clone(), "n_accepted": zeros.clone(), "n_rejected": zeros.clone()}
        nonfinite = zeros.clone()
        rows_all = torch.arange(batch, device=device)
        out_rows, out_cols, out_vals = [rows_all], [zeros.clone()], [y]
        next_out = torch.ones(batch, dtype=torch.long, device=device)
        if n_out == 1:
            status[:] = SUCCESS
            return self._assemble(batch, n_out, n, out_rows, out_cols, out_vals, y, status, t, counts)

        f0 = func(t, y)
        if opts.first_step is not None:
            h = torch.full((batch,), float(opts.first_step), dtype=torch.float64, device=device)
        else:
            h = initial_steps(func, t, y, f0, direction, tab.embedded_order, rtol, atol, norm, None)
        c = dtab.c
        last_nonfinite = torch.zeros(batch, dtype=torch.bool, device=device)

        while True:
            run = status == RUNNING
            h = h.clamp(min=opts.min_step, max=opts.max_step)
            t1 = t + direction * h
            t1 = torch.where(direction * (t1 - t_end) >= 0, t_end, t1)  # end exactly on the last time
            dt = torch.where(run, t1 - t, torch.zeros_like(t))
            stuck = run & ((t1 == t) | (t + dt == t))
            status = torch.where(stuck & last_nonfinite, NON_FINITE, status)
            status = torch.where(stuck & ~last_nonfinite, UNDERFLOW, status)
            status = torch.where(run & ~stuck & (counts["n_steps"] >= max_steps), MAX_STEPS, status)
            run = status == RUNNING
            if not bool(run.any()):
                break
            dt = torch.where(run, dt, torch.zeros_like(dt))
            counts["n_steps"] += run

            active = run.nonzero().flatten() if self.compact else None
            if active is not None and active.numel() == batch:
                active = None
            y_a, t_a, dt_a, f0_a = _take((y, t, dt, f0), active)
            dt_col = dt_a.to(dtype)[:, None]
            stages = [f0_a]
            for i in range(1, dtab.num_stages):
                yi = _combine(y_a, dt_col, stages, tab.a[i])
                stages.append(func(t_a + c[i] * dt_a, yi, active))
            y1_a = yi if dtab.fsal else _combine(y_a, dt_col, stages, tab.b)
            ratio_a = self._ratio(
                stages, y_a, y1_a, dt_a, dt_col, _take1(rtol, active), _take1(atol, active), norm
            )
            ratio = ratio_a if active is None else _scatter(torch.full_like(t, 0.0), active, ratio_a)
            y1 = y1_a if active is None else _scatter(y.clone(), active, y1_a)

            finite = torch.isfinite(ratio)
            accept = run & finite & ((ratio <= 1.0) | (dt.abs() <= opts.min_step))
            reject = run & ~accept
            counts["n_accepted"] += accept
            counts["n_rejected"] += reject
            bad = run & ~finite
            nonfinite = torch.where(bad, nonfinite + 1, torch.where(run, 0, nonfinite))
            status = torch.where(nonfinite > _MAX_NONFINITE_RETRIES, NON_FINITE, status)
            last_nonfinite = torch.where(run, bad, last_nonfinite)

            if bool(accept.any()):
                if dtab.fsal:
                    f1_a = stages[-1]
                    f1 = f1_a if active is None else _scatter(f0.clone(), active, f1_a)
                else:
                    f1_a = func(_take1(t1, active), y1_a, active)
                    f1 = f1_a if active is None else _scatter(f0.clone(), active, f1_a)
                next_out = self._emit(
                    dtab, stages, f1_a, y_a, y1, t, t1, dt, dt_a, accept, active, times, next_out,
                    direction, out_rows, out_cols, out_vals, func,
                )  # fmt: skip
                acc_col = accept[:, None]
                y = torch.where(acc_col, y1, y)
                f0 = torch.where(acc_col, f1, f0)
                t = torch.where(accept, t1, t)
                status = torch.where(accept & (next_out >= n_out), SUCCESS, status)
            h_next = controller.next_step(dt.abs(), torch.where(finite, ratio, 0.0), accept)
            h_next = torch.where(bad, dt.abs() * 0.1, h_next)
            # a rejected step a few ULPs long that cannot shrink any more
            cannot_shrink = reject & finite & (t + direction * h_next == t1)
            status = torch.where(cannot_shrink & (status == RUNNING), UNDERFLOW, status)
            h = torch.where(run, h_next, h)

        return self._assemble(batch, n_out, n, out_rows, out_cols, out_vals, y, status, t, counts)

    def _ratio(self, stages, y, y1, dt, dt_col, rtol, atol, norm: RowNorm) -> Tensor:
        """The per-sample error ratio (B,), float64; NaN/inf where the step is not finite."""
        tab = self.tableau
        with torch.no_grad():
            ks = [k.detach() for k in stages]
            scale = torch.maximum(y.detach().abs(), y1.detach().abs()) * rtol + atol
            err = _combine(torch.zeros_like(y1), dt_col, ks, tab.b_err) / scale
            if tab.b_err_secondary is None:
                ratio = norm(err)
            else:  # DOP853's blend of its 5th- and 3rd-order estimates, per member, then the maximum
                err3 = _combine(torch.zeros_like(y1), dt_col, ks, tab.b_err_secondary) / scale
                n5, n3 = norm.per_member(err), norm.per_member(err3)
                denom = torch.sqrt(n5 * n5 + 0.01 * n3 * n3)
                ratio = torch.where(denom == 0, torch.zeros_like(denom), n5 * n5 / denom).amax(dim=0)
            finite_state = torch.isfinite(y1.detach()).all(dim=1)
            return torch.where(finite_state, ratio, torch.full_like(ratio, math.nan))

    def _emit(
        self, dtab, stages, f1_a, y_a, y1, t, t1, dt, dt_a, accept, active, times, next_out, direction,
        out_rows, out_cols, out_vals, func,
    ) -> Tensor:  # fmt: skip
        """Record the outputs inside each accepted step (t, t1]; returns the next output index."""
        n_out = times.shape[1]
        ext = None
        while True:
            col = next_out.clamp(max=n_out - 1)
            tau = times.gather(1, col[:, None]).squeeze(1)
            emit = accept & (next_out < n_out) & (direction * (tau - t1) <= 0)
            if not bool(emit.any()):
                return next_out
            exact = tau == t1
            values = y1
            if bool((emit & ~exact).any()):
                if ext is None:
                    ext = self._dense_stages(dtab, stages, f1_a, y_a, t, dt_a, active, func)
                theta = torch.where(dt != 0, (tau - t) / torch.where(dt != 0, dt, 1.0), 0.0)
                dense = self._dense_eval(dtab, y_a, ext, _take1(dt, active), _take1(theta, active))
                if active is not None:
                    dense = _scatter(y1.clone(), active, dense)
                values = torch.where(exact[:, None], y1, dense)
            rows = emit.nonzero().flatten()
            out_rows.append(rows)
            out_cols.append(col[rows])
            out_vals.append(values[rows])
            next_out = next_out + emit

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
        """y + dt * sum_i b_i(theta) k_i, per sample (theta, dt float64 (B,))."""
        powers, p = [], theta.clone()
        for _ in range(dtab.dense_degree):
            powers.append(p)
            p = p * theta
        acc = None
        for k, row in zip(ext, dtab.dense_rows, strict=True):
            w = None
            for coeff, power in zip(row, powers, strict=True):
                if coeff != 0.0:
                    w = power * coeff if w is None else w + power * coeff
            if w is None:
                continue
            term = k * (w * dt).to(y.dtype)[:, None]
            acc = term if acc is None else acc + term
        return y if acc is None else y + acc

    @staticmethod
    def _assemble(batch, n_out, n, out_rows, out_cols, out_vals, y, status, t, counts):
        rows, cols, vals = torch.cat(out_rows), torch.cat(out_cols), torch.cat(out_vals)
        ys = torch.full((batch, n_out, n), math.nan, dtype=y.dtype, device=y.device)
        ys = ys.index_put((rows, cols), vals)
        return ys, status, t, counts


def _take(tensors, rows):
    if rows is None:
        return tensors
    return tuple(x[rows] for x in tensors)


def _take1(x: Tensor, rows: Tensor | None) -> Tensor:
    return x if rows is None else x[rows]


def _scatter(base: Tensor, rows: Tensor, values: Tensor) -> Tensor:
    return base.index_put((rows,), values)
