"""Adaptive implicit ESDIRK methods on the shared adaptive engine: kvaerno3 and kvaerno5 (stiff problems).

The engine (:class:`AdaptiveRKSolver`) does the error control, step-size control (PI by default
here), stops at ``jump_t``/``step_t``, events, callbacks and dense output; these classes only supply
its step function (:class:`~neuralode.solvers.esdirk.NewtonStepper`). Intermediate outputs come from
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
from .observer import StepObserver
from .options import ESDIRKOptions


class ESDIRKSolver(AdaptiveRKSolver):
    """Engine adapter for ESDIRK pairs: simplified Newton with a dense Jacobian and one LU per step
    (reused across steps while Newton converges quickly)."""

    options_class: ClassVar[type] = ESDIRKOptions
    # Newton's iterations start from a Jacobian carried from earlier steps, so a replayed piece does
    # not reproduce them bit for bit: odeint_checkpoint replays these methods to Newton's tolerance
    # (gradients/checkpointed.py), and nothing else may treat them as exactly replayable.
    replayable: ClassVar[bool] = False
    tableau: ClassVar[ESDIRKTableau]

    def stepper(self, problem: FlatProblem, observer: StepObserver):
        y, name = problem.y0, self.tableau.name
        if y.numel() > MAX_NEWTON_SIZE:
            raise ValueError(
                f"method={name!r} solves a dense Newton system of {y.numel()} rows (state entries), more "
                f"than {MAX_NEWTON_SIZE}: options['linear_solver']='krylov' for large states is not built "
                "yet; use an explicit method, scipy_solver (LSODA, BDF), or a smaller state"
            )
        if not y.dtype.is_floating_point or y.dtype in (torch.float16, torch.bfloat16):
            raise ValueError(
                f"method={name!r} factorises Newton's matrix, which needs float32 or float64 states, got "
                f"{y.dtype}"
            )
        dtab = ESDIRKDeviceTableau(self.tableau, y.dtype, y.device)
        step = NewtonStepper(problem.rtol, problem.atol, self.options.max_iters, observer.counts)
        return dtab, None, step


class Kvaerno3(ESDIRKSolver):
    tableau: ClassVar[ESDIRKTableau] = KVAERNO3


class Kvaerno5(ESDIRKSolver):
    tableau: ClassVar[ESDIRKTableau] = KVAERNO5
