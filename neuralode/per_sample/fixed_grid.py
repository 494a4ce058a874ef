"""The per-sample fixed-grid engine: explicit Runge-Kutta on each sample's own grid (its row of output
times, or a uniform grid of ``step_size`` from its first to its last time), all samples stepped together.

Grids of different lengths are padded with zero-length steps, which leave a state exactly as it was.
Output times between grid points are filled by linear interpolation, as in the joint engine.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..solvers.fixed_grid import uniform_grid
from ..solvers.options import FixedGridOptions, resolve_max_num_steps
from ..solvers.tableau import ButcherTableau
from .engine import _combine
from .outcome import NON_FINITE, SUCCESS
from .problem import SampleProblem


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

    def grids(self, times: Tensor) -> Tensor:
        """(B, M + 1) grid times, each row padded with its last time."""
        step = self.options.step_size
        if step is None:
            return times
        rows = [uniform_grid(r[0], r[-1], step, self.max_steps) for r in times.tolist()]
        width = max(len(r) for r in rows)
        padded = [r + [r[-1]] * (width - len(r)) for r in rows]
        return torch.tensor(padded, dtype=torch.float64, device=times.device)

    def integrate(self, problem: SampleProblem) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Solve; returns (ys (B, T, N), status (B,), t reached (B,), per-sample counts)."""
        tab, func, y = self.tableau, problem.func, problem.y0
        times = problem.times
        batch, n_out = times.shape
        grid = self.grids(times)
        direction = problem.direction
        rows_all = torch.arange(batch, device=y.device)
        out_rows, out_cols, out_vals = [rows_all], [torch.zeros_like(rows_all)], [y]
        next_out = torch.ones(batch, dtype=torch.long, device=y.device)
        n_steps = (grid.diff(dim=1) != 0).sum(dim=1) if grid.shape[1] > 1 else torch.zeros_like(rows_all)
        for k in range(grid.shape[1] - 1):
            t, t1 = grid[:, k], grid[:, k + 1]
            dt = t1 - t
            dt_col = dt.to(y.dtype)[:, None]
            stages = [func(t, y)]
            for i in range(1, tab.num_stages):
                stages.append(func(t + tab.c[i] * dt, _combine(y, dt_col, stages, tab.a[i])))
            y1 = _combine(y, dt_col, stages, tab.b)
            moving = dt != 0
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
                out_rows.append(rows)
                out_cols.append(col[rows])
                out_vals.append(values[rows])
                next_out = next_out + emit
            y = y1
        result = torch.full((batch, n_out, y.shape[1]), math.nan, dtype=y.dtype, device=y.device)
        result = result.index_put((torch.cat(out_rows), torch.cat(out_cols)), torch.cat(out_vals))
        finite = torch.isfinite(result.detach()).all(dim=2).all(dim=1)
        status = torch.where(finite, SUCCESS, NON_FINITE)
        counts = {"n_steps": n_steps, "n_accepted": n_steps.clone(), "n_rejected": torch.zeros_like(n_steps)}
        t_reached = torch.where(finite, times[:, -1], times[:, 0])
        return result, status, t_reached, counts
