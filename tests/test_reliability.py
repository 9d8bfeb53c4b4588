"""Reliability: damaged data files, foreign checkpoints, one writer per run directory,
failed checkpoint writes and runaway training (issue 16)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from gentrain.core.errors import CorruptDataError
from gentrain.data import DatasetConfig, build_dataset
from gentrain.data.integrity import published_md5s


def copy_mnist(data_dir: Path, target: Path) -> Path:
    """A writable copy of MNIST's raw files under ``target`` (the shared one is read-only)."""
    raw = target / "MNIST" / "raw"
    shutil.copytree(data_dir / "MNIST" / "raw", raw)
    return raw


def test_a_truncated_mnist_file_is_named_with_its_fix(data_dir, tmp_path):
    raw = copy_mnist(data_dir, tmp_path)
    damaged = raw / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:100_000])  # an interrupted download
    with pytest.raises(CorruptDataError) as info:
        build_dataset(DatasetConfig(name="mnist", root=str(tmp_path), download=False))
    message = str(info.value)
    assert str(damaged) in message and "EOFError" in message
    assert published_md5s()["MNIST"]["train-images-idx3-ubyte.gz"] in message  # the MD5 check
    assert "delete it and download it again" in message and "\n" not in message


def test_a_garbage_labels_file_is_named(data_dir, tmp_path):
    raw = copy_mnist(data_dir, tmp_path)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(CorruptDataError, match="t10k-labels-idx1-ubyte.gz is damaged"):
        build_dataset(DatasetConfig(name="mnist", root=str(tmp_path), download=False))


def test_a_file_that_decodes_but_is_not_the_published_one_is_used_with_a_warning(
    data_dir, tmp_path, caplog
):
    raw = copy_mnist(data_dir, tmp_path)
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    content = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(content, compresslevel=1, mtime=0))  # same data, new bytes
    data = build_dataset(DatasetConfig(name="mnist", root=str(tmp_path), download=False))
    assert len(data.val_labels) == 10_000
    assert "differs from torchvision's published" in caplog.text


class RunsACommand:
    """A pickle that runs a shell command when unpickled without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(path: Path) -> Path:
    import torch

    torch.save({"format_version": 1, "model": RunsACommand(path.parent / "pwned")}, path)
    return path


def test_a_malicious_checkpoint_is_refused_without_advice_to_unpickle_it(tmp_path):
    from gentrain.core.checkpoint import load_checkpoint
    from gentrain.core.errors import GentrainError

    path = malicious_checkpoint(tmp_path / "last.ckpt")
    with pytest.raises(GentrainError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "not a gentrain checkpoint" in message
    assert "weights_only" not in message and "\n" not in message
    assert not (tmp_path / "pwned").exists()  # nothing ran


def test_a_foreign_file_is_not_a_gentrain_checkpoint(tmp_path):
    import torch

    from gentrain.core.checkpoint import load_checkpoint
    from gentrain.core.errors import GentrainError

    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "lightning.ckpt")
    with pytest.raises(GentrainError, match="lightning.ckpt is not a gentrain checkpoint"):
        load_checkpoint(tmp_path / "lightning.ckpt")
    (tmp_path / "cut.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(GentrainError, match="cut.ckpt: it is damaged or not a PyTorch file"):
        load_checkpoint(tmp_path / "cut.ckpt")


# --- one writer per run directory -------------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from gentrain.training.run_lock import RunLock
lock = RunLock(Path(sys.argv[1]))
lock.acquire()
(Path(sys.argv[1]) / "held").write_text("")
time.sleep(120)
"""


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path, caplog):
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from gentrain.training.run_lock import LOCK_NAME, RunDirectoryInUse, RunLock

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)])
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "held").exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(RunDirectoryInUse) as info:
            RunLock(run_dir).acquire()
        message = str(info.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert "train into another directory" in message
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # dies without releasing: its lock file stays
        holder.wait()
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == holder.pid
    with RunLock(run_dir):
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"taking over the stale lock of pid {holder.pid}" in caplog.text
    assert not (run_dir / LOCK_NAME).exists()  # released: removed


def test_train_holds_the_lock_so_a_second_train_into_the_same_dir_is_refused(make_config):
    from gentrain.cli.train import train
    from gentrain.training.run_lock import RunDirectoryInUse, RunLock

    cfg = make_config("logger=none", "eval.enabled=false")
    run_dir = cfg.paths.output_dir
    with RunLock(run_dir):
        with pytest.raises(RunDirectoryInUse, match="is in use by another"):
            train(cfg)
        assert sorted(p.name for p in Path(run_dir).iterdir()) == [".gentrain.lock"]


# --- failed writes ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "where"),
    [("ENOSPC", "fsync"), ("EROFS", "mkstemp"), ("EACCES", "replace")],
)
def test_a_failed_checkpoint_write_keeps_the_previous_one_and_stops_cleanly(
    make_config, monkeypatch, code, where
):
    import errno
    import os
    import tempfile

    import torch

    import gentrain.core.checkpoint as checkpoint
    from gentrain.cli.train import train
    from gentrain.core.errors import StorageError

    cfg = make_config("logger=none", "eval.enabled=false")  # checkpoints at steps 2 and 4
    run_dir = Path(cfg.paths.output_dir)
    saves = []
    real = {"fsync": os.fsync, "mkstemp": tempfile.mkstemp, "replace": os.replace}

    def failing(*args, **kwargs):
        saves.append(args)
        if len(saves) > 1 and (run_dir / "checkpoints" / "last.ckpt").exists():
            number = getattr(errno, code)
            raise OSError(number, os.strerror(number))
        return real[where](*args, **kwargs)

    module = tempfile if where == "mkstemp" else os
    monkeypatch.setattr(
        checkpoint, "os" if module is os else "tempfile", _Patched(module, where, failing)
    )
    with pytest.raises(StorageError) as info:
        train(cfg)
    message = str(info.value)
    assert f"could not write {run_dir / 'checkpoints' / 'last.ckpt'}" in message
    assert f"({code})" in message and "the previous last.ckpt is intact" in message
    assert "Fix:" in message and "\n" not in message
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["step"] == 2  # the last good one
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / "metrics.json").exists()


class _Patched:
    """``module`` with one function replaced, as the checkpoint module sees it."""

    def __init__(self, module, name, function):
        self._module, self._name, self._function = module, name, function

    def __getattr__(self, attr):
        return self._function if attr == self._name else getattr(self._module, attr)


# --- runaway training -------------------------------------------------------------------------
def _detector(action):
    """A runaway watch over the built-in models' terms (a GAN's and a VAE's at once)."""
    from gentrain.core.terms import LoggedTerms
    from gentrain.training.runaway import RunawayDetector

    terms = LoggedTerms(
        watched=("loss", "loss_d", "loss_g"),
        discriminator_outputs=("d_real", "d_fake"),
        generator_losses=("loss_g",),
    )
    return RunawayDetector(action, terms=terms)


def _healthy_windows(count: int = 200):
    import random

    rng = random.Random(0)
    for i in range(count):  # a GAN near equilibrium and a VAE whose KL grows from ~0
        yield {
            "loss_d": 1.3 + rng.uniform(-0.3, 0.3),
            "loss_g": 0.8 + rng.uniform(-0.3, 0.6),
            "d_real": 0.55 + rng.uniform(-0.1, 0.1),
            "d_fake": 0.45 + rng.uniform(-0.1, 0.1),
            "loss": 500.0 / (1 + i) + 100,
            "kl": 0.01 + 0.2 * i,
            "grad_norm_generator": rng.uniform(0.1, 50),
        }


def test_the_runaway_detector_is_quiet_on_healthy_training():

    detector = _detector("stop")
    for step, means in enumerate(_healthy_windows()):
        detector.check(step, means, Path("/nonexistent"))  # stop would raise
    assert detector.metrics() == {}


@pytest.mark.parametrize(
    ("windows", "kind", "at"),
    [
        ([{"loss_d": 1.4}] * 4 + [{"loss_d": 8e13}], "explosion", 4),  # above the limit
        ([{"loss": 100.0}] * 5 + [{"loss": 2e5}], "explosion", 5),  # 2000x its median
        ([{"d_real": 1.0, "d_fake": 0.0}] * 3, "saturation", 2),  # D wins every time
        ([{"loss_g": 0.0, "loss_d": 1.0}] * 3, "stuck", 2),
    ],
)
def test_the_runaway_detector_names_explosion_saturation_and_a_stuck_generator(windows, kind, at):

    detector = _detector("warn")
    for step, means in enumerate(windows):
        assert (step < at) == (kind not in detector.findings(means))
    assert detector.reasons == {}  # findings() alone does not act


def test_runaway_warn_trains_on_and_flags_metrics_log_and_tensorboard(make_config, caplog):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gentrain.cli.train import train

    # One update per batch: the trajectory whose losses pass the absolute limit in 4 steps.
    cfg = make_config(
        "model=gan", "model.updates_per_batch=1", "optimizer.lr=1e6", "eval.enabled=false"
    )
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert metrics["step"] == 4 and metrics["train/runaway"] == 1.0  # trained to the end
    assert json.loads((run_dir / "metrics.json").read_text())["train/runaway"] == 1.0
    assert "runaway training at step" in caplog.text and "exploded" in caplog.text
    events = EventAccumulator(str(run_dir)).Reload()
    assert "runaway/text_summary" in events.Tags()["tensors"]


def test_runaway_stop_ends_the_run_and_keeps_the_last_checkpoint(make_config):
    import torch

    from gentrain.cli.train import train
    from gentrain.training.runaway import RunawayTrainingError

    cfg = make_config(
        "model=gan",
        "model.updates_per_batch=1",  # as above
        "optimizer.lr=1e6",
        "eval.enabled=false",
        "logger=none",
        "trainer.on_runaway=stop",
        "trainer.checkpoint_every_n_steps=1",
    )
    with pytest.raises(RunawayTrainingError) as info:
        train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    message = str(info.value)
    step = int(message.split("at step ")[1].split(":")[0])
    assert "exploded" in message and "Fix: lower optimizer.lr" in message
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["step"] == step - 1  # written before the runaway was noticed, not after
    assert not (run_dir / "metrics.json").exists()


def test_on_runaway_takes_only_warn_stop_or_off(compose_only):
    from gentrain.core.config import validate_config
    from gentrain.core.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.on_runaway must be warn, stop or off"):
        validate_config(compose_only("trainer.on_runaway=panic"))


def test_a_discriminator_that_stops_learning_is_noticed_after_ten_steps():

    detector = _detector("warn")
    learning = {"loss_d": 1.2, "d_real": 0.61, "d_fake": 0.4, "grad_norm_discriminator": 3.0}
    assert detector.findings(learning, step=5) == {}
    dead = {"loss_d": 1.39, "d_real": 0.5, "d_fake": 0.5, "grad_norm_discriminator": 0.0}
    seen = {step: detector.findings(dead, step) for step in (10, 15, 20, 25)}
    assert "dead" not in seen[10] and "dead" not in seen[15]  # two windows, not yet ten steps
    assert "grad_norm_discriminator is 0 since step 10" in seen[20]["dead"]
    assert "outputs (d_real=0.5, d_fake=0.5) have not moved since step 15" in seen[25]["dead"]
    assert detector.findings(learning, step=30) == {}  # learning again: the streaks end


def test_a_discriminator_that_scores_real_and_fake_alike_is_noticed_after_fifty_steps():
    """The 64-px GAN at lr 8e-4 (docs/benchmarks.md): D at 0.5 on both, G's gradient small
    but not 0, the losses at ln 2: nothing exploded, nothing is exactly frozen."""

    detector = _detector("warn")
    windows = [(0.496, 0.496), (0.501, 0.5), (0.5, 0.499), (0.498, 0.5)]
    seen = {}
    for step, (real, fake) in zip((50, 100, 150, 200), windows):
        means = {"loss_g": 0.69, "d_real": real, "d_fake": fake, "grad_norm_generator": 0.03}
        seen[step] = detector.findings(means, step)
    assert "dead" not in seen[100] and "no longer tells real" in seen[150]["dead"]
    healthy = _detector("warn")
    for step, margin in zip((50, 100, 150, 200), (0.1, 0.05, 0.08, 0.03)):
        means = {"loss_g": 0.9, "d_real": 0.5 + margin, "d_fake": 0.45, "grad_norm_generator": 3.0}
        assert healthy.findings(means, step) == {}


@pytest.mark.parametrize("action", ["warn", "stop"])
def test_a_dead_generator_at_a_huge_learning_rate_is_not_reported_as_success(
    make_config, tmp_path, action
):
    """``optimizer.lr=1e6``: G's gradient is 0 from step 2 and D's outputs sit at 0.5, while
    the losses (1e5 and falling) stay under every explosion rule."""
    from gentrain.cli.train import train
    from gentrain.training.runaway import RunawayTrainingError

    cfg = make_config(
        "model=gan",
        "model.width=8",  # the run at a quarter of the width: dead the same way
        "optimizer.lr=1e6",
        "trainer.max_steps=40",
        "eval.enabled=false",
        f"trainer.on_runaway={action}",
        output_dir=tmp_path / "run",
    )
    if action == "warn":
        metrics = train(cfg)
        assert metrics["train/runaway"] == 1.0 and metrics["train/runaway_step"] <= 15
        return
    with pytest.raises(RunawayTrainingError, match="stopped learning") as info:
        train(cfg)
    assert "Fix: lower optimizer.lr" in str(info.value)


@pytest.fixture
def full_disk(tmp_path):
    """A real 1 MiB file system (tmpfs, where the test may mount one), else None."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _torch_writer_failing_mid_file(f):
    """What torch.save does on a full disk: some bytes out, then its C++ writer's error."""
    f.write(b"PK\x03\x04" + b"\0" * 4096)
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")


def test_torch_failing_mid_file_on_a_full_disk_is_one_line_and_keeps_the_old_file(
    full_disk, tmp_path
):
    import torch

    from gentrain.core.checkpoint import atomic_write
    from gentrain.core.errors import StorageError

    folders = [tmp_path / "stand-in"] + ([full_disk] if full_disk is not None else [])
    for folder in folders:
        target = folder / "checkpoints" / "last.ckpt"
        atomic_write(target, lambda f: f.write(b"the previous checkpoint"))
        if folder == full_disk:  # the real thing: torch's own writer on a full tmpfs
            write = lambda f: torch.save({"w": torch.zeros(2_000_000)}, f)  # noqa: E731
        else:
            write = _torch_writer_failing_mid_file
        with pytest.raises(StorageError) as info:
            atomic_write(target, write)
        message = str(info.value)
        assert "\n" not in message and f"could not write {target}" in message, message
        assert "the previous last.ckpt is intact" in message and "Fix:" in message
        if folder == full_disk:
            assert "(ENOSPC)" in message and "free disk space" in message
        assert target.read_bytes() == b"the previous checkpoint"
        assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temporary file


def test_samples_that_do_not_fit_on_the_disk_are_one_line_and_leave_no_file(
    make_config, full_disk, tmp_path, capsys, monkeypatch
):
    import errno
    import os

    import numpy as np

    from gentrain.cli import sample
    from gentrain.cli.train import train

    run = tmp_path / "run"
    train(make_config("eval.enabled=false", "logger=none", output_dir=run))
    folder = full_disk
    if folder is None:  # no mount here: numpy's writer failing mid-file, as on a full disk
        folder = tmp_path / "stand-in"

        def savez(file, **arrays):
            file.write(b"PK\x03\x04" + b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(np, "savez", savez)
    target = folder / "samples.npz"
    with pytest.raises(SystemExit) as info:  # 512 images of 28x28x3: 1.2 MB on a 1 MiB disk
        sample.main([str(run), "--device", "cpu", "-n", "512", "--output", str(target)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert f"could not write {target}" in err and "(ENOSPC)" in err
    assert "then run gentrain-sample again" in err
    assert not target.exists() and not [p for p in folder.iterdir() if p.suffix == ".tmp"]
