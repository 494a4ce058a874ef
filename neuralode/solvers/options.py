"""Solver options as frozen dataclasses: unknown names and bad values raise before any work."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from .krylov import JVP_MODES

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
        unknown = sorted(map(repr, set(options) - set(valid)))  # by repr: keys need not be strings
        if unknown:
            raise ValueError(
                f"{arg} has unknown key(s) {', '.join(unknown)} for method={method!r}; "
                f"valid keys: {', '.join(valid)}"
            )
        parsed = cls(**options)
        parsed.validate(arg)
        return parsed

    def validate(self, arg: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


DEFAULT_MAX_NUM_STEPS = 1_000_000  # an ordinary solve (its end time bounds it too)
DEFAULT_EVENT_MAX_NUM_STEPS = 1_000  # an event search, which has no end time: fail in well under a second


def resolve_max_num_steps(value: int | None, event: bool) -> int:
    """The step bound of one solve: ``options['max_num_steps']`` if set, else the default for an
    ordinary solve or, smaller, for an open-ended event search (which otherwise runs for minutes)."""
    if value is not None:
        return int(value)
    return DEFAULT_EVENT_MAX_NUM_STEPS if event else DEFAULT_MAX_NUM_STEPS


def _is_real(value: Any) -> bool:
    """A real number (int, float or NumPy scalar), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive(value: Any, name: str, arg: str, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = _is_real(value) and math.isfinite(value)
    if ok and (value > 0 or (allow_zero and value == 0)):
        return
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{arg}[{name!r}] must be a finite number {bound}, got {value!r}")


def _max_step(value: Any, arg: str) -> None:
    """A step bound: a number > 0, infinity allowed (no bound), NaN not."""
    if not (_is_real(value) and value > 0):
        raise ValueError(f"{arg}['max_step'] must be a number > 0 (math.inf for no bound), got {value!r}")


def _check_max_num_steps(value: Any, arg: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"{arg}['max_num_steps'] must be an int >= 1 (steps before the solve gives up), or None for "
            f"the default ({DEFAULT_MAX_NUM_STEPS:,}; {DEFAULT_EVENT_MAX_NUM_STEPS:,} for an event search), "
            f"got {value!r}"
        )


def _in_range(value: Any, name: str, arg: str, low: float, high: float, why: str) -> None:
    """A finite number in (low, high] (low < value <= high); ``why`` says what it does."""
    if not (_is_real(value) and math.isfinite(value) and low < value <= high):
        upper = "inf)" if math.isinf(high) else f"{high:g}]"
        raise ValueError(
            f"{arg}[{name!r}] must be a finite number in ({low:g}, {upper} ({why}), got {value!r}"
        )


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
        max_num_steps: the most steps a grid may have (a longer one is refused before it is built);
            for an event search, the steps taken before EventNotFoundError. None: 1,000,000, and
            1,000 for an event search.
    """

    step_size: float | None = None
    grid_constructor: Callable | None = None
    perturb: bool = False
    interp: str = "linear"
    max_num_steps: int | None = None

    def validate(self, arg: str) -> None:
        _positive(self.step_size, "step_size", arg, allow_none=True)
        _check_max_num_steps(self.max_num_steps, arg)
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
        max_num_steps: attempted steps (accepted + rejected) before MaxStepsExceededError
            (EventNotFoundError in an event search). None: 1,000,000, and 1,000 for an event search.
        safety, ifactor, dfactor: new step = old * clamp(safety * ratio^-k, dfactor, ifactor), with
            safety in (0, 1], ifactor >= 1, dfactor in (0, 1].
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
            step size the previous one ended with, and the first from the forward solve's last step,
            instead of a new initial-step selection (True default).
    """

    first_step: float | None = None
    min_step: float = 0.0
    max_step: float = math.inf
    max_num_steps: int | None = None
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
        _max_step(self.max_step, arg)
        if self.min_step > self.max_step:
            raise ValueError(f"{arg}: min_step={self.min_step} is larger than max_step={self.max_step}")
        _check_max_num_steps(self.max_num_steps, arg)
        _in_range(self.safety, "safety", arg, 0.0, 1.0, "the fraction of the predicted step taken, e.g. 0.9")
        _in_range(self.dfactor, "dfactor", arg, 0.0, 1.0, "the most a step may shrink by, e.g. 0.2")
        if not (_is_real(self.ifactor) and math.isfinite(self.ifactor) and self.ifactor >= 1):
            raise ValueError(
                f"{arg}['ifactor'] must be a finite number >= 1 (the most a step may grow by, e.g. 10), "
                f"got {self.ifactor!r}"
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


LINEAR_SOLVERS = ("auto", "dense", "krylov")


@dataclass(frozen=True)
class ESDIRKOptions(AdaptiveOptions):
    """Options of the adaptive implicit ESDIRK methods (kvaerno3, kvaerno5): those of adaptive
    methods, with the PI controller by default (smoother steps where stability limits them), plus

    Attributes:
        max_iters: Newton iterations per stage before the step is rejected and retried 4x shorter.
        linear_solver: how Newton's linear systems are solved: "dense" (LU of the N x N matrix, reused
            across stages and steps), "krylov" (matrix-free GMRES with Jacobian-vector products,
            memory O(N)), or "auto": dense up to ``AUTO_DENSE_MAX`` state entries, Krylov above.
        jvp: Krylov's Jacobian-vector products: "forward" (forward-mode autograd), "backward"
            (double-backward autograd), "differences" (forward differences, one evaluation each), or
            "auto" (differences: the fastest measured, see solvers/krylov.py).
        krylov_restart: GMRES's restart length (vectors kept: memory krylov_restart * N).
        krylov_max_iters: GMRES products per Newton iteration at most.
    """

    controller: str = "pi"
    max_iters: int = 10
    linear_solver: str = "auto"
    jvp: str = "auto"
    krylov_restart: int = 20
    krylov_max_iters: int = 100

    def validate(self, arg: str) -> None:
        super().validate(arg)
        _int_in(self.max_iters, "max_iters", arg, 1, 10_000)
        _int_in(self.krylov_restart, "krylov_restart", arg, 1, 1_000)
        _int_in(self.krylov_max_iters, "krylov_max_iters", arg, 1, 1_000_000)
        if self.linear_solver not in LINEAR_SOLVERS:
            raise ValueError(
                f"{arg}['linear_solver'] must be one of {LINEAR_SOLVERS}, got {self.linear_solver!r}"
            )
        if self.jvp not in JVP_MODES:
            raise ValueError(f"{arg}['jvp'] must be one of {JVP_MODES}, got {self.jvp!r}")


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
        max_num_steps: SciPy steps before MaxStepsExceededError (EventNotFoundError in an event
            search). None: 1,000,000, and 1,000 for an event search.
    """

    solver: str = "LSODA"
    min_step: float = 0.0
    max_step: float = math.inf
    first_step: float | None = None
    max_num_steps: int | None = None

    def validate(self, arg: str) -> None:
        if not isinstance(self.solver, str) or self.solver not in SCIPY_SOLVERS:
            raise ValueError(
                f"{arg}['solver'] must be one of {', '.join(SCIPY_SOLVERS)}, got {self.solver!r}"
            )
        _positive(self.min_step, "min_step", arg, allow_zero=True)
        _max_step(self.max_step, arg)
        _check_max_num_steps(self.max_num_steps, arg)
        _positive(self.first_step, "first_step", arg, allow_none=True)
        if self.min_step > 0 and self.solver != "LSODA":
            raise ValueError(
                f"{arg}['min_step'] is only used by solver='LSODA' (SciPy's other methods lack it)"
            )
        if self.min_step > self.max_step:
            raise ValueError(f"{arg}: min_step={self.min_step} is larger than max_step={self.max_step}")
