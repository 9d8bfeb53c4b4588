"""The installed command: `python -m gentrain` from any directory, and a non-editable wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from conftest import REPO
from omegaconf import OmegaConf


def _gentrain(data_dir, run_dir, *overrides):
    """Arguments of `python -m gentrain` for a smoke run writing into run_dir."""
    return [
        "-m",
        "gentrain",
        "debug=fast",
        "device=cpu",
        *overrides,
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
    ]


def _run(args, cwd, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def test_module_entry_trains_from_another_directory(data_dir, tmp_path, cache_dir, gentrain_main):
    run_dir = tmp_path / "run"
    env = {**os.environ, "GENTRAIN_CACHE_DIR": str(cache_dir)}
    result = _run(_gentrain(data_dir, run_dir, "dataset.download=false"), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    for produced in ["checkpoints/last.ckpt", "metrics.json", "train.log", ".hydra/config.yaml"]:
        assert (run_dir / produced).is_file(), produced
    assert list(run_dir.glob("events.out.tfevents.*"))  # TensorBoard names the run by its dir
    assert "\x1b[" not in result.stdout  # no terminal control codes when not on a TTY
    log = (run_dir / "train.log").read_text()  # from the first record, kept until the run began
    assert "feature classifier" in log and "training VAE on mnist" in log
    # A run refused inside this run's directory changes none of its files, .hydra/ included.
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    # (in this process: the command's part is above)
    code, output = gentrain_main(
        *_gentrain(data_dir, run_dir, "model=gan", "dataset.download=false")[2:], cwd=tmp_path
    )
    assert code == 2 and "already holds a run" in output, output
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_missing_data_is_a_clear_error_without_traceback(tmp_path):
    args = _gentrain(tmp_path / "nowhere", tmp_path / "r", "dataset.download=false")
    result = _run(args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "MNIST not found" in result.stderr and "Traceback" not in output
    assert not (tmp_path / "r").exists()  # a refused run leaves no directory behind


def test_non_editable_wheel_ships_the_configs(data_dir, tmp_path, cache_dir):
    built = _run(
        [
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("gentrain-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "gentrain/configs/train.yaml" in names and "gentrain/configs/model/vae.yaml" in names

    target = tmp_path / "site"
    installed = _run(
        ["-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": str(target), "GENTRAIN_CACHE_DIR": str(cache_dir)}
    run_dir = tmp_path / "run"
    result = _run(_gentrain(data_dir, run_dir, "logger=none"), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # The run composed the wheel's configs (Hydra records where its configs came from).
    hydra = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra
    sources = [s.path for s in hydra.runtime.config_sources if s.provider == "main"]
    assert sources == [str(target / "gentrain" / "configs")], sources
