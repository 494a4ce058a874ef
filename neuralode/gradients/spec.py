"""The gradient strategies as small frozen values: what a model or a config says, before any solve."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


def _frozen(options: Mapping[str, Any] | None, name: str) -> Mapping[str, Any] | None:
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise TypeError(f"{name} must be a dict of options or None, got {type(options).__name__}")
    return MappingProxyType(dict(options))


@dataclass(frozen=True)
class Direct:
    """Backpropagate through every operation of the solver: exact gradients of the discrete solve,
    memory growing with the number of steps."""

    name = "direct"


@dataclass(frozen=True)
class Adjoint:
    """The adjoint method (Algorithm 1 of the paper): the backward solve's own settings, each
    defaulting to the forward solve's (``options`` without "norm"); ``options={"norm": "seminorm"}``
    leaves the parameter integrals out of its error control."""

    rtol: Any = None
    atol: Any = None
    method: str | None = None
    options: Mapping[str, Any] | None = field(default=None)
    name = "adjoint"

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _frozen(self.options, "Adjoint.options"))


@dataclass(frozen=True)
class Checkpointed:
    """Gradients of direct backprop in memory O(checkpoints): the state is stored every ``every``
    accepted steps and each piece is re-run with autograd in the backward pass."""

    every: int = 1
    name = "checkpoint"

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(
                f"checkpoint_every must be a positive int (store the state every that many steps), "
                f"got {self.every!r}"
            )


Gradient = Direct | Adjoint | Checkpointed
GRADIENT_NAMES = ("direct", "adjoint", "checkpoint")


def gradient_from_name(
    name: str,
    *,
    adjoint: Mapping[str, Any] | None = None,
    checkpoint_every: int = 1,
) -> Gradient:
    """The strategy a config names: "direct", "adjoint" (with ``adjoint``'s rtol/atol/method/options)
    or "checkpoint" (every ``checkpoint_every`` steps)."""
    if name == "direct":
        return Direct()
    if name == "adjoint":
        settings = {k: v for k, v in (adjoint or {}).items() if v is not None}
        if not settings.get("options"):  # an empty options dict, as in a config: the forward ones apply
            settings.pop("options", None)
        unknown = set(settings) - {"rtol", "atol", "method", "options"}
        if unknown:
            raise ValueError(
                f"unknown adjoint settings {sorted(unknown)}: the backward solve takes rtol, atol, method, options"
            )
        return Adjoint(**settings)
    if name == "checkpoint":
        return Checkpointed(every=checkpoint_every)
    raise ValueError(f"gradient={name!r} is unknown; choose one of: {', '.join(GRADIENT_NAMES)}")
