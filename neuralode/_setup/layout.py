"""The solver's view of the user's state: one flat vector, whatever the user passed.

Solvers step a flat 1-D tensor; :class:`StateLayout` converts to and from the user's structure
(a tensor of any shape, or a tuple of tensors) and :class:`FlatFunc` wraps ``func(t, y)`` so that
it takes and returns flat vectors, counts its calls, and checks its first output. States in
float16/bfloat16 are integrated in float32 and handed to ``func`` in their own dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

UserState = Tensor | tuple[Tensor, ...]
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class StateLayout:
    """Shapes and dtypes of the user's state, and the flat compute dtype."""

    def __init__(self, y0: UserState) -> None:
        self.is_tuple = not isinstance(y0, Tensor)
        tensors: tuple[Tensor, ...] = tuple(y0) if self.is_tuple else (y0,)
        self.shapes = tuple(x.shape for x in tensors)
        self.numels = tuple(x.numel() for x in tensors)
        self.user_dtypes = tuple(x.dtype for x in tensors)
        self.device = tensors[0].device
        common = tensors[0].dtype
        for x in tensors[1:]:
            common = torch.promote_types(common, x.dtype)
        self.dtype = torch.float32 if common in _LOW_PRECISION else common  # integration dtype
        self.size = sum(self.numels)
        # One tensor (not 0-dim) already in the integration dtype: flat <-> user structure are plain views.
        self.is_plain = not self.is_tuple and self.user_dtypes[0] == self.dtype and len(self.shapes[0]) > 0
        self.plain_shape = tuple(int(n) for n in self.shapes[0])

    def flatten(self, y: UserState) -> Tensor:
        """User structure -> flat vector in the integration dtype (differentiable)."""
        if not self.is_tuple:
            return y.reshape(-1).to(self.dtype)
        return torch.cat([x.reshape(-1).to(self.dtype) for x in y])

    def unflatten(self, flat: Tensor) -> UserState:
        """Flat vector (N,) or batch of them (T, N) -> user structure, in the user's dtypes."""
        lead = flat.shape[:-1]
        if not self.is_tuple:
            return flat.view((*lead, *self.shapes[0])).to(self.user_dtypes[0])  # a tuple: 0-dim shapes too
        pieces = flat.split(self.numels, dim=-1)
        return tuple(
            p.reshape((*lead, *shape)).to(dtype)
            for p, shape, dtype in zip(pieces, self.shapes, self.user_dtypes, strict=True)
        )

    def segments(self) -> tuple[int, ...]:
        return self.numels


def time_tensor(t: float, dtype: torch.dtype, device: torch.device, perturb: float = 0.0) -> Tensor:
    """t as the 0-dim tensor func receives; ``perturb`` = +1/-1 moves it to the next representable
    time in that direction *in func's dtype* (a float64 nudge would vanish when cast to float32)."""
    tt = torch.full((), t, dtype=dtype, device=device)
    if perturb:
        tt = torch.nextafter(tt, torch.full((), perturb * math.inf, dtype=dtype, device=device))
    return tt
