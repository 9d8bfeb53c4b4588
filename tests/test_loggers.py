"""The loggers of ``logger=``: TensorBoard, CSV, W&B (offline) and MLflow (a local store),
one at a time and together, each read back; resume into the same tracked run; the
config forms they accept and the errors before training."""

from __future__ import annotations

import csv
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gentrain.cli.overrides import check_argv
from gentrain.core.config import validate_config
from gentrain.core.errors import ConfigError
from gentrain.core.paths import config_dir
from gentrain.tracking.loggers import (
    CSVConfig,
    FanOutLogger,
    MLflowConfig,
    NullLogger,
    RunSummary,
    TensorBoardConfig,
    TensorBoardLogger,
    WandbConfig,
    build_logger,
)
from gentrain.tracking.loggers.mlflow_logger import tracking_uri

HPARAMS = {"model/name": "vae", "model/latent_dim": 32, "optimizer/lr": 0.001, "seed": 0}
METRICS = {"val/fid": 12.5, "val/loss": 80.0, "train/seconds": 3.0}
GRID = torch.rand(3, 10, 12)


def log_a_run(logger, steps: range) -> None:
    """What a run logs, in the trainer's order: the config, scalars, grids, final hparams."""
    logger.log_text("config", "```yaml\nmodel: vae\n```")
    for step in steps:
        logger.log_scalars({"train/loss": 100.0 - step, "train/kl": float(step)}, step)
        logger.log_image("samples", GRID, step)
    logger.log_hparams(RunSummary(HPARAMS, METRICS, "val/fid", ["latent_dim"], {"vae": 0.001}))


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    """W&B's own files (settings, caches) in the test's folder, and no console chatter."""
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_MODE", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)


# --- reading W&B's offline runs back --------------------------------------------------------
def wandb_records(path: Path) -> list[Any]:
    """The records of one ``run-<id>.wandb`` file: a 7-byte header, then 32 KiB blocks of
    chunks (checksum, length, type: 1 whole, 2 first, 3 middle, 4 last), LevelDB's log."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(folder: Path) -> dict[str, Any]:
    """One offline W&B run folder as {id, history: step -> {key: value}, config, summary}."""

    def put(values: dict[str, Any], item: Any) -> None:
        """An item's value at its key; a nested key (an image's ``samples``/``path``, ...)
        builds nested dicts, as W&B shows them."""
        *parents, leaf = [item.key] if item.key else list(item.nested_key)
        for parent in parents:
            values = values.setdefault(parent, {})
        values[leaf] = json.loads(item.value_json)

    (path,) = folder.glob("run-*.wandb")
    run: dict[str, Any] = {"history": {}, "config": {}, "summary": {}}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["id"] = record.run.run_id
            run["branch_point"] = record.run.branch_point.value or None
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                put(row, item)
            run["history"].setdefault(row["_step"], {}).update(row)
        elif kind in ("config", "summary"):
            for item in getattr(record, kind).update:
                put(run[kind], item)
    return run


def offline_runs(output_dir: Path) -> list[dict[str, Any]]:
    return [wandb_run(f) for f in sorted((output_dir / "wandb").glob("offline-run-*"))]


def mlflow_run(output_dir: Path) -> tuple[Any, Any]:
    """(client, run) of the MLflow run ``output_dir`` recorded."""
    from mlflow.tracking import MlflowClient

    record = json.loads((output_dir / "mlflow_run.json").read_text())
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    return client, client.get_run(record["run_id"])


def csv_rows(output_dir: Path) -> list[tuple[int, str, float]]:
    with (output_dir / "csv" / "scalars.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "tag", "value"]
    return [(int(s), t, float(v)) for s, t, v in rows[1:]]


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """One local MLflow store for the module's tests: creating its tables takes seconds."""
    path = tmp_path_factory.mktemp("mlflow") / "outputs" / "mlflow.db"
    return f"sqlite:///{path}"


# --- a whole run: every logger at once --------------------------------------------------------
def test_a_run_logs_to_every_logger_at_once(make_config, tmp_path, wandb_home, mlflow_store):
    from gentrain.cli.train import train

    out = tmp_path / "run"
    cfg = make_config(
        "logger=[tensorboard,csv,wandb,mlflow]",
        "logger.wandb.mode=offline",
        f"logger.mlflow.tracking_uri={mlflow_store}",
        "eval.enabled=false",
        output_dir=out,
    )
    assert list(validate_config(cfg).logger) == ["tensorboard", "csv", "wandb", "mlflow"]
    metrics = train(cfg)

    events = EventAccumulator(str(out)).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]

    rows = csv_rows(out)
    assert [s for s, tag, _ in rows if tag == "train/loss"] == [1, 2, 3, 4]
    assert {"val/loss", "train/kl"} <= {tag for _, tag, _ in rows}
    hparams = yaml.safe_load((out / "csv" / "hparams.yaml").read_text())
    assert hparams["metrics"]["val/loss"] == pytest.approx(metrics["val/loss"])
    assert hparams["hparams"]["model.name"] == "vae"
    assert list((out / "csv" / "images" / "samples").glob("step_*.png"))
    assert "model:" in (out / "csv" / "text" / "config.md").read_text()

    (run,) = offline_runs(out)
    assert run["id"] == json.loads((out / "wandb_run.json").read_text())["id"]
    assert [s for s, row in sorted(run["history"].items()) if "train/loss" in row] == [1, 2, 3, 4]
    assert run["config"]["model.name"] == "vae"
    assert run["summary"]["val/loss"] == pytest.approx(metrics["val/loss"])

    client, tracked = mlflow_run(out)
    losses = client.get_metric_history(tracked.info.run_id, "train/loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4]
    assert tracked.data.params["model.name"] == "vae"
    assert tracked.data.metrics["val/loss"] == pytest.approx(metrics["val/loss"])
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "run"


# --- each backend driven directly -------------------------------------------------------------
def test_csv_keeps_scalars_text_images_and_final_metrics(tmp_path):
    logger = build_logger({"csv": CSVConfig()}, tmp_path, None)
    log_a_run(logger, range(1, 4))
    logger.log_scalars({"val/new_tag": 1.5}, 3)  # a tag first seen late: no new column
    logger.close()

    rows = csv_rows(tmp_path)
    assert rows[:2] == [(1, "train/loss", 99.0), (1, "train/kl", 1.0)]
    assert rows[-1] == (3, "val/new_tag", 1.5)
    final = yaml.safe_load((tmp_path / "csv" / "hparams.yaml").read_text())
    assert list(final["metrics"]) == ["val/fid", "val/loss", "train/seconds"]  # optimised first
    assert final["hparams"]["model.latent_dim"] == 32 and final["step"] == 3
    assert final["learning_rates"] == {"vae": 0.001}
    grids = sorted(p.name for p in (tmp_path / "csv" / "images" / "samples").iterdir())
    assert grids == ["step_00000001.png", "step_00000002.png", "step_00000003.png"]


def test_csv_resume_drops_the_rows_after_the_checkpoint_and_appends(tmp_path):
    logger = build_logger({"csv": CSVConfig()}, tmp_path, None)
    for step in range(1, 7):  # a process that ran on to step 6 after its checkpoint at 4
        logger.log_scalars({"train/loss": float(step)}, step)
    logger.close()
    with (tmp_path / "csv" / "scalars.csv").open("a") as f:
        f.write("7,train/lo")  # killed mid-row

    logger = build_logger({"csv": CSVConfig()}, tmp_path, resume_step=4)
    assert [s for s, _, _ in csv_rows(tmp_path)] == [1, 2, 3, 4]  # rewritten before step 5
    logger.log_scalars({"train/loss": 50.0}, 5)
    logger.close()
    assert csv_rows(tmp_path)[-2:] == [(4, "train/loss", 4.0), (5, "train/loss", 50.0)]

    build_logger({"csv": CSVConfig()}, tmp_path, None).close()  # a fresh run starts anew
    assert csv_rows(tmp_path) == []


def test_tensorboard_resume_hides_the_steps_after_the_checkpoint(tmp_path):
    logger = build_logger({"tensorboard": TensorBoardConfig()}, tmp_path, None)
    assert isinstance(logger, TensorBoardLogger)
    for step in range(1, 7):
        logger.log_scalars({"train/loss": float(step)}, step)
    logger.close()
    logger = build_logger({"tensorboard": TensorBoardConfig()}, tmp_path, resume_step=4)
    for step in (5, 6):
        logger.log_scalars({"train/loss": 10.0 * step}, step)
    logger.close()
    events = EventAccumulator(str(tmp_path)).Reload()
    values = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert values == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0), (6, 60.0)]


def test_wandb_offline_run_is_read_back_and_resumed_under_its_id(tmp_path, wandb_home):
    settings = WandbConfig(project="gentrain-tests", mode="offline", tags=["t1"])
    logger = build_logger({"wandb": settings}, tmp_path, None)
    log_a_run(logger, range(1, 4))
    logger.close()
    run_id = json.loads((tmp_path / "wandb_run.json").read_text())["id"]

    logger = build_logger({"wandb": settings}, tmp_path, resume_step=2)
    logger.log_text("config", "resumed", 0)
    logger.log_scalars({"train/loss": 7.0}, 3)
    logger.close()

    first, resumed = offline_runs(tmp_path)
    assert first["id"] == resumed["id"] == run_id
    assert {s: row["train/loss"] for s, row in first["history"].items() if "train/loss" in row} == {
        1: 99.0,
        2: 98.0,
        3: 97.0,
    }
    assert first["history"][1]["samples"]["_type"] == "image-file"
    assert first["history"][0]["text/config"]["_type"] == "html-file"
    assert first["config"]["model.latent_dim"] == 32 and first["config"]["lr.vae"] == 0.001
    assert first["summary"]["val/fid"] == 12.5
    assert resumed["history"][3]["train/loss"] == 7.0


def test_mlflow_run_is_read_back_and_resumed_under_its_id(tmp_path, mlflow_store):
    settings = MLflowConfig(tracking_uri=mlflow_store, experiment_name="tests")
    logger = build_logger({"mlflow": settings}, tmp_path, None)
    log_a_run(logger, range(1, 4))
    logger.close()
    client, run = mlflow_run(tmp_path)
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.params["model.latent_dim"] == "32" and run.data.params["lr.vae"] == "0.001"
    assert run.data.metrics["val/fid"] == 12.5
    losses = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(losses, key=lambda m: m.step)] == [
        (1, 99.0),
        (2, 98.0),
        (3, 97.0),
    ]
    assert {a.path for a in client.list_artifacts(run_id, "text/config")} == {
        "text/config/step_00000000.md"
    }
    assert client.list_artifacts(run_id, "images")
    artifacts = Path(mlflow_store.removeprefix("sqlite:///")).parent / "mlartifacts"
    assert artifacts.is_dir()  # beside the store, not in the current directory

    logger = build_logger({"mlflow": settings}, tmp_path, resume_step=2)
    assert client.get_run(run_id).info.status == "RUNNING"
    logger.log_scalars({"train/loss": 7.0}, 3)
    logger.log_hparams(
        RunSummary({**HPARAMS, "seed": 1}, METRICS, "val/fid")
    )  # a changed param stays
    logger.close()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["seed"] == "0"
    assert (3, 7.0) in {(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")}


def test_mlflow_default_store_is_beside_the_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(MLflowConfig()) == f"sqlite:///{tmp_path}/outputs/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    assert tracking_uri(MLflowConfig()) == "http://tracker:5000"
    assert tracking_uri(MLflowConfig(tracking_uri="sqlite:///db/m.db")).endswith(
        f"{tmp_path}/db/m.db"
    )


def test_several_loggers_fan_out_and_only_the_main_process_logs(tmp_path, monkeypatch):
    both = {"tensorboard": TensorBoardConfig(), "csv": CSVConfig()}
    logger = build_logger(both, tmp_path / "main", None)
    assert isinstance(logger, FanOutLogger) and len(logger.loggers) == 2
    logger.log_scalars({"train/loss": 1.0}, 1)
    logger.close()
    assert csv_rows(tmp_path / "main") == [(1, "train/loss", 1.0)]
    assert list((tmp_path / "main").glob("events.out.tfevents.*"))

    assert isinstance(build_logger({}, tmp_path / "none", None), NullLogger)
    monkeypatch.setenv("RANK", "1")
    (tmp_path / "rank1").mkdir()
    assert isinstance(build_logger(both, tmp_path / "rank1", None), NullLogger)
    assert not any((tmp_path / "rank1").iterdir())


# --- config forms and errors before training --------------------------------------------------
def test_logger_options_compose_alone_together_or_not_at_all(compose_only):
    assert list(validate_config(compose_only()).logger) == ["tensorboard"]
    assert validate_config(compose_only("logger=none")).logger == {}
    several = validate_config(compose_only("logger=[csv,tensorboard]")).logger
    assert list(several) == ["csv", "tensorboard"]
    wandb = validate_config(compose_only("logger=wandb", "experiment=gan_mnist")).logger["wandb"]
    assert wandb.tags == ["gan", "mnist"] and wandb.mode == "online"  # the preset's tags
    mlflow = compose_only("logger=mlflow", "logger.mlflow.experiment_name=x")
    assert validate_config(mlflow).logger["mlflow"].experiment_name == "x"


@pytest.mark.parametrize(("old", "expected"), [("tensorboard", ["tensorboard"]), ("none", [])])
def test_the_logger_form_of_older_runs_still_validates(compose_only, old, expected):
    stored = OmegaConf.to_container(compose_only(), resolve=True)  # as a checkpoint keeps it
    stored["logger"] = {"name": old}
    assert list(validate_config(OmegaConf.create(stored)).logger) == expected


def test_an_old_checkpoint_still_loads(make_config, tmp_path, data_dir):
    from gentrain.cli.train import train
    from gentrain.training.restore import load_trained_run

    out = tmp_path / "run"
    train(make_config("logger=none", "eval.enabled=false", "trainer.max_steps=1", output_dir=out))
    path = out / "checkpoints" / "last.ckpt"
    state = torch.load(path, weights_only=True)
    stored = OmegaConf.create(state["config"])
    stored.logger = {"name": "tensorboard"}  # as runs before combined loggers stored it
    state["config"] = OmegaConf.to_yaml(stored)
    torch.save(state, path)
    assert list(load_trained_run(path, "cpu", str(data_dir)).config.logger) == ["tensorboard"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["logger=[tensorboard,wandbb]"], "unknown logger 'wandbb' — did you mean 'wandb'?"),
        (["logger=comet"], "available: csv, mlflow, none, tensorboard, wandb"),
        (["logger=csv", "+logger.comet={}"], "unknown logger 'comet'"),
        (["logger.wandb.project=x"], "add logger=wandb (or several: logger=[tensorboard,wandb])"),
        (["logger=wandb", "logger.wandb.mode=online2"], "mode must be one of online, offline"),
        (["logger=mlflow", "logger.mlflow.trackinguri=x"], "did you mean 'tracking_uri'?"),
    ],
)
def test_bad_logger_overrides_stop_before_hydra(tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        check_argv(argv, config_dir())
    assert expected in str(info.value)
    assert not (tmp_path / "outputs").exists()


def test_unknown_logger_in_a_config_lists_the_valid_ones(compose_only):
    cfg = OmegaConf.to_container(compose_only(), resolve=True)
    cfg["logger"] = {"tensorboard": {}, "neptune": {}}
    with pytest.raises(ConfigError, match="unknown logger 'neptune'.*csv, mlflow, tensorboard"):
        validate_config(OmegaConf.create(cfg))


@pytest.mark.parametrize(
    ("name", "module", "fix"),
    [
        ("wandb", "wandb", "pip install wandb (in a clone of gentrain: pip install -e '.[wandb]')"),
        ("mlflow", "mlflow", "pip install mlflow-skinny sqlalchemy alembic"),
    ],
)
def test_a_missing_package_is_named_with_its_pip_command(tmp_path, monkeypatch, name, module, fix):
    monkeypatch.setitem(sys.modules, module, None)  # `import <module>` fails as if absent
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"logger={name} needs the {module} package") as info:
        check_argv([f"logger=[tensorboard,{name}]"], config_dir())
    assert fix in str(info.value)
    settings = {"wandb": WandbConfig(mode="offline"), "mlflow": MLflowConfig()}[name]
    with pytest.raises(ConfigError, match=fix.split(" (")[0]):
        build_logger({"csv": CSVConfig(), name: settings}, tmp_path, None)
    assert not list(tmp_path.iterdir())  # nothing started, nothing written
