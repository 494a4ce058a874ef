"""Error norms for step-size control, applied to error / (atol + rtol * max(|y0|, |y1|)).

Each norm maps the flat scaled error to a 0-dim tensor. The built-in norms are homogeneous, so the
solver can leave the step size out and multiply it in on the host (one tensor op fewer per step).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .layout import StateLayout


class RMSNorm:
    """Root mean square over each tensor of the state, then the maximum over tensors.

    ``segments`` are the sizes of the tensors in the flat vector; ``use`` picks the ones that count
    (the adjoint's seminorm counts only the state and its adjoint, not the parameter integrals).
    """

    homogeneous = True

    def __init__(self, segments: Sequence[int], use: Sequence[int] | None = None) -> None:
        self.segments = tuple(segments)
        self.use = tuple(range(len(segments))) if use is None else tuple(use)
        self._single = len(self.segments) == 1
        self._inv_sqrt = [1.0 / math.sqrt(max(n, 1)) for n in self.segments]

    def __call__(self, x: Tensor) -> Tensor:
        if self._single:
            return torch.linalg.vector_norm(x) * self._inv_sqrt[0]
        pieces = x.split(self.segments)
        norms = [torch.linalg.vector_norm(pieces[i]) * self._inv_sqrt[i] for i in self.use]
        return norms[0] if len(norms) == 1 else torch.stack(norms).max()

    def segment_norms(self, x: Tensor) -> Tensor:
        """The RMS of each counted tensor, (len(use),): for error estimates that are combined per
        tensor before the maximum (DOP853's blend), so that a seminorm stays below the norm."""
        if self._single:
            return (torch.linalg.vector_norm(x) * self._inv_sqrt[0]).reshape(1)
        pieces = x.split(self.segments)
        return torch.stack([torch.linalg.vector_norm(pieces[i]) * self._inv_sqrt[i] for i in self.use])

    def host(self, x: Tensor) -> float:
        """The norm as a Python float: the engines' step control needs it on the host anyway, and
        the scaling by 1/sqrt(n) is then a float product instead of one more tensor op."""
        if self._single:
            return float(torch.linalg.vector_norm(x)) * self._inv_sqrt[0]
        return float(self(x))


class UserNorm:
    """A user's ``norm(error_in_user_structure) -> scalar``, given the step-scaled error.

    Every value is checked (the step control reads it on the host anyway): a real scalar, >= 0, and
    finite whenever the error is, so that a misbehaving norm is named as such and not blamed on func.
    """

    homogeneous = False

    def __init__(self, norm: Callable, layout: StateLayout, arg: str = "options") -> None:
        self.norm = norm
        self.layout = layout
        self.name = f"{arg}['norm']"

    def __call__(self, x: Tensor) -> Tensor:
        value = self.norm(self.layout.unflatten(x))
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"{self.name} must return a scalar, got a tensor of shape {tuple(value.shape)}"
                )
            if value.is_complex() or value.dtype == torch.bool:
                raise TypeError(f"{self.name} must return a real scalar, got dtype {value.dtype}")
            number = float(value)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            number = float(value)
            value = torch.as_tensor(number, dtype=x.dtype, device=x.device)
        else:
            raise TypeError(
                f"{self.name} must return a real scalar (a float or 0-dim tensor), got {type(value).__name__}"
            )
        if number < 0:
            raise ValueError(f"{self.name} returned {number!r}: a norm is >= 0 (e.g. the RMS of the error)")
        if not math.isfinite(number) and bool(torch.isfinite(x).all()):
            raise ValueError(
                f"{self.name} returned {number!r} for a finite error: it must return a finite number >= 0"
            )
        return value.squeeze()  # 0-dim


def build_norm(
    option: Callable | str | None,
    segments: tuple[int, ...],
    layout: StateLayout,
    arg: str = "options",
    solved: tuple[int, ...] | None = None,
) -> Callable[[Tensor], Tensor]:
    """The error norm an ``options["norm"]`` asks for, over a flat state of tensors of ``segments``
    sizes (``layout`` gives a user norm their structure): None or "rms" the max of per-tensor RMS
    norms, "seminorm" the same over the ``solved`` tensors only (the adjoint's state and adjoint,
    not its parameter integrals), a callable the user's norm."""
    if option is None or option == "rms":
        return RMSNorm(segments)
    if option == "seminorm":
        if solved is None:
            raise ValueError(
                "options['norm']='seminorm' only applies to the adjoint: put it in adjoint_options"
            )
        return RMSNorm(segments, use=solved)
    return UserNorm(option, layout, arg)
