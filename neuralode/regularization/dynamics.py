"""``RegularizedDynamics``: d/dt (z, r_1..r_k) = (f(t, z), integrand_1..integrand_k), one solve's field.

The penalties ride along as extra states of the same ODE, so one solve gives both, and every gradient
strategy (direct, adjoint, checkpointed) differentiates them unchanged. It holds that solve's Hutchinson
noise, so every evaluation (forward, adjoint backward, checkpoint replay) sees the same noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .config import Regularization
from .integrands import jacobian_frobenius, kinetic_energy, time_derivative


def integrands(
    terms: tuple[str, ...], t: Tensor, z: Tensor, f: Tensor, noise: Tensor | None, create_graph: bool
) -> list[Tensor]:
    """The per-sample integrand of each of ``terms`` at f = func(t, z) (z, and t for the time
    derivative, inputs of f's graph; ``noise`` for the jacobian term), in the order of ``terms``."""
    out = []
    for term in terms:
        if term == "kinetic":
            out.append(kinetic_energy(f))
        elif term == "jacobian":
            out.append(jacobian_frobenius(f, z, noise, create_graph))
        else:
            out.append(time_derivative(t, z, f, create_graph))
    return out


def differentiable_inputs(
    t: Tensor, z: Tensor, terms: tuple[str, ...], differentiable: bool
) -> tuple[Tensor, Tensor]:
    """(t, z) made inputs of a graph where ``terms`` differentiate f by them: a fresh leaf unless the
    solve already differentiates through it. Call under ``torch.enable_grad()``."""
    if "jacobian" in terms or "time_derivative" in terms:
        if not (differentiable and z.requires_grad):
            z = z.detach().requires_grad_(True)
    if "time_derivative" in terms and not (differentiable and t.requires_grad):
        t = t.detach().requires_grad_(True)
    return t, z


class RegularizedDynamics:
    """The augmented field for ``func`` (dz/dt = func(t, z), z a tensor with the batch in dim 0) and the
    terms of ``regularization``; ``noise`` (shaped like z) is needed when its jacobian term is on."""

    def __init__(
        self, func: Callable[[Tensor, Tensor], Tensor], regularization: Regularization, noise: Tensor | None
    ) -> None:
        if "jacobian" in regularization.terms and noise is None:
            raise ValueError("noise must be given (shaped like z) when the jacobian term is on")
        self.func, self.terms, self.noise = func, regularization.terms, noise

    def __call__(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        differentiable = torch.is_grad_enabled()  # False in the adjoint's forward solve and in evaluation
        with torch.enable_grad():
            t, z = differentiable_inputs(t, state[0], self.terms, differentiable)
            f = self.func(t, z)
            out = (f, *integrands(self.terms, t, z, f, self.noise, differentiable))
        if not differentiable:
            out = tuple(x.detach() for x in out)
        return out
