"""Tolerances: the forms rtol/atol take (a number, one per member of a tuple y0, a tensor per element),
their checks, the floor a dtype can deliver, and the adjoint's backward tolerances."""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ToleranceWarning
from ..solvers import Solver
from ..solvers.options import AdaptiveOptions, ScipyOptions
from .layout import StateLayout

# what rtol/atol accept: a number, one per member of a tuple y0, or a tensor (see check_tolerance)
ToleranceArg = float | Sequence[float] | Tensor
# a checked tolerance: a Python float, or one entry per element of the flat state (its device and dtype)
Tolerance = float | Tensor


def check_tolerance(value: Any, name: str, layout: StateLayout | None = None) -> Tolerance:
    """A tolerance as a float, or, per component, as a flat per-element tensor for ``layout``'s state.

    A number: any finite number >= 0 (Python or NumPy, a one-element array or tensor; 0 is pure absolute
    or pure relative control); it stays a float, so the common case costs nothing. Per component (only
    with ``layout``): for a tuple y0, a list/tuple or 1-D tensor with one number per member; for a
    tensor y0, a tensor broadcastable to y0's shape. Entries are finite and >= 0 (use 1e20 to leave a
    member out of the error control) and are clamped to the dtype's largest value.
    """
    per_component = isinstance(value, list | tuple) or (
        isinstance(value, Tensor | np.ndarray)
        and (value.numel() if isinstance(value, Tensor) else value.size) != 1
    )
    if not per_component:
        return _scalar_tolerance(value, name)
    if layout is None:
        raise ValueError(f"{name} must be a scalar, got {_describe(value)}")
    values = _per_member(value, name, layout) if layout.is_tuple else _per_element(value, name, layout)
    if values.numel() and bool((values == values[0]).all()):  # one value after all: the scalar fast path
        return float(values[0])
    limit = torch.finfo(layout.dtype).max  # 1e300 in float32 is its largest value, not inf
    return values.clamp(max=limit).to(device=layout.device, dtype=layout.dtype).reshape(-1).contiguous()


def _scalar_tolerance(value: Any, name: str) -> float:
    if isinstance(value, Tensor) and value.requires_grad:
        raise ValueError(f"{name} requires grad: tolerances are not differentiable; pass {name}.detach()")
    if isinstance(value, Tensor | np.ndarray):
        size = value.numel() if isinstance(value, Tensor) else value.size
        if size != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()  # a bool tensor gives a bool, refused below
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a number >= 0 (float, int, NumPy scalar or one-element tensor), or one per "
            f"member of a tuple y0 (list or tuple); got {type(value).__name__}"
        )
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        hint = " (1e20 leaves a member out of the error control)" if value == math.inf else ""
        raise ValueError(f"{name} must be a finite number >= 0, got {value}{hint}")
    return value


def _describe(value: Any) -> str:
    if isinstance(value, list | tuple):
        return f"a {type(value).__name__} of {len(value)} entries"
    return f"a tensor of shape {tuple(value.shape)}"


def _per_member(value: Any, name: str, layout: StateLayout) -> Tensor:
    """One number per member of a tuple y0, each repeated over its member's elements (float64, CPU)."""
    members = len(layout.shapes)
    if isinstance(value, Tensor | np.ndarray) and value.ndim != 1:
        raise ValueError(
            f"{name} is a tensor of shape {tuple(value.shape)}, but y0 is a tuple of {members} tensors: give "
            f"a number, or one per member (a list, tuple or 1-D tensor of length {members})"
        )
    if len(value) != members:
        raise ValueError(
            f"{name} has {len(value)} entries but y0 is a tuple of {members} tensors: give one tolerance "
            "per member (or a single number for all)"
        )
    entries = [_scalar_tolerance(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return torch.tensor(entries, dtype=torch.float64).repeat_interleave(torch.tensor(layout.numels))


def _per_element(value: Any, name: str, layout: StateLayout) -> Tensor:
    """A tensor broadcastable to a tensor y0's shape, expanded to it (float64, CPU)."""
    shape = tuple(layout.shapes[0])
    if isinstance(value, list | tuple):
        raise TypeError(
            f"{name} is a {type(value).__name__}, but y0 is a tensor: a list/tuple gives one tolerance per "
            f"member of a tuple y0; for a tensor y0 give a number or a tensor broadcastable to its shape "
            f"{shape}"
        )
    tensor = torch.as_tensor(value)
    if tensor.requires_grad:
        raise ValueError(f"{name} requires grad: tolerances are not differentiable; pass {name}.detach()")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must be a real tensor, got dtype {tensor.dtype}")
    try:
        fits = torch.broadcast_shapes(tensor.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)}, which does not broadcast to y0's shape {shape}: give a "
            "number, or a tensor broadcastable to y0 (one tolerance per element)"
        )
    values = tensor.detach().to(device="cpu", dtype=torch.float64)
    bad = ~(torch.isfinite(values) & (values >= 0))
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} must be finite numbers >= 0, got {float(values[index])} at index {index} (1e20 leaves "
            "an element out of the error control)"
        )
    return values.expand(shape).reshape(-1)


def is_adaptive(solver: Solver) -> bool:
    """Whether the solver controls its error with rtol/atol (fixed-grid explicit methods ignore them)."""
    return isinstance(solver.options, AdaptiveOptions | ScipyOptions)


def solve_tolerances(
    solver: Solver,
    rtol: Tolerance,
    atol: Tolerance,
    dtype: torch.dtype,
    names: tuple[str, str] = ("rtol", "atol"),
    where: Callable[[int], str] | None = None,
) -> tuple[Tolerance, Tolerance]:
    """The tolerances an adaptive solve uses: both zero is refused (for a per-component tolerance: at
    any element), and a positive rtol below what the integration dtype can deliver (:func:`rtol_floor`)
    is raised to it with one :class:`ToleranceWarning`, as SciPy's ``solve_ivp`` does (such steps only
    chase round-off). rtol=0 stays pure absolute control. ``where(k)`` names flat element k."""
    if not is_adaptive(solver):
        return rtol, atol
    reason = (
        f"an adaptive method needs one of them > 0 (pure relative control needs {names[0]} > 0, pure "
        f"absolute control {names[1]} > 0); both zero would make every step fail its error test"
    )
    if not isinstance(rtol, Tensor) and not isinstance(atol, Tensor):
        if rtol == 0 and atol == 0:
            raise ValueError(f"{names[0]} and {names[1]} are both 0: {reason}")
    else:
        both = torch.as_tensor(rtol == 0) & torch.as_tensor(atol == 0)
        if bool(both.any()):
            k = int(both.reshape(-1).nonzero()[0])
            place = where(k) if where is not None else f"element {k} of the flat state"
            raise ValueError(f"{names[0]} and {names[1]} are both 0 for {place}: {reason}")
    floor = rtol_floor(dtype)
    if isinstance(rtol, Tensor):
        low = (rtol > 0) & (rtol < floor)
        if bool(low.any()):
            warnings.warn(
                f"{names[0]} has entries below what {dtype} can deliver (the smallest is "
                f"{float(rtol[low].min()):g}, the floor {floor:.3g}; smaller only costs steps): they are "
                f"raised to {floor:.3g}",
                ToleranceWarning,
                stacklevel=_user_stacklevel(),
            )
            rtol = torch.where(low, torch.full_like(rtol, floor), rtol)
    elif 0 < rtol < floor:
        warnings.warn(
            f"{names[0]}={rtol:g} is below what {dtype} can deliver ({floor:.3g}; smaller only costs "
            f"steps): using {names[0]}={floor:.3g}",
            ToleranceWarning,
            stacklevel=_user_stacklevel(),
        )
        rtol = floor
    return rtol, atol


def member_of(layout: StateLayout) -> Callable[[int], str]:
    """Names the member of y0 (or the index in a tensor y0) that flat element k belongs to."""

    def where(k: int) -> str:
        if not layout.is_tuple:
            index = tuple(int(i) for i in np.unravel_index(k, tuple(layout.shapes[0])))
            return f"y0 at index {index}"
        ends = np.cumsum(layout.numels)
        return f"y0[{int(np.searchsorted(ends, k, side='right'))}]"

    return where


# float32 delivers rtol 1e-7 (y' = -y and a tanh field: relative errors 0-6e-7 at 50-68 evaluations);
# below it the error stays there while the cost grows (1e-11: 1412-3038 evaluations). So 1e-7, not
# 100 eps = 1.2e-5, which would make every float32 solve at the default rtol=1e-7 warn and lose accuracy.
MAX_RTOL_FLOOR = 1e-7


def rtol_floor(dtype: torch.dtype) -> float:
    """The smallest rtol an adaptive solve in ``dtype`` is given: 100 machine epsilons, as in SciPy
    (2.2e-14 for float64), but never above 1e-7 (float32's: see ``MAX_RTOL_FLOOR``)."""
    return min(100 * torch.finfo(dtype).eps, MAX_RTOL_FLOOR)


def _user_stacklevel() -> int:
    """The stacklevel of the first caller outside neuralode, so a warning shows (and is shown once
    for) the user's line."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "neuralode":
        level += 1
        frame = frame.f_back
    return level


def backward_tolerances(
    solver: Solver,
    layout: StateLayout,
    rtol: Any,
    atol: Any,
    adjoint_rtol: Any,
    adjoint_atol: Any,
    param_sizes: Sequence[int] = (),
) -> tuple[Tolerance, Tolerance]:
    """The adjoint's backward tolerances: ``adjoint_rtol``/``adjoint_atol``, each defaulting to the
    forward one, checked like those (same forms) for the backward method.

    A per-component tolerance covers the backward state [y, a, dL/dparams...] as one flat tensor: its
    entries for y also apply to a = dL/dy (which has y's structure), and the parameter integrals take
    its smallest entry (the strictest).
    """
    names = (
        "rtol" if adjoint_rtol is None else "adjoint_rtol",
        "atol" if adjoint_atol is None else "adjoint_atol",
    )
    values = (rtol if adjoint_rtol is None else adjoint_rtol, atol if adjoint_atol is None else adjoint_atol)
    checked = [check_tolerance(value, name, layout) for value, name in zip(values, names, strict=True)]
    n, rest = layout.size, sum(param_sizes)
    for i, tol in enumerate(checked):
        if isinstance(tol, Tensor):
            checked[i] = torch.cat([tol, tol, tol.min().expand(rest)])
    forward_where = member_of(layout)

    def where(k: int) -> str:
        if k < 2 * n:
            return f"{forward_where(k % n)} ({'the state' if k < n else 'its adjoint'} in the backward solve)"
        return "the parameter integrals of the backward solve (they take the smallest entry)"

    return solve_tolerances(solver, checked[0], checked[1], layout.dtype, names, where)
