"""Step callbacks, as in torchdiffeq: ``func.callback_step(t0, y0, dt)`` before each step,
``func.callback_accept_step`` / ``func.callback_reject_step`` after an accepted / rejected one.

The adjoint's backward solve calls the ``*_adjoint`` versions with the augmented state
``(y, dL/dy, *dL/dparams)``. A method that cannot honour a defined callback (fixed-grid methods
never accept or reject; SciPy steps internally) warns once per solve instead of ignoring it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")
FlatCallback = Callable[[float, Tensor, float], None]


@dataclass
class StepCallbacks:
    """The defined callbacks, each taking (t: float, y: flat tensor, dt: float)."""

    step: FlatCallback | None = None
    accept: FlatCallback | None = None
    reject: FlatCallback | None = None


def make_callbacks(
    func: object,
    unflatten: Callable[[Tensor], object],
    supported: tuple[str, ...],
    method: str,
    dtype: torch.dtype,
    suffix: str = "",
) -> StepCallbacks | None:
    """Collect ``func``'s callbacks named ``callback_*{suffix}``; warn for those the method can't call."""
    found = {}
    for name in NAMES:
        user = getattr(func, name + suffix, None)
        if user is None:
            continue
        if not callable(user):
            raise TypeError(
                f"func.{name + suffix} must be callable as (t0, y0, dt), got {type(user).__name__}"
            )
        if name not in supported:
            why = "never accepts or rejects steps" if supported else "steps inside SciPy"
            warnings.warn(
                f"method={method!r} cannot honour func.{name + suffix} (it {why}); it is not called",
                stacklevel=4,
            )
            continue
        found[name] = _wrap(user, unflatten, dtype)
    if not found:
        return None
    return StepCallbacks(
        step=found.get("callback_step"),
        accept=found.get("callback_accept_step"),
        reject=found.get("callback_reject_step"),
    )


def _wrap(user: Callable, unflatten: Callable[[Tensor], object], dtype: torch.dtype) -> FlatCallback:
    def call(t: float, y: Tensor, dt: float) -> None:
        with torch.no_grad():
            user(
                torch.tensor(t, dtype=dtype, device=y.device),
                unflatten(y),
                torch.tensor(dt, dtype=dtype, device=y.device),
            )

    return call
