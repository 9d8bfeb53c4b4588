"""The loggers of ``logger=``: TensorBoard and CSV, one at a time and together, each read
back; resume into the same tracked run; the config forms they accept and the errors
before training."""

from __future__ import annotations

import csv
from pathlib import Path

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
    NullLogger,
    TensorBoardConfig,
    TensorBoardLogger,
    build_logger,
)

HPARAMS = {"model/name": "vae", "model/latent_dim": 32, "optimizer/lr": 0.001, "seed": 0}
METRICS = {"val/fid": 12.5, "val/loss": 80.0, "train/seconds": 3.0}
GRID = torch.rand(3, 10, 12)


def log_a_run(logger, steps: range) -> None:
    """What a run logs, in the trainer's order: the config, scalars, grids, final hparams."""
    logger.log_text("config", "```yaml\nmodel: vae\n```")
    for step in steps:
        logger.log_scalars({"train/loss": 100.0 - step, "train/kl": float(step)}, step)
        logger.log_image("samples", GRID, step)
    logger.log_hparams(HPARAMS, METRICS, "val/fid", ["latent_dim"], {"vae": 0.001})


def csv_rows(output_dir: Path) -> list[tuple[int, str, float]]:
    with (output_dir / "csv" / "scalars.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "tag", "value"]
    return [(int(s), t, float(v)) for s, t, v in rows[1:]]


# --- a whole run: several loggers at once -----------------------------------------------------
def test_a_run_logs_to_several_loggers_at_once(make_config, tmp_path):
    from gentrain.cli.train import train

    out = tmp_path / "run"
    cfg = make_config("logger=[tensorboard,csv]", "eval.enabled=false", output_dir=out)
    assert list(validate_config(cfg).logger) == ["tensorboard", "csv"]
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
        (["logger=[tensorboard,csvv]"], "unknown logger 'csvv' — did you mean 'csv'?"),
        (["logger=comet"], "available: csv, none, tensorboard"),
        (["logger=csv", "+logger.comet={}"], "unknown logger 'comet'"),
        (["logger.csv.x=1"], "add logger=csv (or several: logger=[tensorboard,csv])"),
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
    with pytest.raises(ConfigError, match="unknown logger 'neptune'.*csv, tensorboard"):
        validate_config(OmegaConf.create(cfg))
