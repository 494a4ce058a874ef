"""Config checks: :class:`ConfigError` (one ``key=value: why`` line) and :class:`Checker`, the typed
checks (integers, numbers, choices, fractions) an experiment's ``validate_config`` is written with.

The solver group is checked by the library itself (``experiments/solver_group.py``), and the checks run
before Hydra makes any folder (``experiments/hydra_callback.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

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


_ABSENT = object()


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
