"""Several loggers at once: ``logger=[tensorboard,csv]``."""

from __future__ import annotations

import torch

from gentrain.core.terms import LoggedTerms
from gentrain.tracking.loggers.base import Logger, RunSummary


class FanOutLogger(Logger):
    """Each call goes to every logger, in the order the config lists them."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_scalars(values, step)

    def log_image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        for logger in self.loggers:
            logger.log_image(tag, grid, step)

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        for logger in self.loggers:
            logger.log_text(tag, text, step)

    def log_layout(self, networks: list[str], terms: LoggedTerms) -> None:
        for logger in self.loggers:
            logger.log_layout(networks, terms)

    def log_hparams(self, summary: RunSummary) -> None:
        for logger in self.loggers:
            logger.log_hparams(summary)

    def close(self) -> None:
        """Closes every logger, even after one fails (then raises the first failure)."""
        close_all(self.loggers)


def close_all(loggers: list[Logger]) -> None:
    failure: BaseException | None = None
    for logger in loggers:
        try:
            logger.close()
        except BaseException as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
