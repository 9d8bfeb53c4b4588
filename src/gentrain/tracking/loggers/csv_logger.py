"""``logger=csv``: plain files in the run directory that any tool reads, no package needed."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image

from gentrain.core.checkpoint import atomic_write_bytes
from gentrain.core.registry import LOGGERS
from gentrain.tracking.loggers.base import (
    Backend,
    Logger,
    RunSummary,
    final_order,
    grid_to_uint8,
    override_names,
)

HEADER = ["step", "tag", "value"]


@dataclass
class CSVConfig:
    """The CSV logger has nothing to set: it writes into ``<run dir>/csv/``."""


@LOGGERS.register("csv")
class CSVLogger(Backend):
    """``csv/scalars.csv`` in long format, one row per value (``step,tag,value``: a new tag
    needs no new column, and a resumed run appends), the final config and metrics in
    ``csv/hparams.yaml``, text in ``csv/text/<tag>.md`` and each image grid as
    ``csv/images/<tag>/step_<step>.png``."""

    Config = CSVConfig

    def __init__(self, folder: Path, resume_step: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.scalars_path = folder / "scalars.csv"
        self.last_step = resume_step or 0
        kept = self._rows_until(resume_step) if resume_step is not None else []
        buffer = io.StringIO()
        csv.writer(buffer).writerows([HEADER, *kept])
        atomic_write_bytes(self.scalars_path, buffer.getvalue().encode())
        self._file = self.scalars_path.open("a", newline="")
        self._writer = csv.writer(self._file)

    def _rows_until(self, step: int) -> list[list[str]]:
        """The rows up to ``step``: those after it, from a process that ran on past its
        checkpoint, are written again by this one (and a row it left half-written goes)."""
        if not self.scalars_path.is_file():
            return []
        with self.scalars_path.open(newline="") as f:
            rows = list(csv.reader(f))
        kept = []
        for row in rows[1:]:
            try:
                if len(row) == 3 and int(row[0]) <= step:
                    float(row[2])
                    kept.append(row)
            except ValueError:
                continue
        return kept

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.last_step = max(self.last_step, step)
        self._writer.writerows([step, tag, float(value)] for tag, value in values.items())
        self._file.flush()

    def log_image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        path = self.folder / "images" / _file_name(tag) / f"step_{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid_to_uint8(grid)).save(path)

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        path = self.folder / "text" / f"{_file_name(tag)}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(f"## step {step}\n\n{text.rstrip()}\n\n")

    def log_hparams(self, summary: RunSummary) -> None:
        """``hparams.yaml``: the final metrics (``first_metric`` first), the model knobs
        set away from their defaults, each network's learning rate and the whole config
        under its command-line names."""
        hparams, metrics, first_metric = summary.hparams, summary.metrics, summary.first_metric
        changed_knobs, learning_rates = summary.changed_knobs, summary.learning_rates
        record = {
            "step": self.last_step,
            "metrics": {k: float(metrics[k]) for k in final_order(metrics, first_metric)},
            "changed_knobs": list(changed_knobs or []),
            "learning_rates": {k: float(v) for k, v in (learning_rates or {}).items()},
            "hparams": override_names(hparams),
        }
        text = yaml.safe_dump(record, sort_keys=False, allow_unicode=True)
        atomic_write_bytes(self.folder / "hparams.yaml", text.encode())

    def close(self) -> None:
        self._file.close()

    @classmethod
    def start(cls, settings: Any, output_dir: Path, resume_step: int | None) -> Logger:
        return cls(output_dir / "csv", resume_step)


def _file_name(tag: str) -> str:
    return tag.replace("/", "-")
