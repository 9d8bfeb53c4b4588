"""Where a run starts: fresh, resumed in its own directory, or warm-started from another.

A resumed run continues *in place*: whatever directory Hydra made for the new process,
training goes on in the directory that holds the checkpoint, so one run keeps one
directory, one TensorBoard run, one HParams row and one ``history.jsonl``. Every way a run
is continued lands there: ``trainer.resume=<run dir or its last.ckpt>``, ``trainer.resume=
auto``, a requeued SLURM job, a relaunched sweep and ``gentrain-compare``. The checks run
before any data loads, so a refused resume writes nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gentrain.core.checkpoint import load_checkpoint
from gentrain.core.config import RunConfig
from gentrain.core.errors import ConfigError, GentrainError
from gentrain.core.paths import CHECKPOINTS_DIR, LAST_CHECKPOINT, checkpoint_path, last_checkpoint

log = logging.getLogger("gentrain")


@dataclass(frozen=True)
class StartingPoint:
    """How a run begins, and the directory it writes."""

    run_dir: Path
    resume_from: Path | None = None  # the checkpoint a resumed run continues
    resume_state: dict[str, Any] | None = None  # its contents, read once (on the CPU)
    init_from: str | None = None  # a run whose weights begin a new run (warm start)

    @property
    def resume_step(self) -> int | None:
        """The step the resumed checkpoint was saved at (None for a new run)."""
        return None if self.resume_state is None else int(self.resume_state.get("step", 0))


def starting_point(
    config: RunConfig, output_dir: Path, model_class: str, in_sweep: bool = False
) -> StartingPoint:
    """The run's start, checked before any data loads: a new run never overwrites another's
    checkpoint, and resume and init_from exclude each other.

    ``output_dir`` is the directory Hydra made for this process. A sweep's job directory is
    the job's identity: when it already holds a checkpoint (the sweep was relaunched), the
    job continues it.
    """
    resume_from = find_resume_checkpoint(
        config.trainer.resume, output_dir, in_sweep, config.model.name
    )
    resume_from = resume_from or requeued_checkpoint(output_dir)
    own_checkpoint = last_checkpoint(output_dir)
    if resume_from is None and own_checkpoint.is_file():
        if not in_sweep:
            raise ConfigError(
                f"{output_dir} already holds a run ({own_checkpoint}); a new run there would "
                "overwrite it. Continue it with trainer.resume=auto, or train into another "
                "directory (leave hydra.run.dir at its default, or pick a new one)"
            )
        log.info("this sweep job was started before: continuing it from %s", own_checkpoint)
        resume_from = own_checkpoint
    init_from = config.extras.get("init_from")
    if init_from is not None:
        if resume_from is not None:
            raise ConfigError(
                "init_from and trainer.resume are both set: resume continues a run with its "
                "full state, init_from starts a new run from another model's weights; pick one"
            )
        checkpoint_path(init_from)  # fail now, not after loading the data
        return StartingPoint(run_dir=output_dir, init_from=str(init_from))
    if resume_from is None:
        return StartingPoint(run_dir=output_dir)
    state = load_checkpoint(resume_from)
    check_model_class(state, resume_from, model_class)
    return StartingPoint(
        run_dir=run_dir_of(resume_from) or output_dir,
        resume_from=resume_from,
        resume_state=state,
    )


def find_resume_checkpoint(
    resume: str | None, output_dir: Path, in_sweep: bool, model: str | None = None
) -> Path | None:
    """``trainer.resume``: null, ``auto`` or a path, turned into a checkpoint path.

    ``auto`` takes this run directory's ``checkpoints/last.ckpt`` if it has one; a single
    run then looks for the newest ``last.ckpt`` among its siblings (``outputs/runs/<date>/
    <run>``) of the same ``model`` (as their ``.hydra/config.yaml`` says) and continues
    that run. A sweep job never takes another job's checkpoint. With none, training starts
    fresh.
    """
    if resume is None:
        return None
    if resume != "auto":
        path = Path(resume).expanduser()
        if path.is_dir():
            path = last_checkpoint(path)
        if not path.is_file():
            raise ConfigError(
                f"trainer.resume={resume}: no checkpoint at {path.resolve()}; pass a run "
                "directory, a .ckpt file, or trainer.resume=auto"
            )
        return path
    own = last_checkpoint(output_dir)
    if own.is_file():
        return own
    if in_sweep:
        return None
    runs_root = output_dir.resolve().parents[1]
    found = sorted(
        (
            path
            for path in runs_root.glob(f"*/*/{CHECKPOINTS_DIR}/{LAST_CHECKPOINT}")
            if model is None or run_model(path.parent.parent) in (None, model)
        ),
        key=lambda p: p.stat().st_mtime,
    )
    if found:
        return found[-1]
    log.info("trainer.resume=auto: no checkpoint under %s, starting fresh", runs_root)
    return None


def run_model(run_dir: Path) -> str | None:
    """The model a run trained, from its ``.hydra/config.yaml`` (None if it cannot say)."""
    try:
        config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        return str(config.model.name)
    except Exception:  # no file, or not a gentrain config: the checkpoint's check decides
        return None


def requeued_checkpoint(output_dir: Path) -> Path | None:
    """The run directory's own ``last.ckpt`` when SLURM restarted this job (a requeue after
    preemption or a timeout): the job continues instead of starting over."""
    own = last_checkpoint(output_dir)
    if int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0 and own.is_file():
        log.info("SLURM requeued this job: resuming from %s", own)
        return own
    return None


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint belongs to (``<run>/checkpoints/<file>``), or None for
    a checkpoint file kept elsewhere, which a resumed run continues from in its own
    directory."""
    checkpoint = checkpoint.resolve()
    if checkpoint.parent.name != CHECKPOINTS_DIR:
        return None
    return checkpoint.parent.parent


def check_model_class(state: dict[str, Any], path: Path, model_class: str) -> None:
    """Before a resumed run writes anything: the checkpoint (a readable gentrain checkpoint,
    see ``load_checkpoint``) holds this run's model."""
    held = state.get("model_class")
    if held != model_class:
        raise GentrainError(
            f"{path} holds a {held} but this run builds a {model_class}; resume with the same "
            "model config (see .hydra/config.yaml in its run directory)"
        )
