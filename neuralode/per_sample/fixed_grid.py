"""The per-sample fixed-grid engine: explicit Runge-Kutta on each sample's own grid (its row of output
times, or a uniform grid of ``step_size`` from its first to its last time), all samples stepped together.

Grids of different lengths are padded with zero-length steps, which leave a state exactly as it was.
Output times between grid points are filled by linear interpolation, as in the joint engine. The same
march serves the adjoint's backward solve (each sample's forward grid reversed, cut at its output times,
where the state jumps) and odeint_checkpoint's replay of a piece of the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..solvers.fixed_grid import uniform_grid
from ..solvers.options import FixedGridOptions, resolve_max_num_steps
from ..solvers.tableau import ButcherTableau
from .engine import _combine
from .events import SampleEvent
from .outcome import MAX_STEPS, NON_FINITE, RUNNING, SUCCESS
from .problem import SampleFunc, SampleProblem


@dataclass
class _Outputs:
    """The (row, column, value) triples of the outputs emitted so far."""

    rows: list[Tensor] = field(default_factory=list)
    cols: list[Tensor] = field(default_factory=list)
    vals: list[Tensor] = field(default_factory=list)


class GridRecord:
    """odeint_checkpoint: the grid of a forward solve and the state at every ``every``-th grid step."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.grid: Tensor | None = None
        self.states: list[tuple[Tensor, Tensor]] = []  # (y (B, N), next output index (B,)) per piece
        self.n_steps: Tensor | None = None

    def replay(
        self,
        engine: SampleGridSolver,
        func: SampleFunc,
        y: Tensor,
        next_out: Tensor,
        piece: int,
        times: Tensor,
    ) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
        """Take piece ``piece``'s grid steps from state y (with autograd); returns the end state and the
        outputs emitted on the way (rows, columns, values)."""
        assert self.grid is not None
        start = piece * self.every
        stop = min(start + self.every, self.grid.shape[1] - 1)
        outs = _Outputs()
        y, _ = engine.march(func, y, self.grid, times, next_out, range(start, stop), outs)
        return y, outs.rows, outs.cols, outs.vals

    def replayed_steps(self) -> Tensor | None:
        return self.n_steps


class SampleGridSolver:
    """Steps a fixed-grid explicit tableau on every sample's own grid."""

    def __init__(self, tableau: ButcherTableau, options: FixedGridOptions) -> None:
        for name, default in (("grid_constructor", None), ("perturb", False)):
            if getattr(options, name) != default:
                raise ValueError(
                    f"per_sample=True does not support options[{name!r}] with fixed-grid methods"
                )
        self.tableau, self.options = tableau, options
        self.max_steps = resolve_max_num_steps(options.max_num_steps, event=False)

    def grids(self, times: Tensor, cut: bool = False) -> Tensor:
        """(B, M + 1) grid times, each row padded with its last time.

        ``cut`` (the adjoint's backward solve, whose times are the forward ones reversed): the forward
        grid (uniform from the forward start, times[:, -1]) reversed, with every output time added."""
        step = self.options.step_size
        if step is None:
            return times
        rows = []
        for r in times.tolist():
            if not cut:
                rows.append(uniform_grid(r[0], r[-1], step, self.max_steps))
                continue
            forward = uniform_grid(r[-1], r[0], step, self.max_steps)
            rows.append(sorted(set(forward) | set(r), reverse=r[-1] < r[0]))
        width = max(len(r) for r in rows)
        padded = [r + [r[-1]] * (width - len(r)) for r in rows]
        return torch.tensor(padded, dtype=torch.float64, device=times.device)

    def integrate(
        self,
        problem: SampleProblem,
        quadrature=None,
        record: GridRecord | None = None,
        carry=None,
        jump=None,
        event: SampleEvent | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Solve; returns (ys (B, T, N), status (B,), t reached (B,), per-sample counts).

        ``quadrature``, ``jump``: as for :meth:`SampleRKSolver.integrate` (the adjoint's backward solve;
        with ``jump`` the grid is cut at every output time). ``record``: a :class:`GridRecord` that
        keeps the grid and the state at the start of every piece. ``carry`` is not used (a fixed grid
        has no step size to carry). ``event``: as for :meth:`SampleRKSolver.integrate`, on each
        sample's unbounded grid of ``step_size`` (see :meth:`until_event`)."""
        if event is not None:
            return self.until_event(problem, event)
        func, y = problem.func, problem.y0
        times = problem.times
        batch, n_out = times.shape
        grid = self.grids(times, cut=jump is not None)
        rows_all = torch.arange(batch, device=y.device)
        outs = _Outputs([rows_all], [torch.zeros_like(rows_all)], [y])
        next_out = torch.ones(batch, dtype=torch.long, device=y.device)
        n_steps = (grid.diff(dim=1) != 0).sum(dim=1) if grid.shape[1] > 1 else torch.zeros_like(rows_all)
        if record is not None:
            record.grid, record.n_steps = grid, n_steps
        y, _ = self.march(
            func, y, grid, times, next_out, range(grid.shape[1] - 1), outs, quadrature, jump, record
        )
        result = torch.full((batch, n_out, y.shape[1]), math.nan, dtype=y.dtype, device=y.device)
        result = result.index_put((torch.cat(outs.rows), torch.cat(outs.cols)), torch.cat(outs.vals))
        finite = torch.isfinite(result.detach()).all(dim=2).all(dim=1)
        status = torch.where(finite, SUCCESS, NON_FINITE)
        counts = {"n_steps": n_steps, "n_accepted": n_steps.clone(), "n_rejected": torch.zeros_like(n_steps)}
        t_reached = torch.where(finite, times[:, -1], times[:, 0])
        return result, status, t_reached, counts

    def march(
        self, func, y: Tensor, grid: Tensor, times: Tensor, next_out: Tensor, steps: range, outs: _Outputs,
        quadrature=None, jump=None, record: GridRecord | None = None,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Take grid steps ``steps`` (columns k -> k + 1) from y, emitting into ``outs``; returns the
        end state and the next output index."""
        n_out = times.shape[1]
        direction = torch.sign(times[:, -1] - times[:, 0]) if n_out > 1 else torch.ones_like(times[:, 0])
        for k in steps:
            if record is not None and k % record.every == 0:
                record.states.append((y.detach().clone(), next_out.clone()))
            t, t1 = grid[:, k], grid[:, k + 1]
            dt = t1 - t
            y1, stages, inputs, stage_times = self.step(func, t, dt, y)
            moving = dt != 0
            if quadrature is not None:
                quadrature.add(dt, stage_times, inputs, moving)
            f1 = None
            while True:
                col = next_out.clamp(max=n_out - 1)
                tau = times.gather(1, col[:, None]).squeeze(1)
                emit = moving & (next_out < n_out) & (direction * (tau - t1) <= 0)
                if not bool(emit.any()):
                    break
                theta = torch.where(moving, (tau - t) / torch.where(moving, dt, 1.0), 1.0)
                if f1 is None and self.options.interp == "cubic" and not bool((theta[emit] == 1.0).all()):
                    f1 = func(t1, y1)
                values = self.interpolate(y, y1, stages[0], f1, dt, theta)
                rows = emit.nonzero().flatten()
                outs.rows.append(rows)
                outs.cols.append(col[rows])
                outs.vals.append(values[rows])
                next_out = next_out + emit
                if jump is not None:  # the grid is cut at every output time: at most one per step
                    jumped = emit & (next_out < n_out)  # the last output ends the solve: no jump
                    if bool(jumped.any()):
                        y1 = jump(y1, jumped, col)
                    break
            y = y1
        return y, next_out

    def step(self, func, t: Tensor, dt: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor], list, list]:
        """One step of the tableau for every row (dt (B,) float64, 0 for a row that stays); returns y1,
        the stages, and the stage inputs and times."""
        tab = self.tableau
        dt_col = dt.to(y.dtype)[:, None]
        stages = [func(t, y)]
        inputs, stage_times = [y], [t]
        for i in range(1, tab.num_stages):
            stage_times.append(t + tab.c[i] * dt)
            inputs.append(_combine(y, dt_col, stages, tab.a[i]))
            stages.append(func(stage_times[-1], inputs[-1]))
        return _combine(y, dt_col, stages, tab.b), stages, inputs, stage_times

    def interpolate(
        self, y: Tensor, y1: Tensor, f0: Tensor, f1: Tensor | None, dt: Tensor, theta: Tensor
    ) -> Tensor:
        """y at fraction theta (B,) of each row's step: y1 itself at theta = 1, else linear, or cubic
        Hermite from f at both ends (``f1`` given) as in the joint engine."""
        if self.options.interp == "cubic" and f1 is not None:
            t2, t3 = theta * theta, theta**3
            w = torch.stack([-2 * t3 + 3 * t2, dt * (t3 - 2 * t2 + theta), dt * (t3 - t2)], dim=1).to(y.dtype)
            inside = y + (y1 - y) * w[:, :1] + f0 * w[:, 1:2] + f1 * w[:, 2:]
        else:
            inside = torch.lerp(y, y1, theta.to(y.dtype)[:, None])
        return torch.where((theta == 1.0)[:, None], y1, inside)

    def until_event(self, problem: SampleProblem, event: SampleEvent) -> tuple[Tensor, Tensor, Tensor, dict]:
        """Step every sample on its own grid t0 + direction * step_size * k (the joint event grid) until
        its event crosses zero at a grid point, then locate the crossing inside that step on the
        interpolant (bisection without a graph); ys is (B, 2, N) = [y0, y(event time)]."""
        func, y = problem.func, problem.y0
        batch, n = y.shape
        device, dtype = y.device, y.dtype
        direction = problem.direction
        t0 = problem.times[:, 0]
        h = float(self.options.step_size)
        max_steps = resolve_max_num_steps(self.options.max_num_steps, event=True)
        limit = torch.finfo(dtype).max  # times stay representable in the state's dtype
        event.start(t0, y)
        event.tau = torch.full((batch,), math.nan, dtype=torch.float64, device=device)
        event.k = torch.zeros(batch, dtype=torch.long, device=device)
        status = torch.full((batch,), RUNNING, dtype=torch.long, device=device)
        n_steps = torch.zeros(batch, dtype=torch.long, device=device)
        rows_all = torch.arange(batch, device=device)
        outs = _Outputs([rows_all], [torch.zeros_like(rows_all)], [y])
        t, i = t0.clone(), 0
        run = status == RUNNING
        while bool(run.any()):
            i += 1
            t1 = t0 + direction * h * i
            out_of_steps = run & ((n_steps >= max_steps) | ~(t1.abs() < limit))
            if bool(out_of_steps.any()):
                status = torch.where(out_of_steps, MAX_STEPS, status)
                run = status == RUNNING
                if not bool(run.any()):
                    break
            t1 = torch.where(run, t1, t)
            dt = t1 - t
            y1, stages, _, _ = self.step(func, t, dt, y)
            n_steps += run
            finite = torch.isfinite(y1).all(dim=1)
            if not bool(finite[run].all()):
                status = torch.where(run & ~finite, NON_FINITE, status)
                run = status == RUNNING
            found = event.crossed(t1, y1, run)
            if bool(found.any()):
                f1 = func(t1, y1) if self.options.interp == "cubic" else None

                def interp(tau: Tensor, t=t, dt=dt, y=y, y1=y1, f0=stages[0], f1=f1) -> Tensor:
                    theta = torch.where(dt != 0, (tau - t) / torch.where(dt != 0, dt, 1.0), 1.0)
                    return self.interpolate(y, y1, f0, f1, dt, theta)

                tau, k = event.locate(interp, t, t1, found)
                event.tau = torch.where(found, tau, event.tau)
                event.k = torch.where(found, k, event.k)
                rows = found.nonzero().flatten()
                outs.rows.append(rows)
                outs.cols.append(torch.ones_like(rows))
                outs.vals.append(interp(tau)[rows])
                status = torch.where(found, SUCCESS, status)
                run = status == RUNNING
            y = torch.where(run[:, None], y1, y)
            t = torch.where(run, t1, t)
        ys = torch.full((batch, 2, n), math.nan, dtype=dtype, device=device)
        ys = ys.index_put((torch.cat(outs.rows), torch.cat(outs.cols)), torch.cat(outs.vals))
        counts = {"n_steps": n_steps, "n_accepted": n_steps.clone(), "n_rejected": torch.zeros_like(n_steps)}
        return ys, status, torch.where(torch.isnan(event.tau), t, event.tau), counts
