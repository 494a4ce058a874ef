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
        z = state[0]
        differentiable = torch.is_grad_enabled()  # False in the adjoint's forward solve and in evaluation
        needs_z = "jacobian" in self.terms or "time_derivative" in self.terms
        with torch.enable_grad():
            if needs_z and not (differentiable and z.requires_grad):  # a leaf to differentiate f by
                z = z.detach().requires_grad_(True)
            if "time_derivative" in self.terms and not (differentiable and t.requires_grad):
                t = t.detach().requires_grad_(True)
            f = self.func(t, z)
            integrands = []
            for term in self.terms:
                if term == "kinetic":
                    integrands.append(kinetic_energy(f))
                elif term == "jacobian":
                    integrands.append(jacobian_frobenius(f, z, self.noise, differentiable))
                else:
                    integrands.append(time_derivative(t, z, f, differentiable))
        out = (f, *integrands)
        if not differentiable:
            out = tuple(x.detach() for x in out)
        return out
