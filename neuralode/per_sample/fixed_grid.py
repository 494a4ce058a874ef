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
from .outcome import NON_FINITE, SUCCESS
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
        for name, default in (("grid_constructor", None), ("perturb", False), ("interp", "linear")):
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
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Solve; returns (ys (B, T, N), status (B,), t reached (B,), per-sample counts).

        ``quadrature``, ``jump``: as for :meth:`SampleRKSolver.integrate` (the adjoint's backward solve;
        with ``jump`` the grid is cut at every output time). ``record``: a :class:`GridRecord` that
        keeps the grid and the state at the start of every piece. ``carry`` is not used (a fixed grid
        has no step size to carry)."""
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
        tab = self.tableau
        n_out = times.shape[1]
        direction = torch.sign(times[:, -1] - times[:, 0]) if n_out > 1 else torch.ones_like(times[:, 0])
        for k in steps:
            if record is not None and k % record.every == 0:
                record.states.append((y.detach().clone(), next_out.clone()))
            t, t1 = grid[:, k], grid[:, k + 1]
            dt = t1 - t
            dt_col = dt.to(y.dtype)[:, None]
            stages = [func(t, y)]
            inputs, stage_times = [y], [t]
            for i in range(1, tab.num_stages):
                stage_times.append(t + tab.c[i] * dt)
                inputs.append(_combine(y, dt_col, stages, tab.a[i]))
                stages.append(func(stage_times[-1], inputs[-1]))
            y1 = _combine(y, dt_col, stages, tab.b)
            moving = dt != 0
            if quadrature is not None:
                quadrature.add(dt, stage_times, inputs, moving)
            while True:
                col = next_out.clamp(max=n_out - 1)
                tau = times.gather(1, col[:, None]).squeeze(1)
                emit = moving & (next_out < n_out) & (direction * (tau - t1) <= 0)
                if not bool(emit.any()):
                    break
                theta = torch.where(moving, (tau - t) / torch.where(moving, dt, 1.0), 1.0)
                values = torch.where(
                    (theta == 1.0)[:, None], y1, torch.lerp(y, y1, theta.to(y.dtype)[:, None])
                )
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
