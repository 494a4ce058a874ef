"""Solver options as frozen dataclasses: unknown names and bad values raise before any work."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

T = TypeVar("T", bound="_Options")


class _Options:
    @classmethod
    def parse(cls: type[T], options: Mapping[str, Any] | None, method: str, arg: str = "options") -> T:
        """Build from a user's dict, rejecting unknown keys with the list of valid ones."""
        options = {} if options is None else options
        if not isinstance(options, Mapping):
            raise TypeError(f"{arg} must be a dict of solver options, got {type(options).__name__}")
        aliases: dict[str, str] = getattr(cls, "ALIASES", {})
        if any(key in aliases for key in options):
            renamed = dict(options)
            for alias, name in aliases.items():
                if alias in renamed:
                    if name in renamed:
                        raise ValueError(
                            f"{arg}: give either {alias!r} or {name!r} (the same option), not both"
                        )
                    renamed[name] = renamed.pop(alias)
            options = renamed
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(
                f"{arg} has unknown key(s) {', '.join(map(repr, unknown))} for method={method!r}; "
                f"valid keys: {', '.join(valid)}"
            )
        parsed = cls(**options)
        parsed.validate(arg)
        return parsed

    def validate(self, arg: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def _positive(value: Any, name: str, arg: str, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > 0 or (allow_zero and value == 0)):
        return
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{arg}[{name!r}] must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True)
class FixedGridOptions(_Options):
    """Options of fixed-grid methods.

    Without ``step_size`` or ``grid_constructor`` the grid is ``t`` itself, as in torchdiffeq.

    Attributes:
        step_size: grid spacing (the last step is shortened to end exactly at t[-1]).
        grid_constructor: ``fn(func, y0, t) -> grid`` returning a 1-D tensor from t[0] to t[-1].
        perturb: evaluate func just inside each step (never exactly at a grid point), for
            dynamics with discontinuities at grid points.
        interp: how output times between grid points are filled, "linear" or "cubic" (Hermite).
    """

    step_size: float | None = None
    grid_constructor: Callable | None = None
    perturb: bool = False
    interp: str = "linear"

    def validate(self, arg: str) -> None:
        _positive(self.step_size, "step_size", arg, allow_none=True)
        if self.grid_constructor is not None and not callable(self.grid_constructor):
            raise ValueError(f"{arg}['grid_constructor'] must be callable fn(func, y0, t) -> grid")
        if self.step_size is not None and self.grid_constructor is not None:
            raise ValueError(f"{arg}: give either 'step_size' or 'grid_constructor', not both")
        if self.interp not in ("linear", "cubic"):
            raise ValueError(f"{arg}['interp'] must be 'linear' or 'cubic', got {self.interp!r}")
        if not isinstance(self.perturb, bool):
            raise ValueError(f"{arg}['perturb'] must be True or False, got {self.perturb!r}")


CONTROLLERS = ("integral", "pi")
NORMS = ("rms", "seminorm")


@dataclass(frozen=True)
class AdaptiveOptions(_Options):
    """Options of adaptive Runge-Kutta methods.

    Attributes:
        first_step: initial step size; default: Hairer & Wanner's selection (one extra evaluation).
        min_step, max_step: bounds on the step size; a step at ``min_step`` is accepted whatever
            its error.
        max_num_steps: attempted steps (accepted + rejected) before MaxStepsExceededError.
        safety, ifactor, dfactor: new step = old * clamp(safety * ratio^-k, dfactor, ifactor).
        controller: "integral" (the classic controller) or "pi" (proportional-integral, Gustafsson;
            smoother step sequences when the step size is limited by stability).
        norm: callable on the scaled error in the user's structure, or "rms" (default: RMS per
            tensor, max over tensors); "seminorm" only in ``adjoint_options``.
        jump_t: times of discontinuities in func: steps end there and the derivative is re-evaluated
            (torchdiffeq's ``jump_locations`` is accepted as an alias).
        step_t: times the solver must step to exactly (alias ``step_locations``).
        dtype: dtype of time values put on the device (float64 default; float32 where unsupported).
            Step-size arithmetic itself runs on the host in double precision.
        carry_step_size: ``adjoint_options`` only: each interval of the backward solve starts from the
            step size the previous one ended with, instead of a new initial-step selection (True default).
    """

    first_step: float | None = None
    min_step: float = 0.0
    max_step: float = math.inf
    max_num_steps: int = 1_000_000
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    controller: str = "integral"
    norm: Callable | str | None = None
    jump_t: Tensor | None = None
    step_t: Tensor | None = None
    dtype: torch.dtype = torch.float64
    carry_step_size: bool = True
    # torchdiffeq's names for the same options
    ALIASES: ClassVar[dict[str, str]] = {"step_locations": "step_t", "jump_locations": "jump_t"}

    def validate(self, arg: str) -> None:
        _positive(self.first_step, "first_step", arg, allow_none=True)
        _positive(self.min_step, "min_step", arg, allow_zero=True)
        if not (isinstance(self.max_step, int | float) and self.max_step > 0):
            raise ValueError(f"{arg}['max_step'] must be a number > 0, got {self.max_step!r}")
        if self.min_step > self.max_step:
            raise ValueError(f"{arg}: min_step={self.min_step} is larger than max_step={self.max_step}")
        if not isinstance(self.max_num_steps, int) or self.max_num_steps < 1:
            raise ValueError(f"{arg}['max_num_steps'] must be an int >= 1, got {self.max_num_steps!r}")
        _positive(self.safety, "safety", arg)
        if not 0 < self.dfactor <= 1 <= self.ifactor:
            raise ValueError(
                f"{arg}: need 0 < dfactor <= 1 <= ifactor, got dfactor={self.dfactor}, ifactor={self.ifactor}"
            )
        if self.controller not in CONTROLLERS:
            raise ValueError(f"{arg}['controller'] must be one of {CONTROLLERS}, got {self.controller!r}")
        if isinstance(self.norm, str) and self.norm not in NORMS:
            raise ValueError(f"{arg}['norm'] must be a callable or one of {NORMS}, got {self.norm!r}")
        if self.norm is not None and not isinstance(self.norm, str) and not callable(self.norm):
            raise ValueError(f"{arg}['norm'] must be a callable or one of {NORMS}, got {self.norm!r}")
        for name in ("jump_t", "step_t"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, Tensor) and value.dim() == 1):
                raise ValueError(f"{arg}[{name!r}] must be a 1-D tensor of times, got {value!r}")
            if value is not None and not bool(torch.isfinite(value).all()):
                raise ValueError(f"{arg}[{name!r}] contains NaN or infinite times")
        if not (isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point):
            raise ValueError(f"{arg}['dtype'] must be a floating torch.dtype, got {self.dtype!r}")
        if not isinstance(self.carry_step_size, bool):
            raise ValueError(f"{arg}['carry_step_size'] must be True or False, got {self.carry_step_size!r}")


def _int_in(value: Any, name: str, arg: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{arg}[{name!r}] must be an int in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class ImplicitOptions(FixedGridOptions):
    """Options of fixed-grid implicit Runge-Kutta methods: those of fixed-grid methods, plus

    Attributes:
        max_iters: Newton iterations per step before NewtonConvergenceError.
    """

    max_iters: int = 50

    def validate(self, arg: str) -> None:
        super().validate(arg)
        _int_in(self.max_iters, "max_iters", arg, 1, 10_000)


@dataclass(frozen=True)
class AdamsOptions(FixedGridOptions):
    """Options of the fixed-grid Adams methods: those of fixed-grid methods, plus

    Attributes:
        max_order: order of the multistep formula (steps of history); the first max_order - 1
            steps are taken by RK4.
        max_iters: corrector iterations per step (implicit_adams; stops early once converged to
            rtol/atol).
    """

    max_order: int = 4
    max_iters: int = 4

    def validate(self, arg: str) -> None:
        super().validate(arg)
        _int_in(self.max_order, "max_order", arg, 1, 12)
        _int_in(self.max_iters, "max_iters", arg, 1, 10_000)


SCIPY_SOLVERS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")


@dataclass(frozen=True)
class ScipyOptions(_Options):
    """Options of ``scipy_solver``.

    Attributes:
        solver: the SciPy method, one of RK45, RK23, DOP853, Radau, BDF, LSODA.
        min_step: smallest step (LSODA only: SciPy's other methods have no such option).
        max_step: largest step.
        first_step: initial step (default: SciPy's selection).
    """

    solver: str = "LSODA"
    min_step: float = 0.0
    max_step: float = math.inf
    first_step: float | None = None

    def validate(self, arg: str) -> None:
        if self.solver not in SCIPY_SOLVERS:
            raise ValueError(
                f"{arg}['solver'] must be one of {', '.join(SCIPY_SOLVERS)}, got {self.solver!r}"
            )
        _positive(self.min_step, "min_step", arg, allow_zero=True)
        if not (isinstance(self.max_step, int | float) and self.max_step > 0):
            raise ValueError(f"{arg}['max_step'] must be a number > 0, got {self.max_step!r}")
        _positive(self.first_step, "first_step", arg, allow_none=True)
        if self.min_step > 0 and self.solver != "LSODA":
            raise ValueError(
                f"{arg}['min_step'] is only used by solver='LSODA' (SciPy's other methods lack it)"
            )
        if self.min_step > self.max_step:
            raise ValueError(f"{arg}: min_step={self.min_step} is larger than max_step={self.max_step}")
