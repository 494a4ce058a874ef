"""``ODEBlock``: a layer that maps its input x to z(t1), where dz/dt = func(t, z) and z(t0) = x."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._setup.validation import check_t
from ..odeint import odeint, odeint_adjoint
from ..solver_config import check_solver_settings
from ..stats import SolveStats


class ODEBlock(nn.Module):
    """Integrates its input over ``t`` with ``func`` as the dynamics; the unit of ODE-Net, CNF and latent ODE.

    Args:
        func: an ``nn.Module`` computing dz/dt = func(t, z).
        t: the integration interval (t0, t1).
        method, rtol, atol, options: the solver (see :func:`neuralode.odeint`).
        adjoint: True for the adjoint method (O(1) memory), False to backpropagate through the solver.
        adjoint_options: options of the backward solve, e.g. ``{"norm": "seminorm"}``.

    Bad solver settings raise the library's ``ValueError``/``TypeError`` here, at construction.

    After each forward pass, ``last_stats`` holds that call's :class:`SolveStats` (its backward counts
    fill in when backward runs); ``nfe_forward``/``nfe_backward`` read it.
    """

    def __init__(
        self,
        func: nn.Module,
        t: Sequence[float] = (0.0, 1.0),
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        adjoint: bool = True,
        options: Mapping[str, Any] | None = None,
        adjoint_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(t) != 2:
            raise ValueError(f"t must be the interval (t0, t1), got {t!r}")
        # Bad solver settings fail here, not at the first forward pass (the library's own checks).
        check_solver_settings(
            method, rtol, atol, options, adjoint_options=adjoint_options if adjoint else None
        )
        self.func = func
        self.register_buffer("t", torch.tensor([float(t[0]), float(t[1])]), persistent=False)
        check_t(self.t)
        self.method, self.rtol, self.atol = method, rtol, atol
        self.adjoint = adjoint
        self.options = None if options is None else dict(options)
        self.adjoint_options = None if adjoint_options is None else dict(adjoint_options)
        self.last_stats = SolveStats()

    def forward(self, x: Tensor) -> Tensor:
        stats = SolveStats()
        # times in the state's dtype, never below float32 (an autocast bfloat16 input keeps fp32 times)
        t = self.t.to(x.dtype) if x.dtype in (torch.float32, torch.float64) else self.t
        if self.adjoint:
            out = odeint_adjoint(
                self.func, x, t, rtol=self.rtol, atol=self.atol, method=self.method,
                options=self.options, adjoint_options=self.adjoint_options, stats=stats,
            )  # fmt: skip
        else:
            out = odeint(
                self.func, x, t, rtol=self.rtol, atol=self.atol, method=self.method,
                options=self.options, stats=stats,
            )  # fmt: skip
        self.last_stats = stats
        return out[-1]

    @property
    def nfe_forward(self) -> int:
        return self.last_stats.nfe_forward

    @property
    def nfe_backward(self) -> int:
        return self.last_stats.nfe_backward

    def extra_repr(self) -> str:
        return f"method={self.method!r}, rtol={self.rtol}, atol={self.atol}, adjoint={self.adjoint}"
