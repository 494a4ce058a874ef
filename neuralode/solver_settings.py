"""Solver settings checked once, where they are given (a model's constructor, an experiment's config).

The rules are the library's own (``neuralode.checks``: tolerances, method names, option dicts), so a bad
setting fails at construction with the same message ``odeint`` would give at the first solve.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

from .checks import check_tolerance, make_solver, solve_tolerances
from .solvers import SOLVERS


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
    if adjoint_options is None and options is not None:  # what odeint_adjoint does
        adjoint_options = {k: v for k, v in options.items() if k != "norm"}
    try:
        make_solver(adjoint_method or method, adjoint_options, arg="adjoint_method")
    except (TypeError, ValueError) as error:
        error.argument = _blame(adjoint_method or method, ("adjoint_method", "adjoint_options"))
        raise
