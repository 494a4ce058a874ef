"""Adaptive implicit ESDIRK methods on the shared adaptive engine: kvaerno3 and kvaerno5 (stiff problems).

The engine (:class:`AdaptiveRKSolver`) does the error control, step-size control (PI by default
here), stops at ``jump_t``/``step_t``, events, callbacks and dense output; these classes only supply
its step function: simplified Newton with a dense LU (:class:`~neuralode.solvers.esdirk.NewtonStepper`)
or matrix-free Newton-Krylov (:class:`~neuralode.solvers.newton_krylov.KrylovStepper`) for large
states, chosen by ``options['linear_solver']``. Intermediate outputs come from
cubic Hermite interpolation through (y0, f0, y1, f1), third-order accurate.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from .adaptive import AdaptiveRKSolver
from .base import FlatProblem
from .esdirk import ESDIRKDeviceTableau, NewtonStepper
from .esdirk_tableaux import KVAERNO3, KVAERNO5, ESDIRKTableau
from .implicit import MAX_NEWTON_SIZE
from .newton_krylov import KrylovStepper
from .observer import StepObserver
from .options import ESDIRKOptions

# The largest state the 'auto' linear solver factorises densely; above it Newton-Krylov. Measured on a
# stiff tanh-MLP field (kvaerno5, 1 thread): dense/Krylov 0.48/0.68 s at 500 entries, 1.98/0.69 s at 1,000,
# 10.5/1.1 s at 2,000. Small states stay dense also because the LU does not depend on GMRES converging.
AUTO_DENSE_MAX = 500


class ESDIRKSolver(AdaptiveRKSolver):
    """Engine adapter for ESDIRK pairs: Newton's method on the stages, with a dense LU (reused across
    stages and steps while Newton converges quickly) or matrix-free GMRES."""

    options_class: ClassVar[type] = ESDIRKOptions
    # Newton's iterations start from a Jacobian carried from earlier steps, so a replayed piece does
    # not reproduce them bit for bit: odeint_checkpoint replays these methods to Newton's tolerance
    # (gradients/checkpointed.py), and nothing else may treat them as exactly replayable.
    replayable: ClassVar[bool] = False
    tableau: ClassVar[ESDIRKTableau]

    def stepper(self, problem: FlatProblem, observer: StepObserver):
        y, name, options = problem.y0, self.tableau.name, self.options
        if not y.dtype.is_floating_point or y.dtype in (torch.float16, torch.bfloat16):
            raise ValueError(
                f"method={name!r} solves Newton's linear systems, which needs float32 or float64 states, "
                f"got {y.dtype}"
            )
        dtab = ESDIRKDeviceTableau(self.tableau, y.dtype, y.device)
        linear_solver = options.linear_solver
        if linear_solver == "auto":
            linear_solver = "dense" if y.numel() <= AUTO_DENSE_MAX else "krylov"
        if linear_solver == "krylov":
            step = KrylovStepper(
                problem.rtol, problem.atol, options.max_iters, observer.counts,
                options.jvp, options.krylov_restart, options.krylov_max_iters,
            )  # fmt: skip
            return dtab, None, step
        if y.numel() > MAX_NEWTON_SIZE:
            raise ValueError(
                f"method={name!r} with options['linear_solver']='dense' factorises an N x N Newton matrix, "
                f"and this state has N = {y.numel()} entries, more than {MAX_NEWTON_SIZE}: use "
                "options['linear_solver']='krylov' (or 'auto'), which needs no matrix"
            )
        return dtab, None, NewtonStepper(problem.rtol, problem.atol, options.max_iters, observer.counts)


class Kvaerno3(ESDIRKSolver):
    tableau: ClassVar[ESDIRKTableau] = KVAERNO3


class Kvaerno5(ESDIRKSolver):
    tableau: ClassVar[ESDIRKTableau] = KVAERNO5
