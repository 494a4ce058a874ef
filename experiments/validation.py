"""Whole-config validation before Hydra makes any folder: one ``error: key=value: why`` line, exit code 2.

Hydra creates a run's output folder before it calls the task function, so each experiment's config
registers :class:`ValidateConfig` as a Hydra callback (``hydra.callbacks.validate``) naming its check
function (``experiments.<name>.validate_config``). ``on_run_start`` checks the composed config;
``on_multirun_start`` composes and checks every job of the sweep, before the sweep folder exists, so one
bad point stops the sweep before any job runs (local, submitit-local or SLURM launcher alike).

A check function takes the job's config and raises :class:`ConfigError`; :class:`Checker` has the typed
checks (integers, numbers, choices) and runs the library's own solver checks
(:func:`neuralode.solver_config.check_solver_settings`, and building a :class:`neuralode.SolverConfig`
from a ``solver`` group), so the rules live in one place.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from typing import Any

from hydra.experimental.callback import Callback
from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from neuralode import SolverConfig
from neuralode.solver_config import check_solver_settings
from neuralode.training import TrainerConfig

EXIT_CODE = 2  # what argparse and most CLIs use for a usage error


class ConfigError(ValueError):
    """A bad config value: ``key``, the value as given, and why (with the fix)."""

    def __init__(self, key: str, value: Any, reason: str) -> None:
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"{key}={_show(value)}: {reason}")


def _show(value: Any) -> str:
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, dict | list):
        return str(value).replace(" ", "")
    return "null" if value is None else str(value)


class Checker:
    """Typed checks on one config; each failure is a :class:`ConfigError` naming the dotted key."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def get(self, key: str) -> Any:
        """The value at ``key`` (interpolations resolved); an unresolvable one is a ConfigError."""
        try:
            value = OmegaConf.select(self.cfg, key, throw_on_missing=True)
        except OmegaConfBaseException as error:
            raw = OmegaConf.select(self.cfg, key, throw_on_resolution_failure=False)
            raise ConfigError(key, raw, f"cannot be resolved ({str(error).splitlines()[0]})") from None
        return (
            OmegaConf.to_container(value, resolve=True)
            if isinstance(value, DictConfig | ListConfig)
            else value
        )

    def integer(
        self, key: str, low: int | None = None, high: int | None = None, optional: bool = False
    ) -> None:
        value = self.get(key)
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, value, f"{key} must be an integer{_range(low, high)}{_or_null(optional)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(key, value, f"{key} must be an integer{_range(low, high)}")

    def number(
        self, key: str, low: float | None = None, high: float | None = None, *, open_low: bool = False,
        open_high: bool = False, optional: bool = False,
    ) -> None:  # fmt: skip
        value = self.get(key)
        if value is None and optional:
            return
        bounds = _range(low, high, open_low, open_high)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(key, value, f"{key} must be a finite number{bounds}{_or_null(optional)}")
        too_low = low is not None and (value <= low if open_low else value < low)
        too_high = high is not None and (value >= high if open_high else value > high)
        if too_low or too_high:
            raise ConfigError(key, value, f"{key} must be a number{bounds}")

    def choice(self, key: str, choices: Iterable[Any]) -> None:
        value, choices = self.get(key), tuple(choices)
        if isinstance(value, bool) or value not in choices:
            raise ConfigError(key, value, f"{key} must be one of {', '.join(map(str, choices))}")

    def boolean(self, key: str) -> None:
        value = self.get(key)
        if not isinstance(value, bool):
            raise ConfigError(key, value, f"{key} must be true or false")

    def fractions(self, key: str) -> None:
        """A list of increasing fractions of the run in (0, 1) (lr milestones)."""
        value = self.get(key)
        ok = isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1 for v in value
        )
        if not ok or value != sorted(value):
            raise ConfigError(key, value, f"{key} must be a list of increasing fractions in (0, 1)")

    def solver(self, prefix: str, adjoint: bool = False, **keys: str) -> None:
        """The solver settings under ``prefix`` (method, rtol, atol, options, adjoint_options), checked by
        the library itself; ``keys`` renames a setting's key (``options=None`` style keys that are absent
        are skipped)."""
        names = {"method": "method", "rtol": "rtol", "atol": "atol", "options": "options",
                 "adjoint_options": "adjoint_options", **keys}  # fmt: skip
        key = {name: f"{prefix}.{names[name]}" for name in names}
        present = {
            name: OmegaConf.select(self.cfg, key[name], default=_ABSENT) is not _ABSENT for name in names
        }
        values = {name: self.get(key[name]) if present[name] else None for name in names}
        options = values["options"] or None
        adjoint_options = (values["adjoint_options"] or None) if adjoint else None
        try:
            check_solver_settings(
                values["method"], values["rtol"], values["atol"], options,
                adjoint_options=adjoint_options,
            )  # fmt: skip
        except (TypeError, ValueError) as error:
            name = getattr(error, "argument", "method")
            name = "method" if name == "adjoint_method" else name
            raise ConfigError(key[name], values[name], str(error)) from None

    def solver_config(self, prefix: str) -> SolverConfig:
        """The ``solver`` group under ``prefix`` as the :class:`~neuralode.SolverConfig` it builds (the
        library's checks); a failure names the key: ``prefix.gradient``, ``prefix.adjoint.rtol``, ..."""
        settings = self.get(prefix)
        if not isinstance(settings, dict):
            raise ConfigError(prefix, settings, f"{prefix} must be a solver group (configs/solver/)")
        gradient = settings.get("gradient", "adjoint")
        if gradient not in GRADIENTS:
            raise ConfigError(
                f"{prefix}.gradient", gradient, f"{prefix}.gradient must be one of {', '.join(GRADIENTS)}"
            )
        for name in ("options", "adjoint"):
            if not isinstance(settings.get(name) or {}, dict):
                raise ConfigError(f"{prefix}.{name}", settings[name], f"{prefix}.{name} must be a mapping")
        unknown = sorted(set(settings.get("adjoint") or {}) - {"rtol", "atol", "method", "options"})
        if unknown:
            why = f"unknown key(s) {unknown}: the backward solve takes rtol, atol, method, options"
            raise ConfigError(f"{prefix}.adjoint", settings["adjoint"], why)
        if gradient == "checkpoint":
            self.integer(f"{prefix}.checkpoint_every", 1)
        try:
            return SolverConfig.from_dict(settings)
        except (TypeError, ValueError) as error:
            name = _SOLVER_KEYS.get(getattr(error, "argument", "method"), "method")
            own = settings.get("adjoint") or {}
            if name.startswith("adjoint.") and not own.get(name.split(".")[1]):
                name = name.split(".")[1]  # the backward solve took the forward setting
            key = f"{prefix}.{name}"
            raise ConfigError(key, OmegaConf.select(self.cfg, key), str(error)) from None

    def method(self, key: str) -> None:
        """A solver method used with its default options (the library's check)."""
        value = self.get(key)
        try:
            check_solver_settings(value, 1e-3, 1e-3)
        except (TypeError, ValueError) as error:
            raise ConfigError(key, value, str(error)) from None


_ABSENT = object()
GRADIENTS = ("direct", "adjoint", "checkpoint")  # a solver group's ``gradient`` (neuralode.gradients)
# SolverConfig's failing setting (the error's ``argument``) -> its key in a solver group
_SOLVER_KEYS = {
    "method": "method", "rtol": "rtol", "atol": "atol", "options": "options",
    "adjoint_method": "adjoint.method", "adjoint_options": "adjoint.options",
    "adjoint_rtol": "adjoint.rtol", "adjoint_atol": "adjoint.atol",
}  # fmt: skip


def _range(low: Any, high: Any, open_low: bool = False, open_high: bool = False) -> str:
    if low is not None and high is not None:
        return f" in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    if low is not None:
        return f" {'>' if open_low else '>='} {low}"
    if high is not None:
        return f" {'<' if open_high else '<='} {high}"
    return ""


def _or_null(optional: bool) -> str:
    return " (or null)" if optional else ""


def check_common(check: Checker) -> None:
    """What every experiment's config has: seed, device, precision, progress, tensorboard."""
    check.integer("seed", 0, 2**32 - 1)  # NumPy's seed range
    device = check.get("device")
    if not isinstance(device, str) or not (
        device in ("auto", "cpu", "mps") or device.split(":")[0] == "cuda"
    ):
        raise ConfigError("device", device, "device must be auto, cpu, cuda or cuda:N")
    for key in ("progress", "tensorboard"):
        if OmegaConf.select(check.cfg, key, default=_ABSENT) is not _ABSENT:
            check.boolean(key)
    if OmegaConf.select(check.cfg, "precision", default=_ABSENT) is not _ABSENT:
        precision = check.get("precision")
        try:  # the training loop's own rule (fp16 is refused with the reason)
            TrainerConfig(epochs=1, batches_per_epoch=1, precision=precision)
        except ValueError as error:
            raise ConfigError("precision", precision, str(error)) from None


def report_and_exit(error: ConfigError) -> None:
    """Print the one-line error to stderr and exit with :data:`EXIT_CODE`."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CODE)


def _job_configs(config: DictConfig) -> Iterable[DictConfig]:
    """Every job's composed config of a multirun, as the basic sweeper will make them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()]
    arguments += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    for batch in BasicSweeper.split_arguments(parsed, None):
        for overrides in batch:
            yield loader.load_sweep_config(config, list(overrides))


class ValidateConfig(Callback):
    """Hydra callback: run ``check`` (a dotted path to ``check(cfg)``) before any folder is made."""

    def __init__(self, check: str) -> None:
        self.check: Callable[[DictConfig], None] = get_method(check)

    def _validate(self, config: DictConfig) -> None:
        try:
            self.check(config)
        except ConfigError as error:
            report_and_exit(error)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Single run: the composed config."""
        self._validate(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Multirun: every job's config, before the sweep folder exists."""
        sweeper = str(config.hydra.sweeper.get("_target_", ""))
        if not sweeper.endswith("BasicSweeper"):
            return  # another sweeper (Optuna, ...) makes its own points: each job checks itself at start
        from hydra.core.hydra_config import HydraConfig

        try:
            for job in _job_configs(config):
                HydraConfig.instance().set_config(job)  # as Hydra's run_job does: ${hydra:...} resolves
                self._validate(job)
        finally:
            HydraConfig.instance().set_config(config)
