"""``logger=wandb``: Weights & Biases (the ``wandb`` extra), one W&B run per gentrain run,
continued when the run resumes."""

from __future__ import annotations

import html
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gentrain.core.errors import ConfigError
from gentrain.core.registry import LOGGERS
from gentrain.tracking.loggers.base import (
    Backend,
    Logger,
    RunSummary,
    final_order,
    grid_to_uint8,
    override_names,
    read_run_record,
    write_run_record,
)

MODES = ("online", "offline", "disabled")
RECORD = "wandb_run.json"  # in the run directory: the W&B run id a resumed run continues


@dataclass
class WandbConfig:
    """Where the run goes in W&B. Its local files go into ``<run dir>/wandb/`` and it is
    named after the run directory, as in TensorBoard."""

    project: str = "gentrain"
    entity: str | None = None  # a team or user name; None: your default entity
    group: str | None = None  # runs W&B shows together, e.g. a sweep's jobs
    tags: list[str] = field(default_factory=list)
    # online | offline (no network; upload later: wandb sync <run dir>/wandb/offline-run-*)
    # | disabled
    mode: str = "online"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                f"logger.wandb.mode must be one of {', '.join(MODES)}, got {self.mode!r}"
            )


@LOGGERS.register("wandb")
class WandbLogger(Backend):
    """Scalars and images at the trainer's step, text as HTML panels (``text/<tag>``), the
    config (by its command-line names) into the W&B config and the final metrics into the
    run summary."""

    Config = WandbConfig
    extra = "wandb"
    pip = "wandb"

    def __init__(self, run: Any) -> None:
        self.run = run

    @classmethod
    def required_modules(cls, settings: Any) -> list[str]:
        return ["wandb"]

    @classmethod
    def start(cls, settings: WandbConfig, output_dir: Path, resume_step: int | None) -> Logger:
        """A fresh run gets a new id, kept in ``wandb_run.json``; a resumed run continues
        that W&B run. Online, W&B first rewinds it to the checkpoint's step (its
        ``resume_from``, where the server offers it); otherwise, and offline, the steps W&B
        already holds are not logged again (a deterministic resume logs the same values)."""
        import wandb

        record_path = output_dir / RECORD
        stored = read_run_record(record_path).get("id") if resume_step is not None else None
        run_id = stored or secrets.token_hex(6)  # W&B's ids: letters and digits
        if not stored:
            record = {"id": run_id, "project": settings.project, "entity": settings.entity}
            write_run_record(record_path, record)
        where = {
            "project": settings.project,
            "entity": settings.entity,
            "group": settings.group,
            "tags": list(settings.tags) or None,
            "mode": settings.mode,
            "dir": str(output_dir),
            "name": output_dir.name,
        }
        try:
            if stored and settings.mode == "online":
                try:
                    return cls(wandb.init(resume_from=f"{run_id}?_step={resume_step}", **where))
                except wandb.errors.Error:
                    pass  # no rewind on this server, or the run never reached it
            resume = "allow" if stored else None
            return cls(wandb.init(id=run_id, resume=resume, **where))
        except wandb.errors.Error as exc:
            reason = " ".join(str(exc).split())[:300]
            raise ConfigError(
                f"W&B could not start the run ({reason}). Fix: log in with `wandb login`, "
                "or train with logger.wandb.mode=offline and upload later with wandb sync"
            ) from None

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        if step >= self.run.step:  # W&B drops (with a warning) a step below its last one
            self.run.log({tag: float(value) for tag, value in values.items()}, step=step)

    def log_image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        import wandb

        if step >= self.run.step:
            self.run.log({tag: wandb.Image(grid_to_uint8(grid))}, step=step)

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        import wandb

        panel = wandb.Html(f"<pre>{html.escape(text)}</pre>")
        self.run.log({f"text/{tag}": panel}, step=max(step, self.run.step))

    def log_hparams(self, summary: RunSummary) -> None:
        hparams, metrics = summary.hparams, summary.metrics
        first_metric, learning_rates = summary.first_metric, summary.learning_rates
        config = override_names(hparams)
        config.update({f"lr.{net}": rate for net, rate in (learning_rates or {}).items()})
        self.run.config.update(config, allow_val_change=True)
        self.run.summary.update({k: float(metrics[k]) for k in final_order(metrics, first_metric)})

    def close(self) -> None:
        self.run.finish()
