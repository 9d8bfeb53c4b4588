"""``logger=mlflow``: MLflow tracking (the ``mlflow`` extra), one MLflow run per gentrain
run, continued when the run resumes."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
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

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("gentrain")

# Beside the runs (outputs/runs/..., outputs/multirun/...), relative to where gentrain starts,
# as Hydra's run directories are: one store for every run, like tensorboard --logdir outputs.
DEFAULT_TRACKING_URI = "sqlite:///outputs/mlflow.db"
RECORD = "mlflow_run.json"  # in the run directory: the MLflow run a resumed run continues
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value
PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call


@dataclass
class MLflowConfig:
    """Where the run goes in MLflow."""

    # None: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db (a relative path starts
    # where gentrain runs); a server: http://host:5000
    tracking_uri: str | None = None
    experiment_name: str = "gentrain"


def tracking_uri(settings: MLflowConfig) -> str:
    """The store the run goes to, a local SQLite file's path made absolute (a resumed run
    started elsewhere finds the same store through the run record)."""
    uri = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    path = _sqlite_path(uri)
    return f"sqlite:///{path.resolve()}" if path is not None else uri


def _sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix) :] in ("", ":memory:"):
        return None
    return Path(uri[len(prefix) :])


@LOGGERS.register("mlflow")
class MLflowLogger(Backend):
    """Scalars as metrics at the trainer's step, images with MLflow's step-keyed image
    logging, text as ``text/<tag>/step_<step>.md`` artifacts, the config (by its
    command-line names) as parameters and the final metrics at the last step."""

    Config = MLflowConfig
    extra = "mlflow"
    pip = "mlflow-skinny sqlalchemy alembic"

    def __init__(self, client: Any, run_id: str, first_step: int = 0) -> None:
        self.client = client
        self.run_id = run_id
        self.last_step = first_step

    @classmethod
    def required_modules(cls, settings: MLflowConfig) -> list[str]:
        local = _sqlite_path(tracking_uri(settings)) is not None
        return ["mlflow", *(["sqlalchemy", "alembic"] if local else [])]

    @classmethod
    def start(cls, settings: MLflowConfig, output_dir: Path, resume_step: int | None) -> Logger:
        """A fresh run creates an MLflow run, kept in ``mlflow_run.json``; a resumed run
        continues it (MLflow cannot drop metric points: those an earlier process logged
        after the checkpoint stay beside the ones logged again)."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        record_path = output_dir / RECORD
        stored = read_run_record(record_path) if resume_step is not None else {}
        uri = stored.get("tracking_uri") or tracking_uri(settings)
        try:
            with _store_lock(uri):  # two jobs at once may create the store or the experiment
                client = MlflowClient(tracking_uri=uri)
                run_id = _continued_run(client, stored.get("run_id"))
                if run_id is None:
                    experiment_id = _experiment(client, settings.experiment_name, uri)
            if run_id is None:
                tags = {"gentrain.run_dir": str(output_dir.resolve())}
                run = client.create_run(experiment_id, run_name=output_dir.name, tags=tags)
                run_id = run.info.run_id
                write_run_record(record_path, {"tracking_uri": uri, "run_id": run_id})
        except MlflowException as exc:
            reason = " ".join(str(exc).split())
            raise ConfigError(
                f"MLflow could not start the run in {uri} ({reason}). Fix: set "
                "logger.mlflow.tracking_uri to a store you can write to"
            ) from None
        return cls(client, run_id, first_step=resume_step or 0)

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        self.last_step = max(self.last_step, step)
        now = int(time.time() * 1000)
        metrics = [Metric(tag, float(value), now, step) for tag, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        self.client.log_image(self.run_id, grid_to_uint8(grid), key=tag, step=step)

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        self.client.log_text(self.run_id, text, f"text/{tag}/step_{step:08d}.md")

    def log_hparams(self, summary: RunSummary) -> None:
        """Parameters are fixed once logged: a resumed run logs the ones not yet there
        and says which differ (a setting changed for the resumed process)."""
        hparams, metrics = summary.hparams, summary.metrics
        first_metric, learning_rates = summary.first_metric, summary.learning_rates
        from mlflow.entities import Param

        values = override_names(hparams)
        values.update({f"lr.{net}": rate for net, rate in (learning_rates or {}).items()})
        held = self.client.get_run(self.run_id).data.params
        new = {k: str(v)[:MAX_PARAM_LENGTH] for k, v in values.items()}
        changed = sorted(k for k, v in new.items() if k in held and held[k] != v)
        if changed:
            log.warning("MLflow keeps the first value of the parameters %s", ", ".join(changed))
        params = [Param(k, v) for k, v in new.items() if k not in held]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + PARAMS_PER_BATCH])
        final = {k: metrics[k] for k in final_order(metrics, first_metric)}
        self.log_scalars(final, self.last_step)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _continued_run(client: Any, run_id: str | None) -> str | None:
    """``run_id`` marked running again, or None when there is none to continue."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        client.get_run(run_id)
    except MlflowException:
        log.warning("MLflow run %s is not in the store: the resumed run starts a new one", run_id)
        return None
    client.update_run(run_id, status="RUNNING")
    return run_id


def _experiment(client: Any, name: str, uri: str) -> str:
    """The experiment's id, created on first use; a local store keeps its artifacts beside
    itself (MLflow's default is ./mlruns wherever the process starts)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    path = _sqlite_path(uri)
    artifacts = (path.parent / "mlartifacts").as_uri() if path is not None else None
    return client.create_experiment(name, artifact_location=artifacts)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """A local store's creation and its experiments, one process at a time."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
    if fcntl is None:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
