"""`pytest` on a fresh clone: tests without data run, tests with data say what to provide
(skip) or, on CI, fail. Run in a subprocess against the real conftest; never downloads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

TESTS = """
def test_only_composes(compose_only):
    assert compose_only("model=gan").model.name == "gan"

def test_needs_mnist(data_dir):
    print("DATA", data_dir)
"""


def _pytest(tmp_path, **env_changes):
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    shutil.copy(REPO / "tests" / "conftest.py", suite / "conftest.py")
    (suite / "test_fresh.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(
        GENTRAIN_DATA_DIR=str(tmp_path / "empty"),
        GENTRAIN_CACHE_DIR=str(tmp_path / "cache"),
        GENTRAIN_OFFLINE="1",  # never download in a test
        **env_changes,
    )
    (tmp_path / "empty").mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-s", str(suite)],
        capture_output=True,
        text=True,
        cwd=suite,
        env=env,
        timeout=120,
    )
    return result.returncode, result.stdout + result.stderr


def test_without_data_the_data_tests_skip_saying_what_to_provide(tmp_path):
    code, output = _pytest(tmp_path)
    assert code == 0, output
    assert "1 passed, 1 skipped" in output
    assert f"real MNIST not found: looked in {tmp_path / 'empty' / 'MNIST' / 'raw'}" in output
    assert "GENTRAIN_DATA_DIR=<dir> with <dir>/MNIST/raw/" in output


@pytest.mark.parametrize("ci", ["true", "1"])
def test_on_ci_missing_data_fails_instead(tmp_path, ci):
    code, output = _pytest(tmp_path, CI=ci)
    assert code == 1, output
    assert "1 passed, 1 error" in output  # an error in the fixture fails the run
    assert "CI=true: data missing on CI is a failure, not a skip" in output


def test_data_fetched_once_into_the_cache_is_used(tmp_path):
    raw = tmp_path / "cache" / "datasets" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        (raw / f"{stem}-ubyte.gz").write_bytes(b"")
    code, output = _pytest(tmp_path)
    assert code == 0, output
    assert f"DATA {tmp_path / 'cache' / 'datasets'}" in output and "2 passed" in output
