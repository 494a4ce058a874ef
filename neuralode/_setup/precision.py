"""Mixed precision: the vector field may run under ``torch.autocast``, the solver never does.

Under an enclosing ``torch.autocast`` (bfloat16 or float16), the state, the times, the stage
arithmetic and the error control stay in the state's dtype (float32 or float64); only the calls of
``func`` run under the caller's autocast, and their low-precision outputs are cast back to the state's
dtype. The adjoint's backward pass re-evaluates ``func`` under the same autocast setting as the
forward pass, so both see the same function.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AutocastSetting:
    """The caller's autocast for one device type, captured when the solve starts."""

    device_type: str
    dtype: torch.dtype

    def func_context(self) -> contextlib.AbstractContextManager:
        """Re-enter the caller's autocast around a call of ``func``."""
        return torch.autocast(self.device_type, dtype=self.dtype)


def capture_autocast(device: torch.device) -> AutocastSetting | None:
    """The autocast in force for ``device``'s type, or None when there is none."""
    device_type = device.type if device.type in ("cuda", "cpu") else "cpu"
    if not torch.is_autocast_enabled(device_type):
        return None
    return AutocastSetting(device_type, torch.get_autocast_dtype(device_type))


@contextlib.contextmanager
def solver_precision(setting: AutocastSetting | None) -> Iterator[None]:
    """Run the solver's own arithmetic with autocast off (a no-op when none was in force)."""
    if setting is None:
        yield
        return
    with torch.autocast(setting.device_type, enabled=False):
        yield
