"""``SolverConfig``: one frozen value for how a model solves its ODE (method, tolerances, options, gradient).

ODEBlock, CNF and LatentODE take one, experiments build one from the ``solver`` config group, and a
sweep makes a changed copy with :func:`dataclasses.replace` (a model's solver is never assigned to).
Bad settings raise the library's own ``ValueError``/``TypeError`` at construction, naming the setting.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._setup.tolerances import check_tolerance, solve_tolerances
from ._setup.validation import backward_options, frozen_options, make_solver
from .gradients import Adjoint, Checkpointed, Direct, Gradient, gradient_from_name
from .regularization import Regularization, RegularizedSolution, solve_regularized
from .solve import solve
from .solvers import SOLVERS
from .stats import SolveStats


@dataclass(frozen=True)
class SolverConfig:
    """How to solve and differentiate: ``method``, ``rtol``/``atol``, method ``options`` and a
    ``gradient`` strategy (:class:`~neuralode.gradients.Direct`, ``Adjoint(...)`` or
    ``Checkpointed(every=k)``), and optionally a :class:`~neuralode.regularization.Regularization` whose
    penalties a model integrates along its solve (:meth:`solve_regularized`; None: off). Equal configs
    compare equal; :meth:`solve` runs one."""

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    options: Mapping[str, Any] | None = field(default=None)
    gradient: Gradient = field(default_factory=Adjoint)
    regularization: Regularization | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", frozen_options(self.options, "options"))
        if self.regularization is not None and not isinstance(self.regularization, Regularization):
            error = TypeError(
                "regularization must be a neuralode.regularization.Regularization or None, got "
                f"{type(self.regularization).__name__}; from a config mapping use SolverConfig.from_dict"
            )
            error.argument = "regularization"
            raise error
        if not isinstance(self.gradient, Direct | Adjoint | Checkpointed):
            raise TypeError(
                "gradient must be neuralode.gradients.Direct(), Adjoint(...) or Checkpointed(every=k), "
                f"got {type(self.gradient).__name__}; from a config use SolverConfig.from_dict"
            )
        check_solver_config(self)

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> SolverConfig:
        """From a config's ``solver`` group: method, rtol, atol, options, gradient ("direct" | "adjoint"
        | "checkpoint"), adjoint (the backward solve's rtol/atol/method/options), checkpoint_every and
        regularization (a mapping of kinetic, jacobian, time_derivative, noise; absent, null or all
        weights 0: off);
        other keys (a ``name`` label) are ignored."""
        gradient = settings.get("gradient", "adjoint")
        if isinstance(gradient, str):
            gradient = gradient_from_name(
                gradient,
                adjoint=_plain(settings.get("adjoint")),
                checkpoint_every=settings.get("checkpoint_every", 1),
            )
        options = _plain(settings.get("options"))
        regularization = settings.get("regularization")
        if regularization is not None and not isinstance(regularization, Regularization):
            regularization = _check("regularization", Regularization.from_dict, regularization)
        if regularization is not None and not regularization.active:
            regularization = None  # every weight 0 (the "none" group): the plain solve, equal to no group
        return cls(
            method=settings.get("method", "dopri5"),
            rtol=settings.get("rtol", 1e-3),
            atol=settings.get("atol", 1e-3),
            options=options or None,
            gradient=gradient,
            regularization=regularization,
        )

    def replace(self, **changes: Any) -> SolverConfig:
        """A copy with some fields changed (``dataclasses.replace``), checked like a new one."""
        return dataclasses.replace(self, **changes)

    def solve(
        self,
        func: Callable,
        y0: Tensor | tuple[Tensor, ...],
        t: Tensor,
        *,
        params: Sequence[Tensor] | None = None,
        stats: SolveStats | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        """y at every time in ``t``, differentiable by this config's gradient strategy. ``params``: the
        tensors an adjoint or checkpointed gradient is taken for (default ``func.parameters()``)."""
        return solve(func, y0, t, params=params, stats=stats, **self._settings()).ys

    def solve_regularized(
        self,
        func: Callable,
        y0: Tensor,
        t: Tensor,
        *,
        params: Sequence[Tensor] | None = None,
        stats: SolveStats | None = None,
        noise: Tensor | None = None,
    ) -> RegularizedSolution:
        """Like :meth:`solve` for a tensor y0 (batch in dim 0), with this config's regularization
        integrated along the same solve; without one (or with every weight 0) it is the plain solve."""
        return solve_regularized(
            func, y0, t, self.regularization, params=params, stats=stats, noise=noise, **self._settings()
        )

    def _settings(self) -> dict[str, Any]:
        """The keyword arguments every solve of this config takes (one place for both front doors)."""
        return {"rtol": self.rtol, "atol": self.atol, "method": self.method, "options": self.options,
                "gradient": self.gradient}  # fmt: skip

    def describe(self) -> str:
        """A one-line summary for a model's repr and run logs."""
        text = f"method={self.method!r}, rtol={self.rtol}, atol={self.atol}, gradient={self.gradient.name}"
        if self.regularization is not None and self.regularization.active:
            text += f", regularization=({self.regularization.describe()})"
        return text


def _plain(value: Any) -> dict[str, Any] | None:
    """A config mapping (also an OmegaConf DictConfig) as a plain dict; None stays None."""
    if value is None:
        return None
    if hasattr(value, "items"):
        return {k: _plain(v) if hasattr(v, "items") else v for k, v in value.items()}
    raise TypeError(f"expected a mapping, got {type(value).__name__}")


def _blame(method: Any, names: tuple[str, str]) -> str:
    """Which of (method, options) a failed solver build is about: an unknown method, else its options."""
    known = method is None or (isinstance(method, str) and method in SOLVERS)
    return names[1] if known else names[0]


def _check(argument: str, check: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return check(*args, **kwargs)
    except (TypeError, ValueError) as error:
        error.argument = argument  # which setting failed, for callers that map it to their own names
        raise


def check_solver_settings(
    method: str | None,
    rtol: Any,
    atol: Any,
    options: Mapping[str, Any] | None = None,
    *,
    adjoint_method: str | None = None,
    adjoint_options: Mapping[str, Any] | None = None,
) -> None:
    """Raise the library's ``ValueError``/``TypeError`` for a bad method, tolerance or options dict.

    The adjoint's backward settings are checked when given. The raised error's ``argument`` attribute
    names the failing setting: "method", "rtol", "atol", "options", "adjoint_method" or "adjoint_options".
    """
    rtol_f = _check("rtol", check_tolerance, rtol, "rtol")
    atol_f = _check("atol", check_tolerance, atol, "atol")
    try:
        solver = make_solver(method, options)
    except (TypeError, ValueError) as error:
        error.argument = _blame(method, ("method", "options"))
        raise
    with warnings.catch_warnings():  # the dtype is not known yet: the floor's warning belongs to the solve
        warnings.simplefilter("ignore")
        _check("rtol", solve_tolerances, solver, rtol_f, atol_f, torch.float64)  # both 0, adaptive method
    if adjoint_method is None and adjoint_options is None:
        return
    adjoint_options = backward_options(adjoint_options, options)  # what odeint_adjoint does
    try:
        make_solver(adjoint_method or method, adjoint_options, arg="adjoint_method")
    except (TypeError, ValueError) as error:
        error.argument = _blame(adjoint_method or method, ("adjoint_method", "adjoint_options"))
        raise


def check_solver_config(config: SolverConfig) -> None:
    """:func:`check_solver_settings` for a whole config, its gradient strategy included."""
    gradient = config.gradient
    if isinstance(gradient, Adjoint):
        backward = backward_options(gradient.options, config.options) or {}  # {}: always check the backward
        check_solver_settings(
            config.method, config.rtol, config.atol, config.options,
            adjoint_method=gradient.method, adjoint_options=backward,
        )  # fmt: skip
        if gradient.rtol is not None:
            _check("adjoint_rtol", check_tolerance, gradient.rtol, "adjoint_rtol")
        if gradient.atol is not None:
            _check("adjoint_atol", check_tolerance, gradient.atol, "adjoint_atol")
    else:
        check_solver_settings(config.method, config.rtol, config.atol, config.options)
