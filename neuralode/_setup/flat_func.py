"""``FlatFunc``: the user's ``func(t, y)`` as the solvers call it, on flat vectors, counted and checked."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..stats import PassCounts
from .layout import StateLayout, time_tensor
from .precision import AutocastSetting


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
        counts: PassCounts,
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
        out = self.func(t_tensor, y.view(*layout.plain_shape))
        flat = out.flatten() if isinstance(out, Tensor) else None
        if flat is None or flat.numel() != layout.size:  # O(1): the shape was checked at the first call
            self._shape_changed(out, t)
        return flat

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
        try:
            flat = self.layout.flatten(out)
        except (
            AttributeError,
            TypeError,
            RuntimeError,
        ):  # not tensors any more, or a tuple of another length
            flat = None
        if flat is None or flat.numel() != self.layout.size:
            self._shape_changed(out, float(t))
        return flat

    def _shape_changed(self, out: object, t: float) -> None:
        """func's output no longer fits y0 (it did at the first call): say so, naming both shapes."""
        layout = self.layout

        def describe(x: object) -> str:
            if isinstance(x, Tensor):
                return f"shape {tuple(x.shape)}"
            if isinstance(x, tuple | list):
                return "(" + ", ".join(describe(o) for o in x) + ")"
            return type(x).__name__

        expected = ", ".join(f"shape {tuple(shape)}" for shape in layout.shapes)
        raise ValueError(
            f"func returned {describe(out)} at t={t!r}, but y0 has {expected} (and func's first output had "
            "it): dy/dt must have the shape of y at every call"
        )

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
