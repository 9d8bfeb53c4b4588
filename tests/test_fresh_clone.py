"""`pytest` on a fresh clone: tests without data run, tests with data say what to provide
(skip) or, on CI, fail. Run as a pytest session of its own against the real conftest;
never downloads."""

from __future__ import annotations

import pytest
from conftest import REPO

TESTS = """
def test_only_composes(compose_only):
    assert compose_only("model=gan").model.name == "gan"

def test_needs_mnist(data_dir):
    print("DATA", data_dir)
"""


def _pytest(pytester, monkeypatch, tmp_path, **env_changes):
    """The suite above with the real conftest, in a pytest session of its own (in this
    process: the conftest reads the environment when a fixture runs, not on import)."""
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_fresh=TESTS)
    monkeypatch.delenv("CI", raising=False)
    env = {
        "GENTRAIN_DATA_DIR": str(tmp_path / "empty"),
        "GENTRAIN_CACHE_DIR": str(tmp_path / "cache"),
        "GENTRAIN_OFFLINE": "1",  # never download in a test
        **env_changes,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "empty").mkdir(exist_ok=True)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs", "-s")
    return int(result.ret), "\n".join(result.outlines + result.errlines)


def test_without_data_the_data_tests_skip_saying_what_to_provide(pytester, monkeypatch, tmp_path):
    code, output = _pytest(pytester, monkeypatch, tmp_path)
    assert code == 0, output
    assert "1 passed, 1 skipped" in output
    assert f"real MNIST not found: looked in {tmp_path / 'empty' / 'MNIST' / 'raw'}" in output
    assert "GENTRAIN_DATA_DIR=<dir> with <dir>/MNIST/raw/" in output


@pytest.mark.parametrize("ci", ["true", "1"])
def test_on_ci_missing_data_fails_instead(pytester, monkeypatch, tmp_path, ci):
    code, output = _pytest(pytester, monkeypatch, tmp_path, CI=ci)
    assert code == 1, output
    assert "1 passed, 1 error" in output  # an error in the fixture fails the run
    assert "CI=true: data missing on CI is a failure, not a skip" in output


def test_data_fetched_once_into_the_cache_is_used(pytester, monkeypatch, tmp_path):
    raw = tmp_path / "cache" / "datasets" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        (raw / f"{stem}-ubyte.gz").write_bytes(b"")
    code, output = _pytest(pytester, monkeypatch, tmp_path)
    assert code == 0, output
    assert f"DATA {tmp_path / 'cache' / 'datasets'}" in output and "2 passed" in output
