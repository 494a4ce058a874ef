"""A gradient strategy by name, as a config gives it ("direct", "adjoint", "checkpoint")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .adjoint import Adjoint
from .checkpointed import Checkpointed
from .direct import Direct

Gradient = Direct | Adjoint | Checkpointed
GRADIENT_NAMES = ("direct", "adjoint", "checkpoint")
ADJOINT_SETTINGS = ("rtol", "atol", "method", "options")  # what Adjoint(...) takes


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
        unknown = set(settings) - set(ADJOINT_SETTINGS)
        if unknown:
            raise ValueError(
                f"unknown adjoint settings {sorted(unknown)}: the backward solve takes rtol, atol, method "
                "and options"
            )
        return Adjoint(**settings)
    if name == "checkpoint":
        return Checkpointed(every=checkpoint_every)
    raise ValueError(f"gradient={name!r} is unknown; choose one of: {', '.join(GRADIENT_NAMES)}")
