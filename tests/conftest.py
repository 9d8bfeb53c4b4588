"""Shared fixtures: the real datasets directory and a way to compose gentrain configs."""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

import gentrain.core.config  # noqa: F401  (registers the schemas the YAML presets extend)
from gentrain.core.paths import config_dir

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per pytest-xdist worker (and per process it starts): the workers share
    # the cores, and oversubscribed OpenMP threads spin against each other.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def shared_data_dir() -> Path:
    """GENTRAIN_DATA_DIR, else ../shared/datasets beside the checkout."""
    env = os.environ.get("GENTRAIN_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


def download_dir() -> Path:
    """Where tests fetch what is missing: the CLI's cache, ``$GENTRAIN_CACHE_DIR/datasets``
    (default ``~/.cache/gentrain/datasets``), never the data directory (it may be shared)."""
    cache = os.environ.get("GENTRAIN_CACHE_DIR") or "~/.cache/gentrain"
    return Path(cache).expanduser() / "datasets"


def has_raw(root: Path, folder: str) -> bool:
    from gentrain.data.mnist import SPLIT_FILES, _find

    stems = [stem for files in SPLIT_FILES.values() for stem in files]
    return all(_find(root / folder / "raw", stem) is not None for stem in stems)


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_dataset(folder: str) -> Path:
    """A data directory holding ``<folder>/raw`` (MNIST, FashionMNIST), for tests on real data.

    Looked for in GENTRAIN_DATA_DIR (or ../shared/datasets), then in the download cache;
    if missing, fetched once into that cache with torchvision (as the CLI does), unless
    GENTRAIN_OFFLINE=1. Still missing: the test is skipped, saying what to provide; on CI
    (CI=true), where the data must be present, it fails instead.
    """
    for root in (shared_data_dir(), download_dir()):
        if has_raw(root, folder):
            return root
    if os.environ.get("GENTRAIN_OFFLINE", "") not in ("1", "true") and not on_ci():
        from torchvision import datasets

        from gentrain.core.errors import DataNotFoundError
        from gentrain.data.mnist import _download

        with contextlib.suppress(DataNotFoundError):  # no network: say what to provide
            _download(getattr(datasets, folder), download_dir())
        if has_raw(download_dir(), folder):
            return download_dir()
    message = (
        f"real {folder} not found: looked in {shared_data_dir() / folder / 'raw'} and "
        f"{download_dir() / folder / 'raw'}. Provide GENTRAIN_DATA_DIR=<dir> with "
        f"<dir>/{folder}/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz, "
        "or run once with a network (tests fetch it into the cache)"
    )
    if on_ci():
        pytest.fail(f"{message}; CI=true: data missing on CI is a failure, not a skip")
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """A directory with real MNIST (see ``require_dataset``)."""
    return require_dataset("MNIST")


@pytest.fixture(scope="session")
def fashion_data_dir() -> Path:
    return require_dataset("FashionMNIST")


#: what each test sets to its own directories, on a copy of a config composed once
PER_TEST_PATHS = ("paths.data_dir", "paths.cache_dir", "paths.output_dir")


def compose_config(overrides: list[str]) -> DictConfig:
    """``train.yaml`` composed with ``overrides``, as the CLI composes it.

    Composing takes Hydra a tenth of a second and the suite composes hundreds of times,
    mostly the same overrides with another ``paths.*`` (each test's own directories): the
    rest is composed once per process, and the paths are set on a copy."""
    paths = [o for o in overrides if o.split("=", 1)[0] in PER_TEST_PATHS]
    cfg = copy.deepcopy(_composed(tuple(o for o in overrides if o not in paths)))
    for override in OverridesParser.create().parse_overrides(paths):
        OmegaConf.update(cfg, override.key_or_group, override.value())
    return cfg


@functools.lru_cache(maxsize=256)
def _composed(overrides: tuple[str, ...]) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feature classifiers for evaluation, shared by the whole session and by its
    pytest-xdist workers, which train each classifier once between them (the cache's
    lock), never ~/.cache."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "shared_cache"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp("cache")


def smoke_overrides(data_dir: Path, cache_dir: Path, output_dir: Path) -> list[str]:
    return [
        "debug=fast",
        "device=cpu",
        "dataset.download=false",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={cache_dir}",
        f"paths.output_dir={output_dir}",
    ]


@pytest.fixture
def make_config(data_dir: Path, tmp_path: Path, cache_dir: Path) -> Callable[..., DictConfig]:
    """Compose the smoke-run config (debug=fast, CPU, no download) plus ``overrides``,
    on real MNIST (skipped, or failed on CI, without it: see ``require_dataset``)."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        out = output_dir or tmp_path / "run"
        return compose_config([*smoke_overrides(data_dir, cache_dir, out), *overrides])

    return make


@pytest.fixture
def compose_only(tmp_path: Path, cache_dir: Path) -> Callable[..., DictConfig]:
    """``make_config`` for tests that compose and validate but never load data: they run
    on a fresh clone without any dataset."""

    def make(*overrides: str) -> DictConfig:
        base = smoke_overrides(shared_data_dir(), cache_dir, tmp_path / "run")
        return compose_config([*base, *overrides])

    return make


@pytest.fixture
def gentrain_main(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[int, str]]:
    """``gentrain <args>`` through its entry point in this process, from ``cwd``: its exit
    code and what it printed. A subprocess would pay seconds of imports; what the command
    leaves in the process (environment variables a sweep sets for its jobs, Hydra's
    logging handlers, argv) is undone, as the end of a process would undo it."""

    def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
        from gentrain.cli.train import main

        environ, root = dict(os.environ), logging.getLogger()
        handlers, level = list(root.handlers), root.level
        monkeypatch.setattr(sys, "argv", ["gentrain", *args])
        monkeypatch.chdir(cwd)
        os.environ.update(env or {})
        capfd.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            os.environ.clear()
            os.environ.update(environ)
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
        out, err = capfd.readouterr()
        return code, out + err

    return run
