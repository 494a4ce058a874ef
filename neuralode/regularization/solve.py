"""``solve_regularized``: one solve of (z, r_1..r_k) that returns the trajectory and the penalties.

The extra states are left out of the adaptive error control (tolerance 1e20 for their members, as in
FFJORD's RNODE code), so the steps are chosen for z alone: the regularised solve takes the steps the
plain one would for the same field, and the penalties are the solver's quadrature along them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._setup.tolerances import ToleranceArg, check_tolerance
from ..gradients import Adjoint, Direct, Gradient
from ..noise import sample_noise
from ..solve import solve
from ..stats import SolveStats
from .config import Regularization
from .dynamics import RegularizedDynamics

FREE = 1e20  # the tolerance that leaves a member of the state out of the error control


@dataclass
class RegularizedSolution:
    """``ys``: z at every output time, as the plain solve returns it. ``integrals``: per term, the
    per-sample integral over the solve's time span (shape (batch,), >= 0 whichever direction t runs).
    ``weights``: the regularization's weight per term. ``stats``: the solve's :class:`SolveStats`."""

    ys: Tensor
    integrals: dict[str, Tensor]
    weights: dict[str, float]
    stats: SolveStats

    @property
    def penalties(self) -> dict[str, Tensor]:
        """Per term, the batch mean of its integral (unweighted; differentiable)."""
        return {name: value.mean() for name, value in self.integrals.items()}

    @property
    def total(self) -> Tensor:
        """sum over terms of weight * penalty: what a training loss adds (0 when every term is off)."""
        total = torch.zeros((), dtype=self.ys.dtype, device=self.ys.device)
        for name, value in self.penalties.items():
            total = total + self.weights[name] * value
        return total


def solve_regularized(
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    regularization: Regularization | None,
    *,
    rtol: ToleranceArg = 1e-7,
    atol: ToleranceArg = 1e-9,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
    gradient: Gradient | None = None,
    params: Sequence[Tensor] | None = None,
    stats: SolveStats | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> RegularizedSolution:
    """Solve dz/dt = func(t, z) from z(t[0]) = y0 with the terms of ``regularization`` as extra states.

    The arguments are those of :func:`neuralode.solve` (``gradient``: ``Direct()`` by default,
    ``Adjoint(...)`` or ``Checkpointed(every=k)``); y0 is a tensor with the batch in dim 0, and ``rtol``
    / ``atol`` numbers. ``noise``: the jacobian term's Hutchinson noise (shaped like y0); by default drawn
    once for this solve (``regularization.noise``, from ``generator``). With no term on (None or every
    weight 0) this is exactly the plain solve: same steps, same NFE, a zero total.
    """
    if regularization is not None and not isinstance(regularization, Regularization):
        raise TypeError(
            "regularization must be a neuralode.regularization.Regularization or None, got "
            f"{type(regularization).__name__} (from a config mapping: Regularization.from_dict)"
        )
    if not isinstance(y0, Tensor) or y0.dim() < 1:
        raise TypeError(
            "y0 must be a tensor with the batch in dim 0 for a regularised solve, got "
            f"{type(y0).__name__ if not isinstance(y0, Tensor) else 'a 0-dim tensor'}"
        )
    gradient = Direct() if gradient is None else gradient
    stats = SolveStats() if stats is None else stats
    plain = {"method": method, "options": options, "gradient": gradient, "stats": stats}
    if regularization is None or not regularization.active:
        ys = solve(func, y0, t, rtol=rtol, atol=atol, params=params, **plain).ys
        return RegularizedSolution(ys, {}, {}, stats)
    terms = regularization.terms
    noise = _noise(noise, y0, regularization, generator) if "jacobian" in terms else None
    found = gradient.params(func, params)  # checked and warned about for the user's func; () for Direct
    k = len(terms)
    rtol, atol, plain["gradient"] = free_tolerances(rtol, atol, gradient, 1, k)
    dynamics = RegularizedDynamics(func, regularization, noise)
    out = solve(dynamics, (y0, *penalty_states(y0, k)), t, rtol=rtol, atol=atol, params=found, **plain).ys
    return RegularizedSolution(
        out[0], penalty_integrals(terms, out[1:], t), weights_of(regularization), stats
    )


def penalty_states(like: Tensor, k: int) -> list[Tensor]:
    """The k penalty states at the start of a solve: zeros of shape (batch,)."""
    return [torch.zeros(like.shape[0], dtype=like.dtype, device=like.device) for _ in range(k)]


def penalty_integrals(terms: tuple[str, ...], paths: Sequence[Tensor], t: Tensor) -> dict[str, Tensor]:
    """Per term, the integral over the solve's span from its state's path (>= 0 whichever way t runs)."""
    sign = 1.0 if len(t) < 2 or bool(t[-1] > t[0]) else -1.0
    return {name: sign * path[-1] for name, path in zip(terms, paths, strict=True)}


def weights_of(regularization: Regularization) -> dict[str, float]:
    """The weight of each term that is on."""
    return {name: getattr(regularization, name) for name in regularization.terms}


def free_tolerances(
    rtol: Any, atol: Any, gradient: Gradient, members: int, k: int
) -> tuple[list[Any], list[Any], Gradient]:
    """Per-member tolerances for a state of ``members`` tensors followed by k penalty states, which are
    left out of the error control (forward, and the adjoint's backward when it has its own numbers)."""
    rtol, atol = _free(rtol, "rtol", members, k), _free(atol, "atol", members, k)
    if isinstance(gradient, Adjoint):
        gradient = dataclasses.replace(
            gradient,
            rtol=None if gradient.rtol is None else _free(gradient.rtol, "adjoint_rtol", members, k),
            atol=None if gradient.atol is None else _free(gradient.atol, "adjoint_atol", members, k),
        )
    return rtol, atol, gradient


def _noise(
    noise: Tensor | None, y0: Tensor, regularization: Regularization, generator: torch.Generator | None
) -> Tensor:
    if noise is None:
        return sample_noise(y0.detach(), regularization.noise, generator)
    if not isinstance(noise, Tensor) or noise.shape != y0.shape:
        got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor shaped like y0 {tuple(y0.shape)}, got {got}")
    return noise.detach().to(dtype=y0.dtype, device=y0.device)


def _free(tol: Any, name: str, members: int, k: int) -> list[Any]:
    """A number tolerance for each of ``members``, then FREE for each of k penalty states."""
    try:
        check_tolerance(tol, name)
    except ValueError as error:
        if "must be a scalar" in str(error):
            raise ValueError(
                f"{name} must be a number for a regularised solve (per-element tolerances are not "
                f"supported with regularization): {error}"
            ) from None
        raise
    return [*([tol] * members), *([FREE] * k)]
