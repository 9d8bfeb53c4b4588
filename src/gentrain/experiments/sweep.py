"""A sweep's life: its record, jobs that restart where they stopped, and its summary.

A Hydra callback (configured in ``configs/hydra/default.yaml``). ``on_multirun_start``
records the command in ``sweep.json``; ``on_job_end`` writes each job's ``status.json``
into its own directory (it runs wherever the job ran, so it works with any launcher);
``on_multirun_end`` reads the job directories back, so the summary (one row per job in
``summary.csv`` / ``summary.json`` and a table) is built from what is on disk, and failed
jobs appear with their error.

Relaunching the command of a sweep that did not finish (a crash, Ctrl-C, a killed
allocation) continues that sweep in its directory (``unfinished_sweep``): a job that
finished is kept, one with a checkpoint resumes from it, an Optuna study with a storage
runs only the trials it still owes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.table import Table

from gentrain.core.checkpoint import atomic_write_bytes
from gentrain.core.config import OPTIMIZED_METRIC
from gentrain.tracking.console import console, print_line
from gentrain.tracking.hparams_table import write_group_hparams

STATUS_FILE = "status.json"
SWEEP_FILE = "sweep.json"  # the sweep's command, launches, and whether it finished
SWEEPS_ROOT = Path("outputs/multirun")  # where configs/hydra/default.yaml puts sweeps
COMMAND_ENV = "GENTRAIN_SWEEP_COMMAND"
# The sweep's fixed (non-swept) command-line keys, for job names; an environment variable
# so that launchers running jobs in other processes (joblib, SLURM) see it too.
FIXED_KEYS_ENV = "GENTRAIN_SWEEP_FIXED_KEYS"
# Values that are paths (or run-specific) would nest directories or say nothing: never in names.
UNNAMED_KEYS = ("paths.", "hydra.", "trainer.resume", "optimized_metric", "dataset.path")
# A conditional model's own measures (gentrain.evaluation): a column of the table and of
# summary.csv whenever a job has them, none for an unconditional sweep.
CONDITIONAL_METRICS = ("val/cond_accuracy", "val/intra_fid")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def remember_fixed_keys(argv: list[str]) -> None:
    """Note which command-line overrides are not swept (``model=vae`` in
    ``gentrain -m model=vae seed=0,1``), before Hydra expands the sweep."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            override = parser.parse_override(arg)
        except Exception:  # Hydra reports a malformed override itself, with context
            continue
        if not override.is_sweep_override():
            fixed.append(_key(arg))
    os.environ[FIXED_KEYS_ENV] = json.dumps(fixed)


def sweep_command(argv: list[str]) -> list[str]:
    """The arguments that identify a sweep: all but where it writes."""
    return [a for a in argv if not a.startswith("hydra.sweep.dir=")]


def remember_command(argv: list[str]) -> None:
    """For ``sweep.json``: the command this sweep was launched with."""
    os.environ[COMMAND_ENV] = json.dumps(sweep_command(argv))


def unfinished_sweep(argv: list[str], root: Path = SWEEPS_ROOT) -> Path | None:
    """The newest sweep under ``root`` launched with this command that has not finished,
    or None (also when the command names its own ``hydra.sweep.dir``)."""
    if any(a.startswith("hydra.sweep.dir=") for a in argv) or not root.is_dir():
        return None
    command = sweep_command(argv)
    found = []
    for record_file in root.glob(f"*/*/{SWEEP_FILE}"):
        try:
            record = json.loads(record_file.read_text())
        except (OSError, ValueError):
            continue
        if record.get("command") == command and not record.get("finished_at"):
            found.append((record_file.stat().st_mtime, record_file.parent))
    return max(found)[1] if found else None


def finished_job(job_dir: Path) -> dict[str, Any] | None:
    """The metrics of a sweep job that already completed in ``job_dir``, else None."""
    status_file, metrics_file = job_dir / STATUS_FILE, job_dir / "metrics.json"
    if not (status_file.is_file() and metrics_file.is_file()):
        return None
    if json.loads(status_file.read_text()).get("status") != "completed":
        return None
    return json.loads(metrics_file.read_text())


def owed_optuna_trials(sweeper: Any) -> int | None:
    """An Optuna search relaunched with the same storage: the trials its study still owes
    (``n_trials`` counts the study's, not each launch's), or None for a new study."""
    target = str(sweeper.get("_target_", "")) if sweeper is not None else ""
    if "optuna" not in target.lower() or not sweeper.get("storage"):
        return None
    import optuna

    try:
        study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage)
    except KeyError:  # no such study yet
        return None
    done = sum(trial.state.is_finished() for trial in study.trials)
    return max(0, int(sweeper.n_trials) - done)


def job_name(task_overrides: list[str]) -> str:
    """A sweep job's directory name (and TensorBoard run name): its overrides that vary
    between jobs, e.g. ``model=gan,seed=1``; all of them if none varies. Slashes in values
    become ``_`` so a name is one directory."""
    fixed = set(json.loads(os.environ.get(FIXED_KEYS_ENV, "[]")))
    named = [str(o) for o in task_overrides if not _key(str(o)).startswith(UNNAMED_KEYS)]
    varying = [o for o in named if _key(o) not in fixed]
    return ",".join(sorted(varying or named)).replace("/", "_") or "defaults"


OmegaConf.register_new_resolver("gentrain_job_name", job_name, replace=True)


def job_status(job: JobReturn) -> dict[str, Any]:
    """What one finished job reports about itself."""
    failed = job.status != JobStatus.COMPLETED
    error = None
    if failed:
        error = f"{type(job._return_value).__name__}: {job._return_value}"
    value = None if failed else job._return_value
    if isinstance(value, float) and math.isnan(value):
        value = None
    return {
        "status": "failed" if failed else "completed",
        "error": error,
        "optimized_metric_value": value,
        "finished_at": time.time(),
    }


def read_sweep_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory under ``sweep_dir`` (numbered subdirectories)."""
    rows = []

    def job_number(path: Path) -> tuple[int, str]:
        head = path.name.split("_", 1)[0]
        return (int(head) if head.isdigit() else 1 << 30, path.name)

    for job_dir in sorted(sweep_dir.iterdir(), key=job_number):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        if not job_dir.is_dir() or not overrides_file.is_file():
            continue
        overrides = [str(o) for o in OmegaConf.load(overrides_file)]
        row: dict[str, Any] = {"job": job_dir.name, "overrides": " ".join(overrides)}
        status_file = job_dir / STATUS_FILE
        status = json.loads(status_file.read_text()) if status_file.is_file() else {}
        row["status"] = status.get("status", "unknown")
        row["error"] = status.get("error") or ""
        metrics_file = job_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        row["wall_seconds"] = status.get("wall_seconds")
        row.update(metrics)
        row["output_dir"] = str(job_dir)
        row["_overrides"] = overrides
        rows.append(row)
    return rows


def shown_metrics(rows: list[dict[str, Any]], metrics: list[str]) -> list[str]:
    """The summary's metric columns: ``metrics``, then the conditional metrics any job has."""
    extra = [m for m in CONDITIONAL_METRICS if m not in metrics and any(m in r for r in rows)]
    return [*metrics, *extra]


def shared_overrides(rows: list[dict[str, Any]]) -> set[str]:
    """The overrides every job has (the sweep's fixed settings)."""
    return set.intersection(*(set(r["_overrides"]) for r in rows)) if rows else set()


def aggregate_over_seeds(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Mean and std of ``metric`` over jobs that differ only in their ``seed=`` override,
    each group named by the overrides that vary between jobs."""
    shared = shared_overrides(rows)
    groups: dict[str, list[float]] = {}
    for row in rows:
        key = " ".join(
            o for o in row["_overrides"] if not o.startswith("seed=") and o not in shared
        )
        value = row.get(metric)
        if row["status"] == "completed" and isinstance(value, int | float):
            groups.setdefault(key, []).append(float(value))
    return [
        {
            "overrides": key or "(none)",
            "seeds": len(values),
            f"{metric} mean": statistics.fmean(values),
            f"{metric} std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
        for key, values in groups.items()
    ]


class SweepSummary(Callback):
    """Writes per-job status files, then the sweep's summary at the end."""

    def __init__(self, metrics: list[str] | None = None) -> None:
        self.metrics = list(metrics or [])
        self._started: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Record the sweep in ``sweep.json`` (or count one more launch of it); a relaunched
        Optuna search runs only the trials its study still owes."""
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # before a storage file is made in it
        record_file = sweep_dir / SWEEP_FILE
        record = json.loads(record_file.read_text()) if record_file.is_file() else {}
        if not record:
            command = json.loads(os.environ.get(COMMAND_ENV, "null"))
            record = {"command": command, "started_at": time.time(), "launches": 0}
        record["launches"] += 1
        record.pop("finished_at", None)
        atomic_write_bytes(record_file, (json.dumps(record, indent=2) + "\n").encode())
        owed = owed_optuna_trials(config.hydra.get("sweeper"))
        if owed is not None:
            print_line(f"the Optuna study continues: {owed} of its trials still to run")
            with open_dict(config):
                config.hydra.sweeper.n_trials = owed

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:  # Hydra calls this for a single run too
            return
        output_dir = Path(config.hydra.runtime.output_dir)
        # The job's own report of a failure it caught, or an earlier launch's record.
        written = output_dir / STATUS_FILE
        earlier = json.loads(written.read_text()) if written.is_file() else {}
        if earlier.get("status") == "completed" and earlier.get("finished_at", 0) < (
            self._started or 0
        ):
            return  # finished in an earlier launch and kept: its record stays
        status = job_status(job_return)
        if earlier and written.stat().st_mtime >= (self._started or 0):  # from this launch
            status.update({k: v for k, v in earlier.items() if v})
        if self._started is not None:
            status["wall_seconds"] = status["finished_at"] - self._started
        atomic_write_bytes(output_dir / STATUS_FILE, (json.dumps(status, indent=2) + "\n").encode())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        record_file = sweep_dir / SWEEP_FILE
        if record_file.is_file():
            record = {**json.loads(record_file.read_text()), "finished_at": time.time()}
            atomic_write_bytes(record_file, (json.dumps(record, indent=2) + "\n").encode())
        rows = read_sweep_jobs(sweep_dir)
        optimized = str(config.get("optimized_metric", OPTIMIZED_METRIC))
        metrics = shown_metrics(rows, self.metrics or [optimized])
        by_seed = aggregate_over_seeds(rows, optimized)
        shared = shared_overrides(rows)
        write_summary_files(sweep_dir, rows, metrics, optimized, by_seed, shared)
        write_group_hparams(sweep_dir, [Path(r["output_dir"]) for r in rows], optimized)
        console.print(jobs_table(sweep_dir, rows, metrics, shared))
        if any(entry["seeds"] > 1 for entry in by_seed):
            seeds = Table(title=f"{optimized} over seeds")
            for column in by_seed[0]:
                seeds.add_column(column)
            for entry in by_seed:
                seeds.add_row(
                    *[f"{v:.4g}" if isinstance(v, float) else str(v) for v in entry.values()]
                )
            console.print(seeds)
        failed = [r["job"] for r in rows if r["status"] != "completed"]
        if failed:
            console.print(
                f"[bold red]{len(failed)} of {len(rows)} jobs failed:[/bold red] "
                f"job(s) {', '.join(job.split('_', 1)[0] for job in failed)} (errors in the "
                "table above and in summary.csv)"
            )
        print_line(f"summary: {sweep_dir / 'summary.csv'}")


def write_summary_files(
    sweep_dir: Path,
    rows: list[dict[str, Any]],
    metrics: list[str],
    optimized: str,
    by_seed: list[dict[str, Any]],
    shared: set[str],
) -> None:
    """``summary.csv`` (a row per job, every override) and ``summary.json``."""
    columns = ["job", "overrides", "status", *metrics, "wall_seconds", "error", "output_dir"]
    extra = sorted({k for r in rows for k in r if k not in columns and not k.startswith("_")})
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns + extra, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    payload = {
        "optimized_metric": optimized,
        "metrics": metrics,  # the table's columns
        "shared_overrides": sorted(shared),
        "jobs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        "over_seeds": by_seed,
    }
    atomic_write_bytes(sweep_dir / "summary.json", (json.dumps(payload, indent=2) + "\n").encode())


def jobs_table(
    sweep_dir: Path, rows: list[dict[str, Any]], metrics: list[str], shared: set[str]
) -> Table:
    """A row per job with only the overrides that differ between jobs (the CSV has all)."""
    table = Table(title=f"sweep {sweep_dir}")
    for column in ["job", "overrides (varying)", "status", *metrics, "wall s"]:
        table.add_column(
            column, justify="left" if column in ("overrides (varying)", "status") else "right"
        )
    for row in rows:
        varying = " ".join(o for o in row["_overrides"] if o not in shared) or "-"
        values = [row.get(m) for m in metrics]
        cells = [f"{v:.4g}" if isinstance(v, int | float) else "-" for v in values]
        status = row["status"] if not row["error"] else f"{row['status']}: {row['error'][:60]}"
        if row.get("train/runaway"):  # gentrain.training.runaway's flag, in metrics.json
            status += f" (runaway at step {row.get('train/runaway_step', 0):.0f})"
        wall = row.get("wall_seconds")
        table.add_row(
            row["job"].split("_", 1)[0],
            varying,
            status,
            *cells,
            f"{wall:.0f}" if isinstance(wall, int | float) else "-",
        )
    return table
