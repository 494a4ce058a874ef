"""``odeint_checkpoint(..., per_sample=True)``: the gradients of direct backprop through the per-sample
steps, in memory O(checkpoints).

The forward pass is the per-sample solve without a graph, recording every lockstep step some sample
accepted ((B,) start and end times and which samples accepted it) and the whole batch's state at every
``every``-th of them. The backward pass re-runs those pieces from last to first with autograd, taking
exactly the recorded steps (each sample its own accepted ones, the others staying put: no error
control, no step re-selection; a fixed-grid method re-takes its grid's steps) and emitting the outputs
on the same dense output, and backpropagates through each; a step that ended on a jump_t is replayed
with the forward pass's treatment of it (recorded per step). Rows are independent, so a replayed row
rounds as it did in the forward pass. Memory: the stored states, three (B,) numbers per recorded step
(a fixed grid: its (B, M + 1) times), and the graph of one piece.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..solvers.runge_kutta import DeviceTableau
from ..stats import PassCounts
from .engine import SampleRKSolver, _Coefficients, _Stages
from .fixed_grid import GridRecord, SampleGridSolver
from .problem import SampleFunc, SampleLayout, SampleProblem


class StepRecord:
    """The accepted lockstep steps of a forward solve, and the state at every ``every``-th one."""

    def __init__(self, every: int) -> None:
        self.every = every
        # (t, t1, accepted, ended on a jump_t or None), each (B,)
        self.steps: list[tuple[Tensor, Tensor, Tensor, Tensor | None]] = []
        # at a piece's start: y (B, N), the next output index (B,) and the times f(t, y) was evaluated at
        # (just past a jump_t where the last step ended on one; None: at t)
        self.states: list[tuple[Tensor, Tensor, Tensor | None]] = []

    def step(
        self,
        t: Tensor,
        t1: Tensor,
        accepted: Tensor,
        y: Tensor,
        next_out: Tensor,
        jumped: Tensor | None = None,
        t_f0: Tensor | None = None,
    ) -> None:
        """Record an accepted lockstep step from (t, y); with jump_t, ``jumped``: the rows whose accepted
        step ended on one, and ``t_f0``: the times the derivative at (t, y) was evaluated at."""
        if len(self.steps) % self.every == 0:
            self.states.append((y.detach().clone(), next_out.clone(), None if t_f0 is None else t_f0.clone()))
        on_jump = None if jumped is None or not bool(jumped.any()) else jumped.clone()
        self.steps.append((t.clone(), t1.clone(), accepted.clone(), on_jump))

    def replay(
        self, engine: SampleRKSolver, func: SampleFunc, y: Tensor, next_out: Tensor, piece: int, times: Tensor
    ) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
        """Take piece ``piece``'s recorded steps from state y (see :func:`replay`)."""
        steps = self.steps[piece * self.every : (piece + 1) * self.every]
        return replay(engine, func, y, next_out, steps, times, self.states[piece][2])

    def replayed_steps(self) -> Tensor | None:
        """(B,) the steps each sample accepted (every one is replayed once), None if there were none."""
        return torch.stack([s[2] for s in self.steps]).sum(0) if self.steps else None


def replay(
    engine: SampleRKSolver,
    func: SampleFunc,
    y: Tensor,
    next_out: Tensor,
    steps,
    times: Tensor,
    t_f0: Tensor | None = None,
) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
    """Take the recorded ``steps`` from state y (its derivative evaluated at ``t_f0``, default the first
    step's start); returns the end state and the outputs emitted on the way (their rows, columns and
    values, as the engine records them)."""
    dtab = DeviceTableau(engine.tableau, y.dtype, y.device)
    coeffs = _Coefficients(engine.tableau, y.dtype, y.device)
    direction = torch.sign(times[:, -1] - times[:, 0])
    n_out = times.shape[1]
    out_rows: list[Tensor] = []
    out_cols: list[Tensor] = []
    out_vals: list[Tensor] = []
    f0 = func(steps[0][0] if t_f0 is None else t_f0, y)
    for t, t1, accepted, jumped in steps:
        dt = torch.where(accepted, t1 - t, 0.0)
        stages = _Stages(dtab.num_stages, y)
        y1, _, _ = engine.step(func, dtab, coeffs, stages, y, t, dt, f0, None, jumped)
        f1 = stages.rows[-1] if dtab.fsal else func(t1, y1)
        next_tau = times.gather(1, next_out.clamp(max=n_out - 1)[:, None]).squeeze(1)
        if bool((accepted & (next_out < n_out) & (direction * (next_tau - t1) <= 0)).any()):
            next_out, _ = engine._emit(
                dtab, stages.rows, f1, y, y1, t, t1, dt, dt, accepted, None, times, next_out, direction,
                out_rows, out_cols, out_vals, func,
            )  # fmt: skip
        if jumped is not None:  # as the forward pass: the derivative evaluated again past the jump_t
            f1, _ = engine.after_jumps(func, t1, y1, f1, jumped, direction)
        y = torch.where(accepted[:, None], y1, y)
        f0 = torch.where(accepted[:, None], f1, f0)
    return y, out_rows, out_cols, out_vals


class PerSampleCheckpoint(torch.autograd.Function):
    """y0, *params -> ys (B, T, N) by a no-graph per-sample solve; backward by replaying its steps."""

    @staticmethod
    def forward(ctx, info: dict, y0: Tensor, *params: Tensor) -> Tensor:
        engine: SampleRKSolver = info["engine"]
        problem: SampleProblem = info["problem"]
        grid = isinstance(engine, SampleGridSolver)
        record = GridRecord(info["every"]) if grid else StepRecord(info["every"])
        with torch.no_grad():
            ys, status, t_reached, counts = engine.integrate(
                SampleProblem(
                    problem.func, y0.detach(), problem.times, problem.rtol, problem.atol, problem.segments
                ),
                record=record,
            )
        info["result"] = (status, t_reached, counts)
        info["n_checkpoints"] = len(record.states)
        ctx.info, ctx.record = info, record
        ctx.save_for_backward(*params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor):
        params = ctx.saved_tensors
        info, record = ctx.info, ctx.record
        layout: SampleLayout = info["layout"]
        times: Tensor = info["problem"].times
        counts = PassCounts(nfe=torch.zeros(layout.batch, dtype=torch.long, device=grad_ys.device))
        func = SampleFunc(info["user_func"], layout, counts, info["with_rows"], checked=True)
        totals: list[Tensor | None] = [None] * len(params)
        a = None  # dL/d(state at the end of the piece after this one)
        for piece in range(len(record.states) - 1, -1, -1):
            y_start, next_out = record.states[piece][:2]
            with torch.enable_grad():
                y_in = y_start.detach().requires_grad_(True)
                y_end, rows, cols, vals = record.replay(info["engine"], func, y_in, next_out, piece, times)
                outs, cotangents = [], []
                if a is not None:
                    outs.append(y_end)
                    cotangents.append(a)
                for r, c, v in zip(rows, cols, vals, strict=True):
                    outs.append(v)
                    cotangents.append(grad_ys[r, c])
                grads = torch.autograd.grad(outs, (y_in, *params), cotangents, allow_unused=True)
            a = torch.zeros_like(y_in) if grads[0] is None else grads[0]
            for i, g in enumerate(grads[1:]):
                if g is not None:
                    totals[i] = g if totals[i] is None else totals[i] + g
        a = grad_ys[:, 0] if a is None else a + grad_ys[:, 0]
        replayed = record.replayed_steps()
        if replayed is not None:  # every step a sample took is replayed once
            counts.n_steps = replayed
            counts.n_accepted = replayed.clone()
        info["stats"].backward = counts
        return (None, a, *totals)
