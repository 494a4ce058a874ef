"""A per-sample solve's arguments, checked and put in the engines' form: a (B, N) flat state (dim 0 of
every member of y0 is the sample), (B, T) output times, (B, 1) tolerances, and func on that form."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._setup.layout import _LOW_PRECISION, UserState
from ..stats import PassCounts


class SampleLayout:
    """The user's state with a leading sample dimension <-> a (B, N) flat state."""

    def __init__(self, y0: UserState) -> None:
        self.is_tuple = not isinstance(y0, Tensor)
        tensors = tuple(y0) if self.is_tuple else (y0,)
        for i, x in enumerate(tensors):
            where = f"y0[{i}]" if self.is_tuple else "y0"
            if x.dim() == 0:
                raise ValueError(
                    f"per_sample=True needs a sample dimension: {where} is 0-dim; give it shape (B, ...)"
                )
            if x.shape[0] != tensors[0].shape[0]:
                raise ValueError(
                    f"per_sample=True: dim 0 of every member of y0 is the sample dimension, but {where} "
                    f"has {x.shape[0]} rows and y0[0] has {tensors[0].shape[0]}"
                )
        self.batch = int(tensors[0].shape[0])
        self.rest = tuple(tuple(x.shape[1:]) for x in tensors)
        self.numels = tuple(math.prod(r) for r in self.rest)
        self.user_dtypes = tuple(x.dtype for x in tensors)
        common = tensors[0].dtype
        for x in tensors[1:]:
            common = torch.promote_types(common, x.dtype)
        self.dtype = torch.float32 if common in _LOW_PRECISION else common
        self.device = tensors[0].device
        self.size = sum(self.numels)
        # one (B, N) tensor in the integration dtype: func is handed the flat state as it is
        self.plain = not self.is_tuple and len(self.rest) == 1 and self.user_dtypes[0] == self.dtype

    def flatten(self, y: UserState) -> Tensor:
        """(B, ...) members -> (B, N) in the integration dtype."""
        tensors = tuple(y) if self.is_tuple else (y,)
        pieces = [x.reshape(x.shape[0], -1).to(self.dtype) for x in tensors]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)

    def unflatten(self, flat: Tensor) -> UserState:
        """(..., B, N) -> the user's structure with shapes (..., B, *rest), in the user's dtypes."""
        lead = flat.shape[:-1]
        pieces = flat.split(self.numels, dim=-1) if self.is_tuple else (flat,)
        out = tuple(
            p.reshape((*lead, *rest)).to(dtype)
            for p, rest, dtype in zip(pieces, self.rest, self.user_dtypes, strict=True)
        )
        return out if self.is_tuple else out[0]


class SampleFunc:
    """func on the (B, N) flat state with (B,) float64 times: counts each evaluated row's NFE, checks
    the first output, and passes ``rows`` (the sample indices of the rows) when asked to."""

    def __init__(
        self, func: Callable, layout: SampleLayout, counts: PassCounts, with_rows: bool, checked: bool = False
    ) -> None:
        self.func, self.layout, self.counts, self.with_rows = func, layout, counts, with_rows
        self._checked = checked  # True: func's output was checked by an earlier solve (the adjoint's)

    def __call__(self, t: Tensor, y: Tensor, rows: Tensor | None = None) -> Tensor:
        layout = self.layout
        if rows is None:
            self.counts.nfe += 1
        else:
            self.counts.nfe[rows] += 1
        t_user = t if t.dtype == layout.dtype else t.to(layout.dtype)
        y_user = y if layout.plain else layout.unflatten(y)
        if self.with_rows and rows is None:
            rows = torch.arange(y.shape[0], device=y.device)
        try:
            out = self.func(t_user, y_user, rows) if self.with_rows else self.func(t_user, y_user)
        except RuntimeError as error:
            if not self._checked and hasattr(error, "add_note"):  # the first call: say what func was given
                error.add_note(
                    f"(neuralode, per_sample=True: func was called with t a (B,) tensor of shape "
                    f"{tuple(t_user.shape)}, one time per sample, and y of batch {y.shape[0]}; use t per "
                    "row, e.g. t[:, None] * y)"
                )
            raise
        if not self._checked:
            self._check(out, y.shape[0])
        if layout.plain and isinstance(out, Tensor) and out.shape == y.shape and out.dtype == y.dtype:
            return out  # the hot path: already (B, N) in the integration dtype
        return layout.flatten(out)

    def _check(self, out: Any, rows: int) -> None:
        layout = self.layout
        outs = out if layout.is_tuple else (out,)
        if layout.is_tuple and (not isinstance(out, tuple | list) or len(out) != len(layout.rest)):
            raise ValueError(f"func must return a tuple of {len(layout.rest)} tensors (one per member of y0)")
        for i, (o, rest, dtype) in enumerate(zip(outs, layout.rest, layout.user_dtypes, strict=True)):
            where = f" (member {i} of the tuple)" if layout.is_tuple else ""
            if not isinstance(o, Tensor):
                raise ValueError(f"func must return a torch.Tensor{where}, got {type(o).__name__}")
            if tuple(o.shape) != (rows, *rest):
                raise ValueError(
                    f"func returned shape {tuple(o.shape)}{where} for a state of shape {(rows, *rest)}: "
                    "dy/dt must have the shape of y (with per_sample=True, t is a (B,) tensor: use it "
                    "per row, e.g. t[:, None], not as a scalar)"
                )
            if o.dtype != dtype:
                raise ValueError(f"func returned dtype {o.dtype}{where} but y0 has dtype {dtype}")
        self._checked = True


def sample_times(t: Any, batch: int, device: torch.device) -> Tensor:
    """Output times as a (B, T) float64 tensor: ``t`` of shape (T,) shared or (B, T) per sample, each
    row finite and strictly monotone (directions may differ between rows)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor of output times, got {type(t).__name__}")
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"t must be real-valued, got {t.dtype}")
    if t.dim() == 1:
        t = t.unsqueeze(0).expand(batch, -1)
    elif t.dim() != 2 or t.shape[0] != batch:
        raise ValueError(
            f"with per_sample=True, t must have shape (T,) (shared) or (B, T) = ({batch}, T) (one row of "
            f"output times per sample), got {tuple(t.shape)}"
        )
    if t.shape[1] < 1:
        raise ValueError("t must contain at least one time (t[..., 0] is the time of y0)")
    times = t.detach().to(device=device, dtype=torch.float64).contiguous()
    if not bool(torch.isfinite(times).all()):
        raise ValueError("t contains NaN or infinite values; output times must be finite")
    if times.shape[1] > 1:
        steps = times.diff(dim=1)
        monotone = (steps > 0).all(dim=1) | (steps < 0).all(dim=1)
        if not bool(monotone.all()):
            row = int((~monotone).nonzero()[0])
            raise ValueError(
                f"row {row} of t is not strictly monotone: every sample's output times must be strictly "
                "increasing or strictly decreasing (no repeated times)"
            )
    return times


def sample_tolerance(value: Any, name: str, batch: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """rtol/atol as a (B, 1) tensor: a number for every sample, or a (B,) tensor of one per sample."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            value = value.expand(batch)
        if value.dim() != 1 or value.shape[0] != batch:
            raise ValueError(
                f"with per_sample=True, {name} must be a number or a ({batch},) tensor (one per sample), "
                f"got shape {tuple(value.shape)}"
            )
        tol = value.detach().to(device=device, dtype=torch.float64)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        tol = torch.full((batch,), float(value), dtype=torch.float64, device=device)
    else:
        raise TypeError(
            f"with per_sample=True, {name} must be a number or a (B,) tensor, got {type(value).__name__}"
        )
    if not bool((torch.isfinite(tol) & (tol >= 0)).all()):
        raise ValueError(f"{name} must be finite and >= 0 for every sample")
    return tol.to(dtype).unsqueeze(1)


@dataclass
class SampleProblem:
    """A per-sample initial value problem as the per-sample engines see it."""

    func: SampleFunc
    y0: Tensor  # (B, N)
    times: Tensor  # (B, T) float64
    rtol: Tensor  # (B, 1), state dtype
    atol: Tensor
    segments: tuple[int, ...]  # sizes of the members of the flat state (error norm: RMS per member, max)

    @property
    def direction(self) -> Tensor:
        """(B,) +1.0 forwards, -1.0 backwards (float64)."""
        if self.times.shape[1] < 2:
            return torch.ones(self.times.shape[0], dtype=torch.float64, device=self.times.device)
        return torch.sign(self.times[:, -1] - self.times[:, 0])
