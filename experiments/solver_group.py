"""The ``solver`` config group (configs/solver/*.yaml) checked, and built as one ``neuralode.SolverConfig``.

The library's own checks run (``SolverConfig.from_dict``); a failure is a :class:`ConfigError` naming the
config key of the failing setting (``solver.rtol``, ``solver.adjoint.method``, ...).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from experiments.validation import Checker, ConfigError
from neuralode import SolverConfig

GRADIENTS = ("direct", "adjoint", "checkpoint")
ADJOINT_KEYS = ("rtol", "atol", "method", "options")
# SolverConfig's name of a failing setting (the error's ``argument``) -> its key in the solver group
KEYS = {
    "method": "method", "rtol": "rtol", "atol": "atol", "options": "options",
    "adjoint_method": "adjoint.method", "adjoint_options": "adjoint.options",
    "adjoint_rtol": "adjoint.rtol", "adjoint_atol": "adjoint.atol",
}  # fmt: skip


def check_solver_group(check: Checker, prefix: str = "solver") -> SolverConfig:
    """The SolverConfig the group at ``prefix`` describes; raises ConfigError naming the bad key."""
    check.choice(f"{prefix}.gradient", GRADIENTS)
    check.integer(f"{prefix}.checkpoint_every", 1)
    adjoint = check.get(f"{prefix}.adjoint") or {}
    unknown = sorted(set(adjoint) - set(ADJOINT_KEYS))
    if unknown:
        reason = f"unknown key(s) {unknown}: the backward solve takes {', '.join(ADJOINT_KEYS)}"
        raise ConfigError(f"{prefix}.adjoint", adjoint, reason)
    try:
        return SolverConfig.from_dict(check.get(prefix))
    except (TypeError, ValueError) as error:
        key = f"{prefix}.{KEYS.get(getattr(error, 'argument', ''), 'method')}"
        value = OmegaConf.select(check.cfg, key, default=None, throw_on_resolution_failure=False)
        raise ConfigError(key, value, str(error)) from None


def solver_of(cfg: DictConfig) -> SolverConfig:
    """The run's SolverConfig, from its (validated) ``solver`` group."""
    return SolverConfig.from_dict(OmegaConf.to_container(cfg.solver, resolve=True))


def solver_hparams(cfg: DictConfig) -> dict[str, object]:
    """The solver group as flat run settings (a checkpoint resumes only a run with the same ones)."""
    group = OmegaConf.to_container(cfg.solver, resolve=True)
    return {
        f"solver.{k}": (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in group.items()
    }
