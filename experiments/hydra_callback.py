"""Whole-config validation before Hydra makes any folder: one ``error: key=value: why`` line, exit code 2.

Hydra creates a run's output folder before it calls the task function, so each experiment's config
registers :class:`ValidateConfig` as a Hydra callback (``hydra.callbacks.validate``) naming its check
function (``experiments.<name>.validate_config``). ``on_run_start`` checks the composed config;
``on_multirun_start`` composes and checks every job of the sweep, before the sweep folder exists, so one
bad point stops the sweep before any job runs (local, submitit-local or SLURM launcher alike).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from hydra.experimental.callback import Callback
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from experiments.validation import EXIT_CODE, ConfigError


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
