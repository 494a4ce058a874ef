"""The ``solver`` config group (configs/solver/*.yaml) checked, and built as one ``neuralode.SolverConfig``.

The library's own checks run (``SolverConfig.from_dict``); a failure is a :class:`ConfigError` naming the
config key of the failing setting (``solver.rtol``, ``solver.adjoint.method``, ...).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from experiments.validation import Checker, ConfigError
from neuralode import SolverConfig
from neuralode.gradients.by_name import ADJOINT_SETTINGS, GRADIENT_NAMES
from neuralode.regularization import Regularization

# SolverConfig's name of a failing setting (the error's ``argument``) -> its key in the solver group
KEYS = {
    "method": "method", "rtol": "rtol", "atol": "atol", "options": "options",
    "adjoint_method": "adjoint.method", "adjoint_options": "adjoint.options",
    "adjoint_rtol": "adjoint.rtol", "adjoint_atol": "adjoint.atol",
}  # fmt: skip


def check_solver_group(
    check: Checker, prefix: str = "solver", regularization: str | None = None
) -> SolverConfig:
    """The SolverConfig the group at ``prefix`` describes (the library's own checks); a failure is a
    ConfigError naming the key: ``prefix.gradient``, ``prefix.adjoint.rtol``, ... ``regularization``: the
    key of a regularization group (configs/regularization/) the solver takes too, if any."""
    settings = check.get(prefix)
    if not isinstance(settings, dict):
        raise ConfigError(prefix, settings, f"{prefix} must be a solver group (configs/solver/)")
    if regularization is not None:
        group = check.get(regularization)
        if not isinstance(group, dict):
            why = f"{regularization} must be a regularization group (configs/regularization/)"
            raise ConfigError(regularization, group, why)
        settings = {**settings, "regularization": group}
    check.choice(f"{prefix}.gradient", GRADIENT_NAMES)
    for name in ("options", "adjoint"):
        if not isinstance(settings.get(name) or {}, dict):
            raise ConfigError(f"{prefix}.{name}", settings[name], f"{prefix}.{name} must be a mapping")
    unknown = sorted(set(settings.get("adjoint") or {}) - set(ADJOINT_SETTINGS))
    if unknown:
        why = f"unknown key(s) {unknown}: the backward solve takes {', '.join(ADJOINT_SETTINGS)}"
        raise ConfigError(f"{prefix}.adjoint", settings["adjoint"], why)
    if settings.get("gradient") == "checkpoint":
        check.integer(f"{prefix}.checkpoint_every", 1)
    try:
        return SolverConfig.from_dict(settings)
    except (TypeError, ValueError) as error:
        if regularization is not None and getattr(error, "argument", None) == "regularization":
            raise ConfigError(regularization, check.get(regularization), str(error)) from None
        name = KEYS.get(getattr(error, "argument", "method"), "method")
        own = settings.get("adjoint") or {}
        if name.startswith("adjoint.") and not own.get(name.split(".")[1]):
            name = name.split(".")[1]  # the backward solve took the forward setting
        key = f"{prefix}.{name}"
        raise ConfigError(key, OmegaConf.select(check.cfg, key, default=None), str(error)) from None


def solver_of(cfg: DictConfig, regularization: str | None = None) -> SolverConfig:
    """The run's SolverConfig, from its (validated) ``solver`` group and, if given, the regularization
    group at that key."""
    settings = OmegaConf.to_container(cfg.solver, resolve=True)
    if regularization is not None:
        settings["regularization"] = OmegaConf.to_container(cfg[regularization], resolve=True)
    return SolverConfig.from_dict(settings)


def solver_hparams(cfg: DictConfig) -> dict[str, object]:
    """The solver group as flat run settings (a checkpoint resumes only a run with the same ones)."""
    group = OmegaConf.to_container(cfg.solver, resolve=True)
    return {
        f"solver.{k}": (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in group.items()
    }


def regularization_hparams(cfg: DictConfig, key: str) -> dict[str, object]:
    """The regularization group at ``key`` as flat run settings; none while every weight is 0, so that
    an unregularised run keeps the settings (and resumes the checkpoints) it had before the group."""
    group = OmegaConf.to_container(cfg[key], resolve=True)
    if not Regularization.from_dict(group).active:
        return {}
    return {f"{key}.{k}": v for k, v in group.items() if k != "name"}
