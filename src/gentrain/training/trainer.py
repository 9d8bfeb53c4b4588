"""The training loop: epochs, validation, logging, checkpoints, resume and signals.

The trainer never looks inside a model: it hands batches to ``model.training_step``,
which updates whatever networks the model has and returns named loss terms. Everything
else (devices, RNG, images/s, grids, ``last.ckpt``, Ctrl-C) lives here, in one loop you
can read top to bottom in ``fit``.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from gentrain.core.checkpoint import (
    atomic_write_bytes,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from gentrain.core.config import TrainerConfig
from gentrain.core.errors import GentrainError, TrainingDivergedError
from gentrain.core.paths import last_checkpoint
from gentrain.core.ranks import rank_zero_only
from gentrain.data import Batch, DeviceTensorLoader, ImageData
from gentrain.models import GenerativeModel
from gentrain.tracking.console import TrainingProgress
from gentrain.tracking.history import append_record, read_history
from gentrain.tracking.loggers import Logger, NullLogger
from gentrain.training.data_parallel import World
from gentrain.training.devices import check_on_device
from gentrain.training.optim import OptimizerConfig, OptimizerFactory
from gentrain.training.resume import check_model_class
from gentrain.training.runaway import RunawayDetector
from gentrain.training.throughput import Throughput

log = logging.getLogger("gentrain")


class StopRequested:
    """Turns the first SIGINT/SIGTERM into a flag checked after each step.

    The step in flight finishes, ``last.ckpt`` is written and ``fit`` returns; a second
    Ctrl-C interrupts immediately (KeyboardInterrupt), as users expect.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        log.warning("%s received: finishing this step and saving a checkpoint", self.signal_name)

    @contextmanager
    def installed(self) -> Iterator[StopRequested]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class Stopwatch:
    """Training time, with the pauses for validation and evaluation left out.

    It is what ``trainer.max_seconds`` budgets, what ``history.jsonl`` puts on its time axis
    and what a checkpoint carries over on resume.
    """

    def __init__(self, seconds: float = 0.0) -> None:
        self._banked = seconds
        self._started: float | None = None

    def start(self) -> None:
        if self._started is None:
            self._started = time.perf_counter()

    def pause(self) -> None:
        if self._started is not None:
            self._banked += time.perf_counter() - self._started
            self._started = None

    def credit(self, seconds: float) -> None:
        """Add time spent elsewhere (the earlier processes of a resumed run)."""
        self._banked += seconds

    @property
    def seconds(self) -> float:
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self._banked + running


@dataclass
class TrainingPlan:
    """What ``fit`` settles before the first step and its phases share."""

    loader: DeviceTensorLoader
    val_images: torch.Tensor  # uint8, on the device
    val_labels: torch.Tensor | None  # on the device, for a conditional model
    total_steps: int  # max_epochs and max_steps, whichever ends first
    lr_varies: bool  # a schedule or warm-up: log lr/<network> curves
    out_of_time: bool = False  # trainer.max_seconds spent
    runaway: RunawayDetector | None = None  # checks the loss terms at log steps only
    throughput: Throughput | None = None  # precision, channels_last, compile


class LogWindow:
    """Running sums of the loss terms since the last log line, and the images/s of it.

    Sums stay on the device (no host sync per step); ``close`` reads them once.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.rate = 0.0  # images/s of the last closed window
        self.shown: dict[str, float] = {}  # mean terms of the last closed window
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.started = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        self.steps += 1
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + value.float()

    def exclude(self, seconds: float) -> None:
        """Leave a pause (validation, evaluation) out of the window's images/s."""
        self.started += seconds

    def close(self) -> dict[str, float]:
        """The window's mean terms (and ``rate``); a new window starts."""
        elapsed = time.perf_counter() - self.started
        self.rate = self.steps * self.batch_size / max(elapsed, 1e-9)
        self.shown = {k: float(v) / self.steps for k, v in self.sums.items()}
        self._reset()
        return self.shown


class FiniteCheck:
    """NaN/Inf loss terms noticed without a host sync per step: each step's flags stay on
    the device until ``raise_if_diverged`` reads them all at once (at the logging cadence
    and before anything is saved), naming the first bad step."""

    def __init__(self) -> None:
        self._pending: list[tuple[int, int, list[str], torch.Tensor]] = []

    def add(self, step: int, epoch: int, terms: dict[str, torch.Tensor]) -> None:
        finite = torch.isfinite(torch.stack([v.detach().float() for v in terms.values()]))
        self._pending.append((step, epoch, list(terms), finite))

    def raise_if_diverged(self, checkpoint_path: Path) -> None:
        pending, self._pending = self._pending, []
        if not pending or bool(torch.stack([f.all() for *_, f in pending]).all()):
            return
        step, epoch, names, finite = next(p for p in pending if not bool(p[3].all()))
        bad = [name for name, ok in zip(names, finite.tolist()) if not ok]
        kept = (
            f"the last good checkpoint is {checkpoint_path}"
            if checkpoint_path.is_file()
            else "no checkpoint had been written yet"
        )
        raise TrainingDivergedError(
            f"loss term(s) {', '.join(repr(b) for b in bad)} became NaN/Inf at step {step} "
            f"(epoch {epoch}); stopped without saving, {kept}.\n"
            "Fix: lower optimizer.lr, set trainer.gradient_clip_norm, or check the data."
        )


class Trainer:
    """Runs ``model`` on ``data``: see ``fit``."""

    def __init__(
        self,
        cfg: TrainerConfig,
        device: torch.device,
        output_dir: Path,
        logger: Logger | None = None,
        seed: int = 0,
        evaluator: Callable[[GenerativeModel, bool], dict[str, float]] | None = None,
        eval_every_n_epochs: int = 1,
        config_yaml: str = "",
        wall_clock: Stopwatch | None = None,
        world: World | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.world = world or World(device=device)  # the data-parallel ranks, or just this one
        self.output_dir = output_dir
        self.checkpoint_path = last_checkpoint(output_dir)
        self.history_path = output_dir / "history.jsonl"  # one line per validation
        self.logger = logger or NullLogger()
        self.seed = seed
        self.evaluator = evaluator
        self.eval_every_n_epochs = eval_every_n_epochs
        self.config_yaml = config_yaml  # saved in checkpoints: what gentrain-eval rebuilds from
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.clock = Stopwatch()  # training time: evaluation and start-up left out
        self.fit_seconds = 0.0  # of it, fitting to the data outside the steps (fit_to_data)
        # Wall time since the caller started its clock (data loading included), carried
        # over on resume so a resumed run reports all it cost.
        self.wall_clock = wall_clock or Stopwatch()
        self.wall_clock.start()
        self.interrupted: str | None = None  # the signal's name if a signal stopped the run
        self._saved_step = -1
        self.finite = FiniteCheck()
        self.grids: dict[str, torch.Tensor] = {}

    # ---------------------------------------------------------------------------------------
    def fit(
        self,
        model: GenerativeModel,
        data: ImageData,
        optimizer_cfg: OptimizerConfig,
        resume_from: Path | None = None,
        resume_state: dict[str, Any] | None = None,
    ) -> dict[str, float]:
        """Train until ``max_epochs``, ``max_steps`` or ``max_seconds``; return the final
        metrics. ``resume_from``: a checkpoint to continue (``resume_state``: its contents,
        if they were read already)."""
        plan = self._prepare(model, data, optimizer_cfg, resume_from, resume_state)
        stop = self.world.shared_stop(StopRequested())  # on all ranks after the same step
        metrics: dict[str, float] = {}
        with stop.installed(), TrainingProgress(plan.total_steps, self.cfg.progress) as progress:
            window = LogWindow(self.cfg.batch_size)
            progress.update(self.step, str(self.epoch + 1), 0.0, {})
            self.clock.start()
            while not self._should_stop(plan, stop):
                if not self._train_epoch(model, plan, window, progress, stop):
                    break  # max_steps/max_seconds reached or a stop was requested mid-epoch
                metrics = self._end_epoch(model, plan, window)
            self.clock.pause()
        return self._finish(model, plan, metrics, stop)

    # --- the phases of ``fit``, in the order they run ---------------------------------------
    def _prepare(
        self,
        model: GenerativeModel,
        data: ImageData,
        optimizer_cfg: OptimizerConfig,
        resume_from: Path | None,
        resume_state: dict[str, Any] | None,
    ) -> TrainingPlan:
        """Loader, validation images, optimisers, the grids' fixed inputs; resume if asked."""
        cfg = self.cfg
        world = self.world
        world.local_batch_size(cfg.batch_size)  # checks it splits evenly over the ranks
        labels = model.conditional  # an unconditional model's batches carry no labels
        loader = DeviceTensorLoader(
            data.train,
            cfg.batch_size,
            self.device,
            self.seed,
            rank=world.rank,
            world_size=world.size,
            labels=data.train_labels if labels else None,
        )
        val_count = len(data.val)
        if cfg.limit_val_batches is not None:
            val_count = min(val_count, cfg.limit_val_batches * cfg.val_batch_size)
        total_steps = cfg.max_epochs * len(loader)
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        plan = TrainingPlan(
            loader=loader,
            val_images=data.val[:val_count].to(self.device),
            val_labels=data.val_labels[:val_count].to(self.device) if labels else None,
            total_steps=total_steps,
            lr_varies=optimizer_cfg.scheduler != "constant" or optimizer_cfg.warmup_steps > 0,
        )

        model.to(self.device)
        world.prepare(model)
        factory = OptimizerFactory(optimizer_cfg, total_steps, cfg.gradient_clip_norm)
        model.configure_optimizers(factory)
        factory.check_networks()
        plan.throughput = Throughput(cfg, self.device)
        plan.throughput.prepare(model)

        # Fixed inputs for the image grids: the same noise and validation images all run long.
        noise_generator = torch.Generator().manual_seed(self.seed)
        self.fixed_noise = model.sample_noise(cfg.num_grid_images, noise_generator)
        shown = max(1, cfg.num_grid_images // 2)
        self.fixed_real = Batch(
            data.val[:shown].to(self.device),
            data.val_labels[:shown].to(self.device) if labels else None,
        )
        if resume_from is not None:
            self._restore(model, resume_from, resume_state)
        else:
            self.history_path.unlink(missing_ok=True)  # a fresh run starts a fresh curve
        # trainer.max_seconds spent (already, for a run resumed after its budget)
        plan.out_of_time = cfg.max_seconds is not None and self.clock.seconds >= cfg.max_seconds
        plan.runaway = RunawayDetector(cfg.on_runaway, self.logger, model.logged_terms)
        log.info(
            "training %s on %s: %d steps (%d per epoch, batch %d) on %s, %s trainable "
            "parameters (model/parameters)",
            type(model).__name__,
            data.name,
            total_steps,
            len(loader),
            cfg.batch_size,
            self.device,
            f"{model.num_trainable_parameters():,}",
        )
        return plan

    def _should_stop(self, plan: TrainingPlan, stop: StopRequested) -> bool:
        """Whether to start no further epoch: epochs, steps or time spent, or a signal."""
        return (
            self.epoch >= self.cfg.max_epochs
            or self.step >= plan.total_steps
            or plan.out_of_time
            or bool(stop)
        )

    def _train_epoch(
        self,
        model: GenerativeModel,
        plan: TrainingPlan,
        window: LogWindow,
        progress: TrainingProgress,
        stop: StopRequested,
    ) -> bool:
        """Train the rest of this epoch; False if a budget or a signal cut it short."""
        cfg, world, throughput = self.cfg, self.world, plan.throughput
        model.train()
        for batch in plan.loader.epoch(self.epoch, start_batch=self.batch_in_epoch):
            world.phase = "training step"  # what a failed collective's message names
            with world.global_batch_randomness(len(batch)), throughput.autocast():
                terms = model.training_step(throughput.batch(batch))
            model.advance_schedules()
            self.step += 1
            world.step = self.step
            self.batch_in_epoch += 1
            check_on_device(terms, self.device, f"{type(model).__name__}.training_step")
            self.finite.add(self.step, self.epoch + 1, terms)
            window.add(terms)
            if cfg.max_seconds is not None:
                plan.out_of_time = self.clock.seconds >= cfg.max_seconds
            plan.out_of_time = world.agree_to_stop(stop, plan.out_of_time, cfg.log_every_n_steps)
            done = self.step >= plan.total_steps or plan.out_of_time
            if self.step % cfg.log_every_n_steps == 0 or done:
                self._close_log_window(model, plan, window, progress)
            else:
                progress.update(self.step, str(self.epoch + 1), window.rate, window.shown)
            if self.step % cfg.images_every_n_steps == 0:
                self._log_grids(model)
            last_of_epoch = self.batch_in_epoch == len(plan.loader)
            if stop or (done and not last_of_epoch):
                return False
            if self.step % cfg.checkpoint_every_n_steps == 0 and not last_of_epoch:
                self._save(model)
        return True

    def _close_log_window(
        self,
        model: GenerativeModel,
        plan: TrainingPlan,
        window: LogWindow,
        progress: TrainingProgress,
    ) -> None:
        """Log the window's mean loss terms, images/s and learning rates; start a new one."""
        self.finite.raise_if_diverged(self.checkpoint_path)
        window.sums = self.world.mean_terms(window.sums)  # the global batch's
        shown = window.shown = model.logged_terms.ordered(window.close())  # the model's first
        plan.runaway.check(self.step, shown, self.checkpoint_path)
        scalars = {f"train/{k}": v for k, v in shown.items()}
        scalars["train/images_per_sec"] = window.rate
        if plan.lr_varies:  # a constant rate is in the config, not a curve
            scalars.update({f"lr/{k}": v for k, v in model.learning_rates().items()})
        self.logger.log_scalars(scalars, self.step)
        progress.update(self.step, str(self.epoch + 1), window.rate, window.shown, force_line=True)

    def _end_epoch(
        self, model: GenerativeModel, plan: TrainingPlan, window: LogWindow
    ) -> dict[str, float]:
        """Validate, evaluate (every ``eval_every_n_epochs`` and after the last epoch), log
        and checkpoint; the time this takes counts neither as training nor in images/s."""
        self.finite.raise_if_diverged(self.checkpoint_path)
        self.epoch += 1
        self.batch_in_epoch = 0
        window.exclude(self._fit_to_data(model, plan))
        pause = time.perf_counter()
        self.clock.pause()
        metrics = self._validate(model, plan)
        last_epoch = self.epoch == self.cfg.max_epochs or self.step >= plan.total_steps
        last_epoch = last_epoch or plan.out_of_time
        if self.epoch % self.eval_every_n_epochs == 0 or last_epoch:
            metrics.update(self._evaluate(model, final=last_epoch))
        self._log_validation(model, metrics)
        self._save(model)
        window.exclude(time.perf_counter() - pause)
        self.clock.start()
        return metrics

    def _finish(
        self,
        model: GenerativeModel,
        plan: TrainingPlan,
        metrics: dict[str, float],
        stop: StopRequested,
    ) -> dict[str, float]:
        """Validate a run stopped mid-epoch, save what is unsaved, return the metrics."""
        self.finite.raise_if_diverged(self.checkpoint_path)
        if self.batch_in_epoch or not metrics:  # stopped mid-epoch: still validate
            if not stop:  # a signal's stop saves at once, with the last epoch's fit
                self.clock.start()  # training time, as at an epoch's end
                self._fit_to_data(model, plan)
                self.clock.pause()
            metrics = self._validate(model, plan)
            if not stop:
                metrics.update(self._evaluate(model, final=True))
            self._log_validation(model, metrics)
        if self._saved_step != self.step:
            self._save(model)
        self._write_final_grids()
        if stop:
            self.interrupted = stop.signal_name
            log.warning(
                "stopped by %s at step %d; checkpoint saved to %s",
                stop.signal_name,
                self.step,
                self.checkpoint_path,
            )
        seconds = self.clock.seconds  # all of the run's training, resumed parts included
        stepping = seconds - self.fit_seconds  # images/s: of the steps alone
        rate = self.step * self.cfg.batch_size / stepping if stepping > 0 else 0.0
        return {
            **metrics,
            "train/images_per_sec": rate,
            "train/seconds": self.clock.seconds,
            "train/fit_seconds": self.fit_seconds,  # of which fit_to_data (not in images/s)
            "model/parameters": float(model.num_trainable_parameters()),
            "step": float(self.step),
            "epoch": float(self.epoch),
            **plan.runaway.metrics(),
        }

    def _fit_to_data(self, model: GenerativeModel, plan: TrainingPlan) -> float:
        """The model's fit to its training images outside the steps (an autoencoder's latent
        prior): training time, but no step, so it is kept out of images/s. Its seconds."""
        started = time.perf_counter()
        model.fit_to_data(plan.loader.images, plan.loader.labels)
        seconds = time.perf_counter() - started
        self.fit_seconds += seconds
        return seconds

    def _log_validation(self, model: GenerativeModel, metrics: dict[str, float]) -> None:
        """A validation's record in history.jsonl, the dashboard's layout, fresh grids."""
        self._record_history(metrics)
        self.logger.log_layout(list(model.learning_rates()), model.logged_terms)  # all tags known
        self._log_grids(model)

    # ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def _validate(self, model: GenerativeModel, plan: TrainingPlan) -> dict[str, float]:
        """Mean validation losses over the validation images, with RNG isolated from
        training."""
        images, labels = plan.val_images, plan.val_labels
        self.world.phase = "validation"
        was_training = model.training
        model.eval()
        sums: dict[str, float] = {}
        count = 0
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed + 1)
            for start in range(0, len(images), self.cfg.val_batch_size):
                rows = slice(start, start + self.cfg.val_batch_size)
                x = images[rows].float().div_(255.0)
                batch = Batch(x, None if labels is None else labels[rows])
                for name, value in model.validation_step(batch).items():
                    sums[name] = sums.get(name, 0.0) + float(value) * len(x)
                count += len(x)
        model.train(was_training)
        metrics = {f"val/{k}": v / max(count, 1) for k, v in sums.items()}
        self.logger.log_scalars(metrics, self.step)
        return metrics

    def _evaluate(self, model: GenerativeModel, final: bool) -> dict[str, float]:
        """Sample-quality metrics (``val/fid`` ...), if an evaluator was given; the costly
        likelihood estimates only at the end (``final``)."""
        if self.evaluator is None:
            return {}
        self.world.phase = "evaluation"  # every rank evaluates its share
        metrics = self.evaluator(model, final)
        self.logger.log_scalars(metrics, self.step)
        log.info(
            "evaluation at step %d: %s",
            self.step,
            ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith("val/")),
        )
        return metrics

    @rank_zero_only
    def _record_history(self, metrics: dict[str, float]) -> None:
        """Appends this validation's metrics, with step and training time, to history.jsonl:
        the learning curves (FID against time) that reports are drawn from."""
        record = {"step": self.step, "epoch": self.epoch, "train_seconds": self.clock.seconds}
        record.update(metrics)
        append_record(self.history_path, record)

    @rank_zero_only
    def _restore_history(self, checkpoint: Path) -> None:
        """On resume, keep the history up to the checkpoint's step: records written after it
        will be redone, and a run resumed into a new directory starts with its source's."""
        source = checkpoint.resolve().parent.parent / "history.jsonl"
        if self.history_path.is_file():
            source = self.history_path
        kept = [r for r in read_history(source) if r["step"] <= self.step]
        if kept or self.history_path.is_file():
            text = "".join(json.dumps(r) + "\n" for r in kept)
            atomic_write_bytes(self.history_path, text.encode())

    @torch.no_grad()
    def _log_grids(self, model: GenerativeModel) -> None:
        from torchvision.utils import make_grid  # imported once a run draws, not at start-up

        was_training = model.training
        model.eval()
        real = self.fixed_real.with_images(self.fixed_real.images.float().div(255.0))
        for name, (batch, nrow) in model.previews(self.fixed_noise.to(self.device), real).items():
            batch = batch.cpu().nan_to_num(0.0)  # a diverged model's NaNs show as black
            self.grids[name] = make_grid(batch, nrow=nrow, padding=2, pad_value=0.5)
            self.logger.log_image(name, self.grids[name], self.step)
        model.train(was_training)

    @rank_zero_only
    def _write_final_grids(self) -> None:
        """The last grids as PNG files, for a look without TensorBoard."""
        from torchvision.utils import save_image

        for name, grid in self.grids.items():
            path = self.output_dir / "images" / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_image(grid, path)

    # ---------------------------------------------------------------------------------------
    def _save(self, model: GenerativeModel) -> None:
        self.finite.raise_if_diverged(self.checkpoint_path)  # never save NaN weights
        self.world.phase = "checkpoint"
        self._saved_step = self.step
        save_checkpoint(
            {
                "model_class": type(model).__name__,
                "model": model.state_dict(),
                "optimizers": model.optimizer_state_dict(),
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "rng": rng_state(),
                "train_seconds": self.clock.seconds,
                "fit_seconds": self.fit_seconds,
                "wall_seconds": self.wall_clock.seconds,
                "fixed_noise": self.fixed_noise,
                "trainer": asdict(self.cfg),
                "config": self.config_yaml,
            },
            self.checkpoint_path,
        )

    def _restore(
        self, model: GenerativeModel, path: Path, state: dict[str, Any] | None = None
    ) -> None:
        """The run's full state from checkpoint ``path`` (``state``: its contents if they
        were read already)."""
        state = state if state is not None else load_checkpoint(path)
        check_model_class(state, path, type(model).__name__)
        try:
            model.load_state_dict(state["model"])
            model.load_optimizer_state_dict(state["optimizers"])
        except (RuntimeError, KeyError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            raise GentrainError(
                f"{path} does not fit this model ({first}); resume with the config it was "
                "trained with (see .hydra/config.yaml in its run directory)"
            ) from None
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.fixed_noise = state["fixed_noise"].cpu()
        self.clock = Stopwatch(float(state.get("train_seconds", 0.0)))
        self.fit_seconds = float(state.get("fit_seconds", 0.0))
        self.wall_clock.credit(float(state.get("wall_seconds", 0.0)))
        set_rng_state(state["rng"])
        self.world.restore_rng(state["rng"])
        self._restore_history(path)
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch + 1)
