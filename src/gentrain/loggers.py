"""Experiment loggers, chosen by ``logger=<name>``: TensorBoard, or nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gentrain.dist import is_main_process
from gentrain.registry import LOGGERS


class NullLogger:
    """Logs nothing; every other logger has the same methods."""

    def log_scalars(self, values: dict[str, float], step: int) -> None: ...

    def log_image(self, tag: str, grid: torch.Tensor, step: int) -> None: ...

    def log_text(self, tag: str, text: str, step: int = 0) -> None: ...

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardLogger(NullLogger):
    """Writes event files under ``<run dir>/tb``; only the main process writes."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def log_image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, grid, step)

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        # run_name="." keeps the HParams entry in this run's directory, not a subfolder.
        self.writer.add_hparams(hparams, metrics, run_name=".")

    def close(self) -> None:
        self.writer.close()


@LOGGERS.register("tensorboard")
def tensorboard(output_dir: Path) -> NullLogger:
    return TensorBoardLogger(output_dir / "tb") if is_main_process() else NullLogger()


@LOGGERS.register("none")
def none(output_dir: Path) -> NullLogger:
    return NullLogger()
