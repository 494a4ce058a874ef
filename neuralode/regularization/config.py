"""``Regularization``: the weights of the penalties integrated along a solve (0 turns a term off).

RNODE (Finlay et al. 2020) penalises the kinetic energy int ||f||^2 dt and the Jacobian's Frobenius norm
int ||df/dz||_F^2 dt; TayNODE (Kelly et al. 2020) the total time derivative int ||df/dt||^2 dt. All three
make the learned dynamics easier to solve, so an adaptive solver takes fewer steps.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..noise import NOISE_KINDS

TERMS = ("kinetic", "jacobian", "time_derivative")  # the order of the extra states in a solve


@dataclass(frozen=True)
class Regularization:
    """Weights of the penalties (each a number >= 0; 0 leaves the term out of the solve entirely).

    Args:
        kinetic: weight of int ||f(t, z)||^2 dt.
        jacobian: weight of int ||df/dz||_F^2 dt, estimated by Hutchinson as ||e^T df/dz||^2.
        time_derivative: weight of int ||df/dt + (df/dz) f||^2 dt (TayNODE's second-order term).
        noise: Hutchinson's noise for ``jacobian``, "gaussian" or "rademacher" (drawn once per solve).
    """

    kinetic: float = 0.0
    jacobian: float = 0.0
    time_derivative: float = 0.0
    noise: str = "gaussian"

    def __post_init__(self) -> None:
        for name in TERMS:
            object.__setattr__(self, name, _weight(getattr(self, name), name))
        if not isinstance(self.noise, str) or self.noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {self.noise!r}")

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> Regularization:
        """From a config mapping with keys kinetic, jacobian, time_derivative, noise (a ``name`` label is
        ignored); an unknown key raises, naming it."""
        if not hasattr(settings, "items"):
            raise TypeError(f"regularization must be a mapping, got {type(settings).__name__}")
        known = (*TERMS, "noise", "name")
        unknown = sorted(str(k) for k in settings if k not in known)
        if unknown:
            raise ValueError(f"regularization has unknown key(s) {unknown}; it takes {', '.join(known[:-1])}")
        return cls(**{k: v for k, v in settings.items() if k != "name"})

    @property
    def terms(self) -> tuple[str, ...]:
        """The terms with a nonzero weight, in the order of their extra states."""
        return tuple(name for name in TERMS if getattr(self, name) > 0)

    @property
    def active(self) -> bool:
        """Whether any term is on (otherwise a solve with it is the plain solve)."""
        return bool(self.terms)

    def describe(self) -> str:
        """A short summary for reprs and logs, e.g. ``kinetic=0.01, jacobian=0.01``."""
        parts = [f"{name}={getattr(self, name)}" for name in self.terms]
        if "jacobian" in self.terms:
            parts.append(f"noise={self.noise!r}")
        return ", ".join(parts) or "off"


def _weight(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number >= 0 (its penalty's weight), got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0 (0 turns the term off), got {value}")
    return value
