"""Argument checks of every solve: each runs before the first step, and each error names the argument
and says how to fix it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..solvers import DEFAULT_METHOD, SOLVERS, Solver
from .layout import StateLayout


def check_func(func: Any) -> None:
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y) -> dy/dt, got {type(func).__name__}")


def check_y0(y0: Any) -> StateLayout:
    tensors = (y0,) if isinstance(y0, Tensor) else y0
    if not isinstance(y0, Tensor) and not (isinstance(y0, tuple | list) and len(y0) > 0):
        raise TypeError(f"y0 must be a tensor or a non-empty tuple of tensors, got {type(y0).__name__}")
    for i, x in enumerate(tensors):
        where = f"y0[{i}]" if not isinstance(y0, Tensor) else "y0"
        if not isinstance(x, Tensor):
            raise TypeError(f"{where} must be a torch.Tensor, got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{where} must be floating point, got {x.dtype}; convert it, e.g. y0.float()")
        if x.device != tensors[0].device:
            raise ValueError(f"{where} is on {x.device} but y0[0] is on {tensors[0].device}: use one device")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{where} contains NaN or infinite values: the initial state must be finite")
    return StateLayout(tuple(y0) if not isinstance(y0, Tensor) else y0)


def check_t(t: Any) -> list[float]:
    """Output times as floats; strictly monotone, finite, 1-D, at least one entry."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a 1-D torch.Tensor of output times, got {type(t).__name__}")
    if t.dim() != 1:
        raise ValueError(f"t must be 1-D (the output times), got shape {tuple(t.shape)}")
    if t.numel() < 1:
        raise ValueError("t must contain at least one time (t[0] is the time of y0)")
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"t must be real-valued, got {t.dtype}")
    times = t.detach().cpu().double().tolist()
    if not all(math.isfinite(v) for v in times):
        raise ValueError("t contains NaN or infinite values; output times must be finite")
    if len(times) > 1:
        steps = [b - a for a, b in itertools.pairwise(times)]
        if not (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
            raise ValueError("t must be strictly increasing or strictly decreasing (no repeated times)")
    return times


def check_adjoint_params(func: Any, adjoint_params: Any, caller: str) -> tuple[Tensor, ...]:
    """The tensors a gradient is taken for: ``adjoint_params``, by default ``func.parameters()``; of
    those, the ones that require grad."""
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise ValueError(
                f"func is not an nn.Module, so {caller} cannot find its parameters: pass "
                "adjoint_params=(tensors it uses...), or adjoint_params=() if it has none"
            )
        adjoint_params = tuple(func.parameters())
    adjoint_params = tuple(adjoint_params)
    for i, p in enumerate(adjoint_params):
        if not isinstance(p, Tensor):
            raise TypeError(f"adjoint_params[{i}] must be a torch.Tensor, got {type(p).__name__}")
    return tuple(p for p in adjoint_params if p.requires_grad)


def make_solver(method: str | None, options: Mapping[str, Any] | None, arg: str = "method") -> Solver:
    method = DEFAULT_METHOD if method is None else method
    if not isinstance(method, str):
        raise TypeError(
            f"{arg} must be a method name (a str) from neuralode.SOLVERS, e.g. 'dopri5', or None; "
            f"got {type(method).__name__} {method!r}"
        )
    if method not in SOLVERS:
        raise ValueError(f'{arg}="{method}" is unknown; choose one of: {", ".join(SOLVERS)}')
    solver_class = SOLVERS[method]
    options_arg = "options" if arg == "method" else "adjoint_options"
    return solver_class(solver_class.options_class.parse(options, method, options_arg))


class FrozenOptions(Mapping):
    """A read-only options dict (what a frozen config holds): no item assignment, and it copies,
    pickles and compares like the dict it was made from."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return repr(self._items)

    def __reduce__(self):
        return (FrozenOptions, (self._items,))


def frozen_options(options: Any, name: str) -> Mapping[str, Any] | None:
    """A read-only copy of an options dict (a frozen config holds one), or None; refuses non-mappings."""
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise TypeError(f"{name} must be a dict of method options or None, got {type(options).__name__}")
    return FrozenOptions(options)


def backward_options(adjoint_options: Mapping[str, Any] | None, options: Mapping[str, Any] | None):
    """The adjoint's options: its own, else the forward ones without "norm" (a forward norm is over the
    state, not the augmented state of the backward solve)."""
    if adjoint_options is not None or options is None:
        return adjoint_options
    return {k: v for k, v in options.items() if k != "norm"}
