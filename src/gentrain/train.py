"""The single entry point: ``gentrain`` / ``python -m gentrain``.

``main`` is a thin Hydra wrapper; ``train(cfg)`` builds the dataset, model, logger and
trainer from the registries by name, runs it and returns the final metrics, so tests and
Hydra sweepers can call it directly.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.markup import escape

from gentrain.checkpoint import atomic_write_bytes
from gentrain.config import DeviceConfig, RunConfig, validate_config
from gentrain.console import console, print_config_tree, print_error, print_metrics_table
from gentrain.data import build_dataset
from gentrain.data_parallel import World, hydra_overrides_for_rank, requeued_checkpoint
from gentrain.data_parallel import setup as setup_data_parallel
from gentrain.errors import ConfigError, GentrainError
from gentrain.evaluation import Evaluator
from gentrain.models import build_model
from gentrain.registry import LOGGERS
from gentrain.restore import checkpoint_path
from gentrain.sweep import remember_fixed_keys
from gentrain.trainer import Stopwatch, Trainer
from gentrain.warm_start import warm_start

log = logging.getLogger("gentrain")


def config_dir() -> Path:
    """The packaged configs (wheel installs) or the repository's ``configs/`` (editable)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parents[1] / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"gentrain's configs/ not found next to {here}; reinstall gentrain")


class TrainingInterrupted(GentrainError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not deterministic


def resolve_device(cfg: DeviceConfig) -> torch.device:
    """The configured device, or a ConfigError saying why it is not usable here."""
    if cfg.num_threads is not None:
        if cfg.num_threads < 1:
            raise ConfigError(f"device.num_threads must be >= 1, got {cfg.num_threads}")
        torch.set_num_threads(cfg.num_threads)
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if cfg.name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if cfg.name == "cuda" and not cuda:
        raise ConfigError(
            "device=cuda but CUDA is not available here "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "use device=cpu or device=auto"
        )
    if cfg.name == "mps" and not mps:
        raise ConfigError("device=mps but Apple MPS is not available here; use device=auto")
    return torch.device(cfg.name)


def find_resume_checkpoint(resume: str | None, output_dir: Path) -> Path | None:
    """``trainer.resume``: null, ``auto`` or a path, turned into a checkpoint path.

    ``auto`` takes this run directory's ``checkpoints/last.ckpt`` if it has one, else the
    newest ``last.ckpt`` of the sibling runs (``outputs/runs/<date>/<run>``); with none,
    training starts fresh.
    """
    if resume is None:
        return None
    if resume != "auto":
        path = Path(resume).expanduser()
        if path.is_dir():
            path = path / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise ConfigError(
                f"trainer.resume={resume}: no checkpoint at {path.resolve()}; pass a run "
                "directory, a .ckpt file, or trainer.resume=auto"
            )
        return path
    own = output_dir / "checkpoints" / "last.ckpt"
    if own.is_file():
        return own
    runs_root = output_dir.resolve().parents[1]
    found = sorted(runs_root.glob("*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if found:
        return found[-1]
    log.info("trainer.resume=auto: no checkpoint under %s, starting fresh", runs_root)
    return None


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
    return out


def changed_knobs(model_cfg: Any) -> list[str]:
    """The model config's keys set away from that model's defaults: what sets a run apart."""
    defaults = asdict(type(model_cfg)())
    return [k for k, v in asdict(model_cfg).items() if k != "name" and defaults.get(k) != v]


def train(cfg: DictConfig) -> dict[str, float]:
    """Validate ``cfg``, train, write ``metrics.json``; return the final metrics."""
    wall_clock = Stopwatch()
    wall_clock.start()
    run: RunConfig = validate_config(cfg)
    output_dir = Path(run.paths.output_dir)
    # One process, or this rank's process (its own GPU) under torchrun/SLURM.
    world = setup_data_parallel(resolve_device(run.device), run.trainer.sync_batchnorm)
    try:
        return _train(cfg, run, world, output_dir, wall_clock)
    finally:
        world.close()


def _train(
    cfg: DictConfig, run: RunConfig, world: World, output_dir: Path, wall_clock: Stopwatch
) -> dict[str, float]:
    device = world.device
    if world.distributed:  # rank 0's run directory (each rank's Hydra timed its own)
        own, output_dir = output_dir, Path(world.broadcast(str(output_dir)))
        if own != output_dir and own.is_dir() and not any(own.iterdir()):
            own.rmdir()
    resume_from = find_resume_checkpoint(run.trainer.resume, output_dir)
    resume_from = resume_from or requeued_checkpoint(output_dir)  # SLURM requeue
    own_checkpoint = output_dir / "checkpoints" / "last.ckpt"
    if resume_from is None and own_checkpoint.is_file():
        raise ConfigError(
            f"{output_dir} already holds a run ({own_checkpoint}); a new run there would "
            "overwrite it. Continue it with trainer.resume=auto, or train into another "
            "directory (leave hydra.run.dir at its default, or pick a new one)"
        )
    init_from = run.extras.get("init_from")
    if init_from is not None:
        if resume_from is not None:
            raise ConfigError(
                "init_from and trainer.resume are both set: resume continues a run with its "
                "full state, init_from starts a new run from another model's weights; pick one"
            )
        checkpoint_path(init_from)  # fail now, not after loading the data
    seed_everything(run.seed, run.trainer.deterministic)
    print_config_tree(cfg)

    data = build_dataset(run.dataset)
    model = build_model(run.model, data.image_shape)
    warm_start_summary = warm_start(model, init_from) if init_from is not None else None
    output_dir.mkdir(parents=True, exist_ok=True)
    logger = LOGGERS.get(run.logger.name)(output_dir)
    logger.log_text("config", "```yaml\n" + OmegaConf.to_yaml(cfg, resolve=True) + "```")
    if warm_start_summary:
        logger.log_text("init_from", warm_start_summary)
    evaluator = None
    if run.eval.enabled and world.is_main:  # the others wait at their next collective
        evaluator = Evaluator(run.eval, data, device, Path(run.paths.cache_dir))
    trainer = Trainer(
        run.trainer,
        device,
        output_dir,
        logger,
        seed=run.seed,
        evaluator=evaluator,
        eval_every_n_epochs=run.eval.every_n_epochs,
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        wall_clock=wall_clock,
        world=world,
    )
    try:
        metrics = trainer.fit(model, data, run.optimizer, resume_from=resume_from)
        metrics = world.broadcast(metrics)  # rank 0's, with its evaluation
        # Everything the run spent: data, training, evaluation, earlier processes if resumed.
        metrics["time/wall_seconds"] = wall_clock.seconds
        rates = {name: s.base_lrs[0] for name, s in model.schedulers.items()}
        logger.log_hparams(
            flat_hparams(cfg), metrics, run.optimized_metric, changed_knobs(run.model), rates
        )
    finally:
        logger.close()

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
    if run.optimized_metric not in metrics:
        log.warning(
            "optimized_metric %r is not among the metrics: %s",
            run.optimized_metric,
            ", ".join(metrics),
        )
    return metrics


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _run(cfg: DictConfig) -> float | None:
    """Hydra's task function: returns the optimised metric for sweepers.

    A single run stops on a user error with its message and exit code 2. In a sweep, a
    failing job (bad hyper-parameter, divergence, even a bug) is recorded in its
    ``status.json`` and the sweep goes on; the summary lists it as failed.
    """
    try:
        metrics = train(cfg)
    except TrainingInterrupted as exc:
        console.print(
            f"[bold yellow]{escape(str(exc))}[/bold yellow]", highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    except Exception as exc:
        if not _in_multirun():
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
    return metrics.get(str(cfg.get("optimized_metric", "val/fid")))


PARENT_PID_ENV = "GENTRAIN_PARENT_PID"  # set by gentrain-compare for its training runs


def stop_with_parent() -> None:
    """A run started by gentrain-compare gets SIGTERM (save, then exit) when compare dies
    (a closed terminal, a kill): no trainer goes on alone, writing to a directory that a
    rerun would resume. Linux only (prctl); elsewhere compare forwards the signals it gets.
    """
    expected = os.environ.pop(PARENT_PID_ENV, None)
    if expected is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(expected):  # compare died before prctl: stop now
        sys.exit(143)


def main() -> None:
    import hydra

    stop_with_parent()
    remember_fixed_keys(sys.argv[1:])  # for sweep job names: what varies between jobs
    sys.argv.extend(hydra_overrides_for_rank())  # under torchrun, rank 0 alone writes
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")(_run)()


if __name__ == "__main__":
    main()
