"""One run stays one run: a run stopped by Ctrl-C, then killed with kill -9, and resumed
each time as the user would, ends as one directory whose TensorBoard curves read like an
uninterrupted run's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gentrain.cli.train import train

# The training steps of these runs: 16 steps (512 images in batches of 32), a checkpoint
# every 4, a log line at every step, evaluation at the end.
COMMON = ["model=vae", "trainer.max_steps=16", "trainer.checkpoint_every_n_steps=4"]

# Runs `gentrain` with the argv given, after wrapping the trainer's log-window close so that
# at GENTRAIN_TEST_STOP="<signal>@<step>" the process sends itself that signal: SIGINT is
# the user's Ctrl-C (a clean stop), SIGKILL a kill -9 between two logging steps, after the
# event file has what a real writer would have flushed by then.
CHILD = """
import os, signal, sys
from gentrain.training.trainer import Trainer
name, at = os.environ["GENTRAIN_TEST_STOP"].split("@")
original = Trainer._close_log_window
def close(self, *args):
    original(self, *args)
    if self.step == int(at):
        if name == "SIGKILL":
            self.logger.writer.flush()
        os.kill(os.getpid(), getattr(signal, name))
Trainer._close_log_window = close
from gentrain.cli.train import main
sys.argv = ["gentrain", *sys.argv[1:]]
main()
"""


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


def _gentrain(tmp_path, data_dir, cache_dir, stop, *overrides):
    env = {**os.environ, "GENTRAIN_TEST_STOP": stop, "GENTRAIN_CACHE_DIR": str(cache_dir)}
    args = ["debug=fast", "device=cpu", "dataset.download=false", f"paths.data_dir={data_dir}"]
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args, *COMMON, *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # runs go to outputs/runs/<date>/<name>-<time>, as typed
        env=env,
        timeout=300,
    )


def test_a_stopped_then_killed_run_resumes_into_one_run(make_config, data_dir, cache_dir, tmp_path):
    straight_dir = tmp_path / "straight"
    train(make_config(*COMMON, output_dir=straight_dir))

    stopped = _gentrain(tmp_path, data_dir, cache_dir, "SIGINT@6")
    assert stopped.returncode == 130, stopped.stderr
    printed = re.search(r"trainer\.resume=(\S+)", stopped.stdout + stopped.stderr)
    assert printed, stopped.stdout
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("*/*")
    # The printed command, which continues in place; killed with -9 after step 10's log.
    killed = _gentrain(tmp_path, data_dir, cache_dir, "SIGKILL@10", printed.group(0))
    assert killed.returncode == -9, killed.stderr
    # A kill -9 prints nothing: resume=auto, from a new run's directory beside it, finds
    # the newest run and continues it there (in this process: the CLI's part is above).
    fresh = run_dir.parent / "vae-mnist-later"
    train(make_config(*COMMON, "trainer.resume=auto", output_dir=fresh))
    assert not fresh.exists()

    assert list((tmp_path / "outputs" / "runs").glob("*/*")) == [run_dir]  # one run
    assert json.loads((run_dir / "metrics.json").read_text())["step"] == 16
    got, expected = _scalars(run_dir), _scalars(straight_dir)
    assert got.keys() == expected.keys()
    for tag, points in got.items():
        steps = [step for step, _ in points]
        assert steps == sorted(set(steps)), f"{tag}: {steps}"  # increasing, none twice
        # Every step of the uninterrupted run, and the validation Ctrl-C ran at step 6.
        reference = dict(expected[tag])
        assert set(steps) - set(reference) <= {6}, f"{tag}: {steps}"
        assert set(reference) <= set(steps), f"{tag}: {steps}"
        if not re.search(r"seconds|per_sec|time/", tag):  # clocks differ between processes
            values = dict(points)
            assert {s: values[s] for s in reference} == reference, tag
    # The killed process had logged steps 9 and 10 past its checkpoint at 8: redone once.
    assert [s for s, _ in got["train/loss"]] == list(range(1, 17))


def test_ctrl_c_before_training_began_says_so_and_leaves_nothing(data_dir, tmp_path):
    # Ctrl-C while the data loads or the feature classifier trains (minutes on a new
    # data set): no traceback, exit 130, and no run directory without a run in it.
    child = (
        "import sys, gentrain.cli.train as t\n"
        "def interrupted(*a, **k): raise KeyboardInterrupt\n"
        "t.build_dataset = interrupted\n"
        "sys.argv = ['gentrain', *sys.argv[1:]]\n"
        "t.main()\n"
    )
    args = ["debug=fast", "device=cpu", f"paths.data_dir={data_dir}", "dataset.download=false"]
    result = subprocess.run(
        [sys.executable, "-c", child, *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 130, result.stderr
    assert "stopped by Ctrl-C before training began" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not list((tmp_path / "outputs" / "runs").glob("*/*"))


def test_a_resumed_writers_event_file_is_read_after_the_killed_processs(tmp_path):
    # TensorBoard reads event files in name order: second, host, PID. A resumed writer that
    # started in the killed process's second could sort first (here the killed file's host
    # sorts last), and the killed process's steps would then overrule the resumed ones.
    import time

    from gentrain.tracking.loggers import TensorBoardLogger

    killed = tmp_path / f"events.out.tfevents.{int(time.time())}.zzz.99999.0"
    killed.write_bytes(b"")
    TensorBoardLogger(tmp_path, purge_step=9).close()
    files = sorted(p.name for p in tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 2 and files[0] == killed.name


def test_resume_auto_continues_the_newest_run_of_the_same_model(tmp_path):
    import os

    from gentrain.training.resume import find_resume_checkpoint

    day = tmp_path / "outputs" / "runs" / "2026-12-06"
    for age, (name, model) in enumerate([("vae-old", "vae"), ("gan-new", "gan")]):
        run = day / name
        (run / "checkpoints").mkdir(parents=True)
        (run / ".hydra").mkdir()
        (run / ".hydra" / "config.yaml").write_text(f"model:\n  name: {model}\n")
        ckpt = run / "checkpoints" / "last.ckpt"
        ckpt.write_bytes(b"")
        os.utime(ckpt, (1000 + age, 1000 + age))
    new = day / "vae-later"
    assert find_resume_checkpoint("auto", new, False, "vae").parent.parent.name == "vae-old"
    assert find_resume_checkpoint("auto", new, False, "gan").parent.parent.name == "gan-new"
    assert find_resume_checkpoint("auto", new, False, "vaegan") is None  # starts fresh
    assert find_resume_checkpoint("auto", new, True, "vae") is None  # a sweep job: its own only
