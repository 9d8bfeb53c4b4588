"""The run's logger from the ``logger`` section: one backend, several, or none."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gentrain.core.errors import ConfigError
from gentrain.core.ranks import is_main_process
from gentrain.core.registry import LOGGERS
from gentrain.tracking.loggers.base import Logger, NullLogger
from gentrain.tracking.loggers.fan_out import FanOutLogger, close_all


def check_installed(logger_cfg: Mapping[str, Any]) -> None:
    """A ConfigError naming the pip command for each backend whose package is missing:
    said before the run starts, not at its first logged step."""
    for name, settings in logger_cfg.items():
        backend = LOGGERS.get(name)
        for module in backend.required_modules(settings):
            try:
                importlib.import_module(module)
            except ImportError:
                raise ConfigError(
                    f"logger={name} needs the {module} package, which is not installed. "
                    f"Fix: pip install {backend.pip} (in a clone of gentrain: "
                    f"pip install -e '.[{backend.extra}]'), or pick another logger"
                ) from None


def build_logger(
    logger_cfg: Mapping[str, Any], output_dir: Path, resume_step: int | None
) -> Logger:
    """The logger of the run in ``output_dir``: ``logger_cfg`` maps each backend's name to
    its settings (``RunConfig.logger``). ``resume_step``: the step of the checkpoint a
    resumed run continues from, in the same directory (None: a fresh run); each backend
    continues its tracked run from there. Only the main process logs."""
    check_installed(logger_cfg)
    if not is_main_process() or not logger_cfg:
        return NullLogger()
    loggers: list[Logger] = []
    try:
        for name, settings in logger_cfg.items():
            loggers.append(LOGGERS.get(name).start(settings, output_dir, resume_step))
    except BaseException:
        close_all(loggers)
        raise
    return loggers[0] if len(loggers) == 1 else FanOutLogger(loggers)
