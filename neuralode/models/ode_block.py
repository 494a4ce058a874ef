"""``ODEBlock``: a layer that maps its input x to z(t1), where dz/dt = func(t, z) and z(t0) = x."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..solver_config import SolverConfig
from ..stats import LastSolveStats, SolveStats


class ODEBlock(LastSolveStats, nn.Module):
    """Integrates its input over ``t`` with ``func`` as the dynamics; the unit of ODE-Net and RK-Net.

    Args:
        func: an ``nn.Module`` computing dz/dt = func(t, z).
        t: the integration interval (t0, t1).
        solver: how to solve and differentiate (:class:`~neuralode.SolverConfig`): ODE-Net takes the
            adjoint gradient (the default), RK-Net ``gradient=Direct()``. Bad settings fail when the
            config is built, before any block exists.

    The config is frozen: :meth:`with_solver` gives a block with another one that shares ``func`` (and so
    the parameters), which is how a tolerance sweep measures a trained model without changing it.

    After each forward pass, ``last_stats`` holds that call's :class:`SolveStats` (its backward counts
    fill in when backward runs); ``nfe_forward``/``nfe_backward`` read it. With a regularization in the
    solver config, ``last_regularization`` is that pass's weighted penalty (a differentiable 0-dim
    tensor a training loss adds; exactly 0 without one) and ``last_penalties`` its unweighted terms.
    """

    def __init__(
        self, func: nn.Module, t: Sequence[float] = (0.0, 1.0), solver: SolverConfig | None = None
    ) -> None:
        super().__init__()
        solver = SolverConfig() if solver is None else solver
        if not isinstance(solver, SolverConfig):
            raise TypeError(f"solver must be a neuralode.SolverConfig, got {type(solver).__name__}")
        if len(t) != 2:
            raise ValueError(f"t must be the interval (t0, t1), got {t!r}")
        t0, t1 = float(t[0]), float(t[1])
        if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
            raise ValueError(f"t must be two finite, different times (t0, t1), got {t!r}")
        self.func = func
        self.solver = solver
        self.register_buffer("t", torch.tensor([t0, t1]), persistent=False)
        self.last_stats = SolveStats()
        self.last_regularization: Tensor = torch.zeros(())
        self.last_penalties: dict[str, Tensor] = {}

    def with_solver(self, solver: SolverConfig) -> ODEBlock:
        """A block solving with ``solver`` that shares this one's ``func`` (parameters) and times."""
        block = ODEBlock(self.func, tuple(self.t.tolist()), solver)
        block.t = self.t  # the same device as this block's
        block.training = self.training  # not train(): that would also set the shared func's mode
        return block

    def forward(self, x: Tensor) -> Tensor:
        stats = SolveStats()
        # times in the state's dtype, never below float32 (an autocast bfloat16 input keeps fp32 times)
        t = self.t.to(x.dtype) if x.dtype in (torch.float32, torch.float64) else self.t
        regularization = self.solver.regularization
        if regularization is None or not regularization.active:
            out = self.solver.solve(self.func, x, t, stats=stats)
            self.last_regularization = torch.zeros((), dtype=out.dtype, device=out.device)
            self.last_penalties = {}
        else:
            solution = self.solver.solve_regularized(self.func, x, t, stats=stats)
            out = solution.ys
            self.last_regularization, self.last_penalties = solution.total, solution.penalties
        self.last_stats = stats
        return out[-1]

    def extra_repr(self) -> str:
        return self.solver.describe()
