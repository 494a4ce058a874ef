"""The adjoint method per sample: the backward solve of [z, a] is a per-sample solve (each sample with its
own steps between its own output times, all samples batched), and dL/dtheta is integrated over each
sample's accepted steps.

dL/dtheta is summed over samples, so it cannot be error-controlled per sample (that would need a
per-sample copy of every parameter): it is left out of the error control, as with the seminorm (Kidger,
Chen & Lyons 2021), and integrated with the method's weights once each step's acceptance is known: the
graphs of the step's own stage evaluations are kept for it, and only the first stage (whose derivative
came from an earlier evaluation, per sample a different one) is evaluated again.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor

from ..stats import PassCounts
from .engine import SampleRKSolver, StepCarry
from .outcome import failure_error
from .problem import SampleFunc, SampleLayout, SampleProblem


class _AugmentedField:
    """[z, a] -> [f(t, z), -a^T df/dz], row by row (func treats rows independently).

    With ``keep`` (there are parameters), the graphs of its last few evaluations (f(t, z) with its graph
    to the parameters) are kept, keyed by the state they were given, for the parameter integral."""

    def __init__(self, func: SampleFunc, n: int, keep: int = 0) -> None:
        self.func, self.n, self.keep = func, n, keep
        self.kept: OrderedDict[int, tuple[Tensor, Tensor]] = OrderedDict()

    def __call__(self, t: Tensor, state: Tensor, rows: Tensor | None = None) -> Tensor:
        n = self.n
        z, a = state[:, :n], state[:, n:]
        with torch.enable_grad():
            z_ = z.detach().requires_grad_(True)
            f = self.func(t, z_)
            (vjp,) = torch.autograd.grad(f, z_, a, allow_unused=True, retain_graph=self.keep > 0)
        if self.keep:
            self.kept[id(state)] = (state, f)  # the state is held too, so that its id stays its own
            while len(self.kept) > self.keep:
                self.kept.popitem(last=False)
        vjp = torch.zeros_like(z) if vjp is None else vjp
        return torch.cat([f.detach(), -vjp], dim=1)

    def graph_of(self, state: Tensor) -> Tensor | None:
        """f(t, z) with its graph from the evaluation that was given ``state``, if it is still kept."""
        kept = self.kept.get(id(state))
        return kept[1] if kept is not None and kept[0] is state else None


class _ParameterIntegral:
    """Accumulates dL/dtheta = -int a^T df/dtheta dt over the accepted steps of every sample."""

    def __init__(
        self, func: SampleFunc, params: tuple[Tensor, ...], b: tuple[float, ...], n: int, field
    ) -> None:
        self.func, self.params, self.b, self.n, self.field = func, params, b, n, field
        self.total = [torch.zeros_like(p) for p in params]

    def add(self, dt: Tensor, stage_times: list[Tensor], inputs: list[Tensor], accepted: Tensor) -> None:
        if not self.params:
            return
        n = self.n
        outs, cotangents = [], []
        scale = dt * accepted
        with torch.enable_grad():
            for i, (bi, ti, si) in enumerate(zip(self.b, stage_times, inputs, strict=False)):
                if bi == 0.0:
                    continue
                # the step's own stages were evaluated on these inputs; the first stage's derivative
                # came from an earlier evaluation (a different one per sample): it is evaluated again
                kept = self.field.graph_of(si) if i > 0 else None
                outs.append(self.func(ti, si[:, :n].detach()) if kept is None else kept)
                cotangents.append(-si[:, n:].detach() * (scale * bi).to(si.dtype)[:, None])
            grads = torch.autograd.grad(outs, self.params, cotangents, allow_unused=True)
        self.field.kept.clear()
        for total, g in zip(self.total, grads, strict=True):
            if g is not None:
                total.add_(g)


class PerSampleAdjoint(torch.autograd.Function):
    """y0, *params -> ys (B, T, N) by a no-graph per-sample solve; backward by the per-sample adjoint."""

    @staticmethod
    def forward(ctx, info: dict, y0: Tensor, *params: Tensor) -> Tensor:
        engine: SampleRKSolver = info["engine"]
        problem: SampleProblem = info["problem"]
        if "precomputed" in info:  # an event search found the end times (and the states there) already
            ys, info["result"] = info.pop("precomputed")
            ys = ys.clone()
        else:
            # adjoint_options["carry_step_size"] (default True): the backward solve starts from these steps
            carry_steps = getattr(info["backward_engine"].options, "carry_step_size", True)
            carry = StepCarry() if carry_steps else None
            with torch.no_grad():
                ys, status, t_reached, counts = engine.integrate(
                    SampleProblem(
                        problem.func, y0.detach(), problem.times, problem.rtol, problem.atol, problem.segments
                    ),
                    carry=carry,
                )
            info["carry"] = carry
            info["result"] = (status, t_reached, counts)
        ctx.info = info
        ctx.save_for_backward(ys, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor):
        ys, *params = ctx.saved_tensors
        info = ctx.info
        layout: SampleLayout = info["layout"]
        problem: SampleProblem = info["problem"]
        engine: SampleRKSolver = info["backward_engine"]
        counts = PassCounts(nfe=torch.zeros(layout.batch, dtype=torch.long, device=ys.device))
        func = SampleFunc(info["user_func"], layout, counts, with_rows=False, checked=True)
        n = ys.shape[2]
        # the stage graphs of one step are kept for the parameter integral (a few more for the dense
        # output's and a jump's evaluations in between)
        field = _AugmentedField(func, n, keep=engine.tableau.num_stages + 4 if params else 0)
        integral = _ParameterIntegral(func, tuple(params), engine.tableau.b, n, field)
        times = problem.times
        last = times.shape[1] - 1
        # a sample that failed before t_j (on_failure="nan") has a NaN state there: its later outputs
        # have no gradient, so it is solved back from zero (a stays zero) instead of from NaN
        finite = torch.isfinite(ys).all(dim=2, keepdim=True)  # (B, T, 1)
        z_at = ys.masked_fill(~finite, 0.0)
        g_at = grad_ys.masked_fill(~finite, 0.0)

        def jump(state: Tensor, rows: Tensor, out_index: Tensor) -> Tensor:
            """At output time t_j (out_index counts back from the last time): z from the forward solve
            (as torchdiffeq), a + dL/dy(t_j)."""
            j = (last - out_index).clamp(0, last)[:, None, None].expand(-1, 1, n)
            z_j, g_j = z_at.gather(1, j).squeeze(1), g_at.gather(1, j).squeeze(1)
            new = torch.cat([z_j, state[:, n:] + g_j], dim=1)
            return torch.where(rows[:, None], new, state)

        # one backward solve over every sample's whole span: each sample steps to its own output times
        # (its state jumps there), so no sample waits for the others at an output time
        state = torch.cat([z_at[:, -1], g_at[:, -1]], dim=1)
        backward = SampleProblem(
            field, state, times.flip(1).contiguous(), info["backward_rtol"], info["backward_atol"], (n, n)
        )
        with torch.no_grad():
            out, status, t_reached, steps = engine.integrate(
                backward, quadrature=integral, carry=info.get("carry"), jump=jump
            )
        error = failure_error(status, t_reached, engine.max_steps)
        if error is not None:
            raise error
        a = out[:, -1, n:] + g_at[:, 0]
        for key, value in steps.items():
            setattr(counts, key, value)
        info["stats"].backward = counts
        return (None, a, *integral.total)
