"""Shared fixtures: the real datasets directory and a way to compose gentrain configs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gentrain.train import config_dir

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """GENTRAIN_DATA_DIR, else ../shared/datasets beside the checkout (never downloads)."""
    env = os.environ.get("GENTRAIN_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "MNIST" / "raw").is_dir():
        pytest.fail(f"real MNIST not found under {path}; set GENTRAIN_DATA_DIR to the datasets dir")
    return path


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return compose(config_name="train", overrides=overrides)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feature classifiers for evaluation, shared by the whole session (never ~/.cache)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_config(data_dir: Path, tmp_path: Path, cache_dir: Path) -> Callable[..., DictConfig]:
    """Compose the smoke-run config (debug=fast, CPU, no download) plus ``overrides``."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_config(
            [
                "debug=fast",
                "device=cpu",
                "dataset.download=false",
                f"paths.data_dir={data_dir}",
                f"paths.cache_dir={cache_dir}",
                f"paths.output_dir={output_dir or tmp_path / 'run'}",
                *overrides,
            ]
        )

    return make
