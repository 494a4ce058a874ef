"""The solver's view of the user's state: one flat vector, whatever the user passed.

Solvers step a flat 1-D tensor; :class:`StateLayout` converts to and from the user's structure
(a tensor of any shape, or a tuple of tensors) and :class:`FlatFunc` wraps ``func(t, y)`` so that
it takes and returns flat vectors, counts its calls, and checks its first output. States in
float16/bfloat16 are integrated in float32 and handed to ``func`` in their own dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .precision import AutocastSetting
from .stats import SolverCounts

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


class FlatFunc:
    """``func(t, y)`` on flat vectors, counting calls into ``counts``.

    The solvers call it with a Python float time; :meth:`call_tensor_t` takes a tensor time (the
    adjoint uses it to differentiate with respect to t). The first call checks the output's shape,
    dtype and finiteness, so a wrong ``func`` fails before any step is taken.
    """

    def __init__(
        self,
        func: Callable,
        layout: StateLayout,
        counts: SolverCounts,
        autocast: AutocastSetting | None = None,
    ) -> None:
        self.func = func
        self.layout = layout
        self.counts = counts
        self.autocast = autocast  # the caller's autocast, re-entered around every call of func
        self._checked = False

    def __call__(self, t: float, y: Tensor, perturb: float = 0.0) -> Tensor:
        layout = self.layout
        if perturb or not self._checked or not layout.is_plain or self.autocast is not None:
            return self.call_tensor_t(time_tensor(t, layout.dtype, y.device, perturb), y)
        # The hot path of every solver step: a tensor time, two views, no dtype conversion. (A view to
        # a tuple of ints costs a quarter of a view to a torch.Size.)
        self.counts.nfe += 1
        t_tensor = torch.scalar_tensor(t, dtype=layout.dtype, device=y.device)
        return self.func(t_tensor, y.view(*layout.plain_shape)).flatten()

    def call_tensor_t(self, t: Tensor, y: Tensor) -> Tensor:
        self.counts.nfe += 1
        if self.autocast is None:
            out = self.func(t, self.layout.unflatten(y))
        else:
            with self.autocast.func_context():
                out = self.func(t, self.layout.unflatten(y))
            out = self._to_state_dtypes(out)
        if not self._checked:
            self._check_output(out, float(t))
        return self.layout.flatten(out)

    def _to_state_dtypes(self, out: object) -> object:
        """Autocast outputs (bfloat16/float16) back in the dtypes of y0; the check sees anything else."""
        dtypes = self.layout.user_dtypes
        if isinstance(out, Tensor):
            return out.to(dtypes[0]) if out.is_floating_point() else out
        if isinstance(out, tuple | list) and len(out) == len(dtypes):
            return tuple(
                o.to(d) if isinstance(o, Tensor) and o.is_floating_point() else o
                for o, d in zip(out, dtypes, strict=True)
            )
        return out

    def _check_output(self, out: object, t: float) -> None:
        layout = self.layout
        outs: Sequence[object]
        if layout.is_tuple:
            if not isinstance(out, tuple | list) or len(out) != len(layout.shapes):
                raise ValueError(
                    f"func must return a tuple of {len(layout.shapes)} tensors (one per tensor of y0), "
                    f"got {type(out).__name__}"
                )
            outs = out
        else:
            outs = (out,)
        for i, (o, shape, dtype) in enumerate(zip(outs, layout.shapes, layout.user_dtypes, strict=True)):
            where = f" (tensor {i} of the tuple)" if layout.is_tuple else ""
            if not isinstance(o, Tensor):
                raise ValueError(f"func must return a torch.Tensor{where}, got {type(o).__name__}")
            if o.shape != shape:
                raise ValueError(
                    f"func returned shape {tuple(o.shape)}{where} but y0 has shape {tuple(shape)}: "
                    "dy/dt must have the shape of y"
                )
            if o.dtype != dtype:
                raise ValueError(
                    f"func returned dtype {o.dtype}{where} but y0 has dtype {dtype}: "
                    "return dy/dt in the dtype of y (e.g. cast parameters with .to(y0.dtype))"
                )
            if not bool(torch.isfinite(o).all()):
                raise ValueError(f"func returned a non-finite derivative (NaN or inf){where} at t={t}")
        self._checked = True
