"""Continuous normalizing flow: integrate [z, log p] with d log p/dt = -tr(df/dz) (Chen et al. 2018, Thm 1).

``transform`` pushes base samples z(t0) ~ N(0, I) to t1 and returns their log-density there (density
matching); ``log_prob`` integrates data from t1 back to t0 and returns log p(x) = log N(z(t0)) - Delta
(maximum likelihood). The trace is the field's closed form (``HyperPlanarField``), exact by autograd, or
Hutchinson's estimate with noise drawn once per solve, so the forward and adjoint solves see the same noise.
How it solves and differentiates is one frozen :class:`~neuralode.SolverConfig`; :meth:`CNF.with_solver`
and :meth:`CNF.with_trace` give a flow sharing the parameters with other settings (nothing is reassigned).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..regularization.dynamics import differentiable_inputs, integrands
from ..regularization.integrands import kinetic_energy
from ..regularization.solve import free_tolerances, penalty_integrals, penalty_states, weights_of
from ..solve import solve
from ..solver_config import SolverConfig
from ..stats import SolveStats
from .base import check_points, check_positive_int, standard_normal_logprob
from .trace import NOISE_KINDS, exact_trace, hutchinson_trace, sample_noise

TRACE_METHODS = ("closed_form", "exact", "hutchinson")
DEFAULT_SOLVER = SolverConfig(rtol=1e-5, atol=1e-5)  # dopri5, adjoint gradients: the paper's CNF tolerance


CLOSED_FORM_TERMS = frozenset({"kinetic", "jacobian"})


def closed_form_penalties(func: nn.Module, trace: str, terms: tuple[str, ...]) -> bool:
    """Whether the penalties come in closed form with the trace (no autograd, no noise): a closed-form
    trace, a func with ``forward_with_trace_and_frobenius`` and only the kinetic and jacobian terms."""
    return (
        trace == "closed_form"
        and bool(terms)
        and CLOSED_FORM_TERMS.issuperset(terms)
        and hasattr(func, "forward_with_trace_and_frobenius")
    )


class CNFDynamics:
    """d/dt [z, log p, r_1..r_k] = [f(t, z), -tr(df/dz), penalty integrands] for one solve (it holds that
    solve's Hutchinson noise, shared by the trace and the jacobian penalty; ``terms``: the penalties)."""

    def __init__(
        self, func: nn.Module, trace: str, noise: Tensor | None = None, terms: tuple[str, ...] = ()
    ) -> None:
        self.func, self.trace, self.noise, self.terms = func, trace, noise, terms
        # Everything in closed form, no autograd: the trace alone, or with the kinetic/jacobian penalties.
        self.closed_form = trace == "closed_form" and (not terms or closed_form_penalties(func, trace, terms))

    def __call__(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        z = state[0]
        if self.closed_form:
            if "jacobian" in self.terms:
                f, trace, frobenius = self.func.forward_with_trace_and_frobenius(t, z)
            else:
                f, trace = self.func.forward_with_trace(t, z)
            penalties = (kinetic_energy(f) if term == "kinetic" else frobenius for term in self.terms)
            return (f, -trace, *penalties)
        differentiable = torch.is_grad_enabled()  # False in the adjoint's forward solve and in evaluation
        with torch.enable_grad():
            if self.trace != "closed_form" and not (differentiable and z.requires_grad):
                z = z.detach().requires_grad_(True)  # a leaf to differentiate f with respect to
            t, z = differentiable_inputs(t, z, self.terms, differentiable)
            if self.trace == "closed_form":
                f, trace = self.func.forward_with_trace(t, z)
            else:
                f = self.func(t, z)
            if self.trace == "exact":
                trace = exact_trace(f, z, create_graph=differentiable)
            elif self.trace == "hutchinson":
                trace = hutchinson_trace(f, z, self.noise, create_graph=differentiable)
            out = (f, -trace, *integrands(self.terms, t, z, f, self.noise, differentiable))
        return out if differentiable else tuple(x.detach() for x in out)


class CNF(nn.Module):
    """A continuous normalizing flow on R^dim with dynamics ``func`` over t in [0, t1].

    Args:
        func: ``func(t, z) -> dz/dt`` for z of shape (batch, dim); for ``trace="closed_form"`` it must
            also have ``forward_with_trace(t, z) -> (f, tr(df/dz))`` (``HyperPlanarField`` does).
        trace: "closed_form", "exact" (d autograd passes) or "hutchinson" (one vector-Jacobian product).
        noise: Hutchinson's noise, "gaussian" or "rademacher".
        solver: how to solve and differentiate (method, tolerances, options, gradient strategy); the
            default is dopri5 at rtol = atol = 1e-5 with the adjoint.

    ``last_stats`` holds the last solve's :class:`SolveStats` (what the training loop logs as NFE). With
    a regularization in ``solver``, its penalties are integrated along every solve as extra states (the
    jacobian term shares the Hutchinson noise of the trace, or draws its own; with the closed-form trace
    of a func that has ``forward_with_trace_and_frobenius`` it is the exact Frobenius norm, computed with
    the trace and without autograd, when only kinetic and jacobian are on): ``last_regularization``
    is the last solve's weighted penalty (differentiable, 0 without one), ``last_penalties`` its terms.
    """

    def __init__(
        self,
        func: nn.Module,
        dim: int,
        t1: float = 1.0,
        trace: str = "exact",
        noise: str = "gaussian",
        solver: SolverConfig = DEFAULT_SOLVER,
    ) -> None:
        super().__init__()
        if not isinstance(func, nn.Module):
            raise TypeError(f"func must be an nn.Module, got {type(func).__name__}")
        if trace not in TRACE_METHODS:
            raise ValueError(f"trace must be one of {TRACE_METHODS}, got {trace!r}")
        if trace == "closed_form" and not hasattr(func, "forward_with_trace"):
            raise ValueError(
                "trace='closed_form' needs a func with forward_with_trace (e.g. HyperPlanarField)"
            )
        if noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
        if not t1 > 0:
            raise ValueError(f"t1 must be > 0, got {t1!r}")
        if not isinstance(solver, SolverConfig):
            raise TypeError(
                f"solver must be a neuralode.SolverConfig, got {type(solver).__name__} "
                "(from a config mapping: SolverConfig.from_dict)"
            )
        self.func, self.dim, self.t1 = func, check_positive_int(dim, "dim"), float(t1)
        self.trace, self.noise, self.solver = trace, noise, solver
        self.last_stats = SolveStats()
        self.last_regularization: Tensor = torch.zeros(())
        self.last_penalties: dict[str, Tensor] = {}

    def with_solver(self, solver: SolverConfig) -> CNF:
        """This flow (the same ``func``, so the same parameters) solved by another ``solver``."""
        return self._sharing(self.trace, solver)

    def with_trace(self, trace: str) -> CNF:
        """This flow (the same ``func`` and solver) with another trace method, e.g. exact for evaluation."""
        return self._sharing(trace, self.solver)

    def _sharing(self, trace: str, solver: SolverConfig) -> CNF:
        flow = CNF(self.func, self.dim, self.t1, trace=trace, noise=self.noise, solver=solver)
        return flow.train(self.training)

    def solve(self, z: Tensor, logp: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
        """[z, log p] at each of ``times`` (shape (T,)), starting from (z, logp) at times[0]."""
        reg = self.solver.regularization
        terms = () if reg is None else reg.terms
        exact_penalties = closed_form_penalties(self.func, self.trace, terms)
        wants_noise = self.trace == "hutchinson" or ("jacobian" in terms and not exact_penalties)
        noise = sample_noise(z, self.noise) if wants_noise else None
        dynamics = CNFDynamics(self.func, self.trace, noise, terms)
        stats = SolveStats()
        params = tuple(p for p in self.func.parameters() if p.requires_grad)  # what an adjoint needs
        if not terms:
            zs, logps = self.solver.solve(dynamics, (z, logp), times, params=params, stats=stats)
            self.last_stats, self.last_penalties = stats, {}
            self.last_regularization = torch.zeros((), dtype=z.dtype, device=z.device)
            return zs, logps
        config = self.solver
        rtol, atol, gradient = free_tolerances(config.rtol, config.atol, config.gradient, 2, len(terms))
        zs, logps, *paths = solve(
            dynamics, (z, logp, *penalty_states(z, len(terms))), times, rtol=rtol, atol=atol,
            method=config.method, options=config.options, gradient=gradient, params=params, stats=stats,
        ).ys  # fmt: skip
        penalties = {name: value.mean() for name, value in penalty_integrals(terms, paths, times).items()}
        weights = weights_of(reg)
        self.last_stats, self.last_penalties = stats, penalties
        self.last_regularization = sum(weights[name] * value for name, value in penalties.items())
        return zs, logps

    def _times(self, reverse: bool, like: Tensor) -> Tensor:
        ends = [self.t1, 0.0] if reverse else [0.0, self.t1]
        return torch.tensor(ends, dtype=like.dtype, device=like.device)

    def transform(self, z: Tensor, logp: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Base samples at t=0 (log-density ``logp``, default log N(z)) -> (x at t1, log q(x))."""
        check_points(z, "z", self.dim)
        logp = standard_normal_logprob(z) if logp is None else logp
        zs, logps = self.solve(z, logp, self._times(False, z))
        return zs[-1], logps[-1]

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) = log N(z(0)) - Delta, Delta = integral of -tr(df/dz) from t1 back to 0 (started at 0)."""
        check_points(x, "x", self.dim)
        zs, deltas = self.solve(
            x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device), self._times(True, x)
        )
        return standard_normal_logprob(zs[-1]) - deltas[-1]

    @torch.no_grad()
    def trajectory(self, z: Tensor, times: Tensor) -> Tensor:
        """z at each of ``times`` (increasing from 0 to t1), for pictures of the flow: (T, batch, dim)."""
        check_points(z, "z", self.dim)
        return self.solve(z, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device), times)[0]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, t1={self.t1}, trace={self.trace!r}, {self.solver.describe()}"
