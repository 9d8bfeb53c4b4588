"""Every config group option composes, validates, and matches a registered builder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from gentrain.core.config import validate_config
from gentrain.core.errors import ConfigError
from gentrain.core.paths import config_dir
from gentrain.core.registry import DATASETS, LOGGERS, MODELS, OPTIMIZERS

CONFIGS = config_dir()
# recipe/ is chosen by the model and the dataset, never by hand (test_recipes_follow_...).
GROUPS = sorted(
    p.name for p in CONFIGS.iterdir() if p.is_dir() and p.name not in ("hydra", "recipe")
)
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONFIGS / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(compose_only, tmp_path, group, option):
    extra = [f"dataset.path={tmp_path}"] if option == "image_folder" else []
    cfg = compose_only(f"{group}={option}", *extra)
    run = validate_config(cfg)
    if group in ("model", "dataset", "optimizer"):
        assert getattr(run, group).name == option
    if group == "logger":  # backend name -> its settings; none: no backend
        assert list(run.logger) == ([] if option == "none" else [option])


@pytest.mark.parametrize(
    ("group", "registry"),
    [("model", MODELS), ("dataset", DATASETS), ("optimizer", OPTIMIZERS)],
)
def test_config_files_match_registry(group, registry):
    files = sorted(f.stem for f in (CONFIGS / group).glob("*.yaml"))
    assert files == registry.names()
    for stem in files:
        assert yaml.safe_load((CONFIGS / group / f"{stem}.yaml").read_text())["name"] == stem


def test_logger_files_match_registry():
    """Each backend's file puts its settings under ``logger.<name>`` (so a list of them
    combines) and extends its registered schema; ``none`` is the empty mapping."""
    files = sorted(f.stem for f in (CONFIGS / "logger").glob("*.yaml"))
    assert files == sorted([*LOGGERS.names(), "none"])
    for name in LOGGERS.names():
        text = (CONFIGS / "logger" / f"{name}.yaml").read_text()
        assert text.startswith(f"# @package logger.{name}\n")
        assert f"/schema/logger/{name}@_here_" in yaml.safe_load(text)["defaults"]


def test_experiment_presets_compose(compose_only):
    for preset in sorted((CONFIGS / "experiment").glob("*.yaml")):
        validate_config(compose_only(f"experiment={preset.stem}"))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lr=-0.1", "optimizer.lr must be positive"),
        ("trainer.batch_size=abc", "trainer.batch_size"),
        ("+trainer.epochs=3", "unknown config key 'trainer.epochs'; valid keys of trainer:"),
        ("model.name=vaeg", "unknown model 'vaeg' — did you mean 'vae'?"),
        (
            "model.likelihood=poisson",
            "available: bernoulli, continuous_bernoulli, discretized_logistic, gaussian, laplace",
        ),
        ("device.name=tpu", "unknown device 'tpu'"),
        ("+lr=0.1", "unknown top-level config key(s) ['lr']"),
    ],
)
def test_bad_values_raise_one_clear_error(compose_only, override, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(compose_only(override))
    assert expected in str(info.value)


def test_cli_rejects_bad_config_before_training(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gentrain",
            "debug=fast",
            "optimizer.lr=-1",
            f"paths.data_dir={data_dir}",
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "optimizer.lr must be positive" in output
    assert "Traceback" not in output
    assert not (run_dir / "checkpoints").exists()
    assert not list(run_dir.glob("events.out.tfevents.*"))


def test_unhandled_image_size_is_a_config_error(make_config):
    from gentrain.cli.train import train

    with pytest.raises(ConfigError, match="image size 30x30 cannot be handled"):
        train(make_config("dataset.image_size=30"))


RECIPES = sorted(f.stem for f in (CONFIGS / "recipe").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_follow_the_model_and_dataset_and_yield_to_the_command_line(
    compose_only, tmp_path, recipe
):
    """``model=X dataset=Y`` as typed trains recipe/X_Y.yaml (a preset naming X and Y gets
    the same), other pairs the model's defaults, and a command-line value still wins."""
    model, dataset = next(
        (m, recipe[len(m) + 1 :]) for m in MODELS.names() if recipe.startswith(f"{m}_")
    )
    assert dataset in DATASETS.names()
    path = [f"dataset.path={tmp_path}"] if dataset == "image_folder" else []
    typed = compose_only(f"model={model}", f"dataset={dataset}", *path)
    validate_config(typed)
    # OmegaConf's YAML reads 2e-4 as the number Hydra composes (plain YAML: a string)
    listed = OmegaConf.to_container(OmegaConf.load(CONFIGS / "recipe" / f"{recipe}.yaml"))
    settings = [(s, k, v) for s in ("model", "optimizer") for k, v in listed.get(s, {}).items()]
    assert settings, f"recipe {recipe} sets nothing of the model or optimiser"
    for section, key, value in settings:
        assert typed[section][key] == value, f"{section}.{key}"
    plain = compose_only(f"model={model}")  # on MNIST: the model's own defaults
    assert any(plain[section][key] != value for section, key, value in settings)
    section, key, _ = settings[0]
    changed = compose_only(f"model={model}", f"dataset={dataset}", *path, f"{section}.{key}=null")
    assert changed[section][key] is None
    for preset in (CONFIGS / "experiment").glob(f"{recipe}*.yaml"):
        composed = compose_only(f"experiment={preset.stem}", *path)
        assert (composed.model, composed.optimizer) == (typed.model, typed.optimizer)


def test_train_yaml_lists_every_group():
    text = (CONFIGS / "train.yaml").read_text()
    for group in [
        "model",
        "dataset",
        "optimizer",
        "device",
        "trainer",
        "logger",
        "paths",
        "hydra",
        "optional experiment",
        "optional debug",
    ]:
        assert f"- {group}:" in text
    assert Path(CONFIGS / "hydra" / "default.yaml").is_file()


def test_train_yaml_comments_list_each_groups_options_as_they_are():
    """``- model: vae  # vae | gan | vaegan``: the options a comment lists are the group's
    (its YAML files and registered schemas), so the commented defaults list cannot drift."""
    import re

    from hydra.core.config_store import ConfigStore

    checked = 0
    for line in (CONFIGS / "train.yaml").read_text().splitlines():
        match = re.match(r"\s*- (\w+): \w+\s+# ([\w ]+(?:\| [\w ]+)+)(?:;.*)?$", line)
        if not match:
            continue
        group, listed = match.group(1), {o.strip() for o in match.group(2).split("|")}
        files = {p.stem for p in (CONFIGS / group).glob("*.yaml")}
        stored = {
            name.removesuffix(".yaml")
            for name in ConfigStore.instance().repo.get(group, {})
            if name.endswith(".yaml")
        }
        assert listed == files | stored, (group, listed, files | stored)
        checked += 1
    assert checked >= 5
