"""The single entry point: ``gentrain`` / ``python -m gentrain``.

``main`` is a thin Hydra wrapper; ``train(cfg)`` builds the dataset, model, logger and
trainer from the registries by name, runs it and returns the final metrics, so tests and
Hydra sweepers can call it directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.markup import escape

from gentrain.cli.overrides import check_argv
from gentrain.cli.run_files import RunFiles, deferred_overrides
from gentrain.core.checkpoint import atomic_write_bytes
from gentrain.core.child_process import stop_with_parent
from gentrain.core.config import OPTIMIZED_METRIC, RunConfig, validate_config
from gentrain.core.errors import ConfigError, GentrainError
from gentrain.core.paths import config_dir
from gentrain.core.ranks import in_sweep_job
from gentrain.core.registry import MODELS
from gentrain.core.runtime import resolve_device, seed_everything
from gentrain.data import build_dataset, check_batch_fits
from gentrain.evaluation import Evaluator
from gentrain.experiments.sweep import (
    finished_job,
    remember_command,
    remember_fixed_keys,
    unfinished_sweep,
)
from gentrain.models import build_model
from gentrain.tracking.console import (
    console,
    print_config_tree,
    print_error,
    print_line,
    print_metrics_table,
)
from gentrain.tracking.loggers import RunSummary, build_logger
from gentrain.training.data_parallel import World
from gentrain.training.data_parallel import setup as setup_data_parallel
from gentrain.training.memory import check_model_fits
from gentrain.training.resume import StartingPoint, starting_point
from gentrain.training.run_lock import RunLock
from gentrain.training.trainer import Stopwatch, Trainer
from gentrain.training.warm_start import warm_start

log = logging.getLogger("gentrain")


class TrainingInterrupted(GentrainError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# How a run started or where it writes, not what it is: never an HParams column.
NOT_HPARAMS = {"trainer/resume", "paths/output_dir", "paths/data_dir", "paths/cache_dir"}


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The config as ``section/key`` -> scalar, for TensorBoard's HParams tab."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), item)
        elif isinstance(value, bool | int | float | str):
            out[prefix] = value
        else:
            out[prefix] = str(value)

    walk("", {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"})
    return {k: v for k, v in out.items() if k not in NOT_HPARAMS}


def changed_knobs(model_cfg: Any) -> list[str]:
    """The model config's keys set away from that model's defaults: what sets a run apart."""
    defaults = asdict(type(model_cfg)())
    return [k for k, v in asdict(model_cfg).items() if k != "name" and defaults.get(k) != v]


def train(cfg: DictConfig, run_files: RunFiles | None = None) -> dict[str, float]:
    """Validate ``cfg``, train, write ``metrics.json``; return the final metrics.
    ``run_files``: a single CLI run's ``.hydra/`` and ``train.log``, written once its
    checks have passed."""
    wall_clock = Stopwatch()
    wall_clock.start()
    config: RunConfig = validate_config(cfg)
    output_dir = Path(config.paths.output_dir)
    # One process, or this rank's process (its own GPU) under torchrun/SLURM.
    world = setup_data_parallel(resolve_device(config.device), config.trainer.sync_batchnorm)
    try:
        if world.distributed:  # rank 0's run directory (each rank's Hydra timed its own)
            own, output_dir = output_dir, Path(world.broadcast(str(output_dir)))
            remove_if_empty(own, keep=output_dir)
        model_class = MODELS.get(config.model.name).__name__
        start = starting_point(config, output_dir, model_class, in_sweep=in_sweep_job())
        if start.run_dir != output_dir:  # a resumed run continues in its own directory
            log.info("resuming %s in place, from step %d", start.run_dir, start.resume_step)
            remove_if_empty(output_dir, keep=start.run_dir)
            cfg.paths.output_dir = str(start.run_dir)
        # One writer per run directory: rank 0 alone writes it.
        with RunLock(start.run_dir) if world.is_main else contextlib.nullcontext():
            return _train(cfg, config, world, start, wall_clock, run_files)
    finally:
        world.close()


def remove_if_empty(directory: Path, keep: Path) -> None:
    """The directory Hydra made for a process whose run writes elsewhere, if it is empty."""
    if directory.resolve() != keep.resolve() and directory.is_dir():
        with contextlib.suppress(OSError):  # not empty, or another rank removed it first
            directory.rmdir()


def _train(
    cfg: DictConfig,
    config: RunConfig,
    world: World,
    start: StartingPoint,
    wall_clock: Stopwatch,
    run_files: RunFiles | None = None,
) -> dict[str, float]:
    device = world.device
    output_dir = start.run_dir
    seed_everything(config.seed, config.trainer.deterministic)
    print_config_tree(cfg)

    data = build_dataset(config.dataset)
    check_batch_fits(len(data.train), config.trainer.batch_size)  # before the run dir is written
    check_model_fits(config.model, data.image_shape, data.num_classes, data.name, device)
    # The feature space is settled before the first step (the classifier trained or loaded,
    # an unlabelled folder's choice said), never after the work.
    evaluator = Evaluator.before_training(
        config.eval, data, device, Path(config.paths.cache_dir), world
    )
    model = build_model(config.model, data.image_shape, data.num_classes, data.name)
    warm_start_summary = warm_start(model, start.init_from) if start.init_from is not None else None
    output_dir.mkdir(parents=True, exist_ok=True)
    if run_files is not None and world.is_main:  # every check passed: the run starts here
        run_files.write(cfg, output_dir)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    logger = build_logger(config.logger, output_dir, start.resume_step)
    logger.log_text("config", "```yaml\n" + config_yaml + "```")
    if warm_start_summary:
        logger.log_text("init_from", warm_start_summary)
    trainer = Trainer(
        config.trainer,
        device,
        output_dir,
        logger,
        seed=config.seed,
        evaluator=evaluator,
        eval_every_n_epochs=config.eval.every_n_epochs,
        config_yaml=config_yaml,
        wall_clock=wall_clock,
        world=world,
    )
    try:
        metrics = trainer.fit(model, data, config.optimizer, start.resume_from, start.resume_state)
        metrics = world.broadcast(metrics)  # rank 0's clocks and counts on every rank
        # Everything the run spent: data, training, evaluation, earlier processes if resumed.
        metrics["time/wall_seconds"] = wall_clock.seconds
        changed = changed_knobs(config.model)
        rates = model.initial_learning_rates()
        logger.log_hparams(
            RunSummary(flat_hparams(cfg), metrics, config.optimized_metric, changed, rates)
        )
    finally:
        logger.close()
    return report_run(config, trainer, metrics, output_dir)


def report_run(
    config: RunConfig, trainer: Trainer, metrics: dict[str, float], output_dir: Path
) -> dict[str, float]:
    """Write ``metrics.json`` and show the table; raise TrainingInterrupted after a signal."""
    atomic_write_bytes(output_dir / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    print_metrics_table(metrics)
    log.info("outputs in %s", output_dir)
    if trainer.interrupted:
        code = 143 if trainer.interrupted == "SIGTERM" else 130
        raise TrainingInterrupted(
            f"stopped by {trainer.interrupted} at step {trainer.step}; checkpoint saved to "
            f"{trainer.checkpoint_path}.\nResume: rerun the same command with "
            f"trainer.resume={trainer.checkpoint_path}",
            exit_code=code,
        )
    if config.optimized_metric not in metrics:
        log.warning(
            "optimized_metric %r is not among the metrics: %s",
            config.optimized_metric,
            ", ".join(metrics),
        )
    return metrics


def hydra_task(cfg: DictConfig) -> float | None:
    """Hydra's task function: returns the optimised metric for sweepers.

    A single run stops on a user error with its message and exit code 2. In a sweep, a
    failing job (bad hyper-parameter, divergence, even a bug) is recorded in its
    ``status.json`` and the sweep goes on; the summary lists it as failed.
    """
    run_files = RunFiles()
    optimized = str(cfg.get("optimized_metric", OPTIMIZED_METRIC))
    if in_sweep_job():  # a relaunched sweep: a job that finished before is kept
        kept = finished_job(Path(cfg.paths.output_dir))
        if kept is not None:
            print_line(f"{cfg.paths.output_dir}: finished in an earlier launch, kept")
            return kept.get(optimized)
    try:
        metrics = train(cfg, run_files)
    except TrainingInterrupted as exc:
        console.print(
            f"[bold yellow]{escape(str(exc))}[/bold yellow]", highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # outside the steps (data, classifier): the trainer's is off
        run_files.discard()  # a run that had not begun leaves nothing
        print_error(
            "stopped by Ctrl-C before training began: nothing new was saved; rerun the same "
            "command to start again",
            label="stopped",
        )
        sys.exit(130)
    except Exception as exc:
        if not in_sweep_job():
            run_files.discard()  # a refused run leaves nothing
            if not isinstance(exc, GentrainError):
                raise
            print_error(exc)
            sys.exit(2)
        if not isinstance(exc, GentrainError):
            log.exception("job failed")
        print_error(exc, label="job failed")
        status = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        output_dir = Path(cfg.paths.output_dir)
        atomic_write_bytes(output_dir / "status.json", (json.dumps(status) + "\n").encode())
        return float("nan")
    return metrics.get(optimized)


def main() -> None:
    import hydra

    stop_with_parent()
    try:  # bad overrides: one line and exit 2, before Hydra writes anything
        check_argv(sys.argv[1:], config_dir())
    except ConfigError as exc:
        print_error(exc)
        sys.exit(2)
    remember_fixed_keys(sys.argv[1:])  # for sweep job names: what varies between jobs
    remember_command(sys.argv[1:])
    sweep_dir = unfinished_sweep(sys.argv[1:])
    if sweep_dir is not None:
        print_line(
            f"continuing the unfinished sweep {sweep_dir}: finished jobs are kept, the others "
            "resume (for a new sweep instead: hydra.sweep.dir=<a new directory>)"
        )
        sys.argv.append(f"hydra.sweep.dir={sweep_dir}")
    # Under torchrun rank 0 alone writes; a single run writes .hydra/ and train.log itself.
    sys.argv.extend(deferred_overrides(sys.argv[1:]))
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")(hydra_task)()


if __name__ == "__main__":
    main()
