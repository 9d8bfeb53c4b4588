"""What the trainer and ``train`` log through, and what a backend of ``logger=`` declares."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from gentrain.core.checkpoint import atomic_write_bytes
from gentrain.core.terms import LoggedTerms


@dataclass(frozen=True)
class RunSummary:
    """What a run reports once, at its end (or when it is stopped): its config flattened
    to ``section/key`` scalars, its final metrics, the one it optimises (shown first),
    the model knobs set away from their defaults and each network's learning rate."""

    hparams: dict[str, Any]
    metrics: dict[str, float]
    first_metric: str = ""
    changed_knobs: list[str] = field(default_factory=list)
    learning_rates: dict[str, float] = field(default_factory=dict)


class Logger:
    """Each method does nothing here, so a logger overrides only what its backend keeps."""

    def log_scalars(self, values: dict[str, float], step: int) -> None: ...

    def log_image(self, tag: str, grid: torch.Tensor, step: int) -> None: ...

    def log_text(self, tag: str, text: str, step: int = 0) -> None: ...

    def log_layout(self, networks: list[str], terms: LoggedTerms) -> None: ...

    def log_hparams(self, summary: RunSummary) -> None: ...

    def close(self) -> None: ...


class NullLogger(Logger):
    """``logger=none``, and every process but the main one: logs nothing."""


class Backend(Logger):
    """A logger chosen by name in ``logger=`` (``@LOGGERS.register``): its settings
    dataclass ``Config`` (the one home of its defaults), the packages it imports, and how
    it starts a run or continues one."""

    Config: ClassVar[type]
    # the pip extra of gentrain that installs what ``required_modules`` names
    extra: ClassVar[str | None] = None
    pip: ClassVar[str] = ""  # the same packages as a plain ``pip install`` line

    @classmethod
    def required_modules(cls, settings: Any) -> list[str]:
        """Modules ``start`` imports that a plain install of gentrain lacks."""
        return []

    @classmethod
    def start(cls, settings: Any, output_dir: Path, resume_step: int | None) -> Logger:
        """The logger of the run in ``output_dir``; ``resume_step``: the step of the
        checkpoint a resumed run continues from (None: a fresh run)."""
        raise NotImplementedError


def grid_to_uint8(grid: torch.Tensor) -> np.ndarray:
    """A CHW float grid in [0, 1] as an HWC (or HW, one channel) uint8 array: what PNG
    writers, W&B and MLflow take."""
    pixels = grid.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    if pixels.dim() == 2:
        return pixels.numpy()
    array = pixels.permute(1, 2, 0).numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


def override_names(hparams: dict[str, Any]) -> dict[str, Any]:
    """``model/latent_dim`` -> ``model.latent_dim``: the flattened config under the names
    a command line sets it with."""
    return {name.replace("/", "."): value for name, value in hparams.items()}


def final_order(metrics: dict[str, float], first: str) -> list[str]:
    """Every final metric, the optimised one first."""
    return sorted(metrics, key=lambda name: name != first)


def read_run_record(path: Path) -> dict[str, Any]:
    """A tracker's run record in the run directory (``{}``: none, or unreadable)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_run_record(path: Path, record: dict[str, Any]) -> None:
    """Which tracked run this directory's run is (its id), so a resumed run continues it."""
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())
