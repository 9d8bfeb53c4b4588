"""Every bad input a clean refusal (issue 16): a table of configs, overrides, data dirs,
checkpoints, image folders, sweeps and gentrain-compare/eval/sample arguments.

Each row asserts exit code 2, exactly one ``error:`` line, on stderr, naming the problem
and its fix, no traceback, and that no file of an existing run directory (the target of
most rows) changed. The rows run in-process, the way each command runs them (``train.main`` stops in
its pre-flight check, before Hydra; ``train.hydra_task`` is Hydra's task function); a handful at
the end run the installed commands as subprocesses.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import compose_config, smoke_overrides
from PIL import Image


@dataclass
class Row:
    id: str
    kind: str  # cli (gentrain's main), run (train.hydra_task on a composed config), eval, sample,
    # compare, or a subprocess: sh-gentrain, sh-compare, sh-eval
    args: list[str]
    expect: list[str]  # substrings of the output: the problem, then the fix


def row(id: str, kind: str, args: list[str], *expect: str) -> Row:
    return Row(id, kind, args, list(expect))


R = "{run}"  # the existing run directory (a trained VAE): every row must leave it as it was
ROWS = [
    # --- unknown config group options and keys: gentrain, before Hydra -----------------------
    row("model", "cli", ["model=vaeg"], "unknown model 'vaeg'", "did you mean 'vae'?"),
    row("dataset", "cli", ["dataset=mnistt"], "unknown dataset 'mnistt'", "did you mean 'mnist'"),
    row("optimizer", "cli", ["optimizer=adamm"], "unknown optimizer 'adamm'", "'adam'?"),
    row("device", "cli", ["device=gpu"], "unknown device 'gpu'", "available: auto, cpu"),
    row("logger", "cli", ["logger=wandbb"], "unknown logger 'wandbb'", "did you mean 'wandb'?"),
    row("logger-list", "cli", ["logger=[csv,tb]"], "unknown logger 'tb'", "none, tensorboard"),
    row("logger-key", "cli", ["logger.wandb.mode=offline"], "not use", "add logger=wandb"),
    row("experiment", "cli", ["experiment=gan_mnst"], "unknown experiment", "'gan_mnist'?"),
    row("debug", "cli", ["debug=fastt"], "unknown debug 'fastt'", "did you mean 'fast'?"),
    row("trainer-group", "cli", ["trainer=fast"], "unknown trainer 'fast'", "available: default"),
    row("group-name", "cli", ["modle=vae"], "unknown config group or key 'modle'", "'model'?"),
    row("sweep-model", "cli", ["-m", "model=vae,gann"], "unknown model 'gann'", "'gan'?"),
    row("sweep-opt", "cli", ["-m", "seed=0,1", "optimizer=adam,adamm"], "'adamm'", "'adam'?"),
    row("sweep-list", "cli", ["--multirun", "dataset=[mnist,cifar]"], "'cifar'", "cifar10"),
    row("trainer-key", "cli", ["trainer.batchsize=8"], "unknown trainer key", "'batch_size'?"),
    row("model-key", "cli", ["model.latentdim=8"], "unknown model key", "'latent_dim'?"),
    row("unknown-key", "cli", ["foo.bar=1"], "unknown config key 'foo.bar'", "--cfg job"),
    row("malformed", "cli", ["seed=["], "cannot read the override 'seed=['", "key=value"),
    # --- values out of range or of the wrong type: gentrain's validation, before Hydra ------
    row("batch-zero", "cli", ["trainer.batch_size=0"], "trainer.batch_size must be >= 1"),
    row("batch-type", "cli", ["trainer.batch_size=abc"], "'trainer.batch_size'", "'abc'"),
    row("lr", "cli", ["optimizer.lr=-1"], "optimizer.lr must be positive"),
    row("epochs", "cli", ["trainer.max_epochs=0"], "trainer.max_epochs must be >= 1"),
    row("seed", "cli", ["seed=abc"], "seed must be an integer"),
    row("runaway", "cli", ["trainer.on_runaway=panic"], "on_runaway must be warn, stop or off"),
    row("channels", "cli", ["dataset.channels=2"], "dataset.channels must be 1, 3 or null"),
    row("latent", "cli", ["model.latent_dim=0"], "model.latent_dim must be >= 1, got 0"),
    row("eval-n", "cli", ["eval.num_samples=0"], "eval.num_samples must be >= 1"),
    row("run-dir-file", "cli", ["hydra.run.dir={a_file}"], "a_file is a file", "hydra.run.dir"),
    row(
        "run-dir-under-file",
        "cli",
        ["hydra.run.dir={a_file}/run"],
        "cannot create the run directory",
        "Fix: pick another hydra.run.dir",
    ),
    row("beta-nan", "cli", ["model.beta=nan"], "model.beta must be a finite number, got nan"),
    row("lr-inf", "cli", ["model=gan", "optimizer.lr=inf"], "optimizer.lr must be a finite"),
    # --- what only a run can check: data, checkpoints, the run dir (train.hydra_task) ----------
    row(
        "batch-split",
        "run",
        ["trainer.batch_size=100000000", "trainer.resume=auto"],
        "trainer.batch_size=100000000 is larger than the training split (512 images)",
        "at most 512",
    ),
    row(
        "width-huge",
        "run",
        ["model.width=100000", "trainer.resume=auto"],
        "M parameters: its weights, gradients and optimiser state alone need",
        "Fix: lower model.width",
    ),
    row(
        "data-dir-file",
        "run",
        ["paths.data_dir={a_file}", "trainer.resume=auto"],
        "a_file is a file, not a directory",
        "Fix: point GENTRAIN_DATA_DIR",
    ),
    row(
        "truncated-gz",
        "run",
        ["paths.data_dir={truncated}", "trainer.resume=auto"],
        "train-images-idx3-ubyte.gz is damaged",
        "EOFError",
        "delete it and download it again",
    ),
    row(
        "garbage-gz",
        "run",
        ["paths.data_dir={garbage}", "trainer.resume=auto"],
        "t10k-labels-idx1-ubyte.gz is damaged",
        "replace it with an intact copy",
    ),
    row(
        "no-data",
        "run",
        ["paths.data_dir={tmp}/nowhere", "trainer.resume=auto"],
        "MNIST not found: looked in",
        "Fix: point the data directory",
    ),
    row("new-over-old", "run", [], "already holds a run", "trainer.resume=auto"),
    row(
        "resume-missing",
        "run",
        ["trainer.resume={tmp}/nope.ckpt"],
        "no checkpoint at",
        "trainer.resume=auto",
    ),
    row(
        "resume-malicious",
        "run",
        ["trainer.resume={malicious}"],
        "evil.ckpt is not a gentrain checkpoint",
        "Use the checkpoints/last.ckpt",
    ),
    row(
        "resume-foreign",
        "run",
        ["trainer.resume={foreign}"],
        "tensor.ckpt is not a gentrain checkpoint",
        "pass a gentrain run directory",
    ),
    row(
        "resume-truncated",
        "run",
        ["trainer.resume={truncated_ckpt}"],
        "cut.ckpt: it is damaged",
        "Use an intact",
    ),
    row(
        "resume-other-model",
        "run",
        ["model=gan", "trainer.resume=auto"],
        "holds a VAE but this run builds a GAN",
        "resume with the same model config",
    ),
    row(
        "init-and-resume",
        "run",
        ["init_from={tmp}/nope", "trainer.resume=auto"],
        "init_from and trainer.resume are both set",
        "pick one",
    ),
    row(
        "init-over-old",
        "run",
        ["model=vaegan", "init_from={run}"],
        "already holds a run",
        "train into another directory",
    ),
    row(
        "init-missing",
        "run",
        ["model=vaegan", "init_from={tmp}/nope", "paths.output_dir={tmp}/new_a"],
        "no checkpoint at",
        "pass a run directory",
    ),
    row(
        "init-malicious",
        "run",
        ["model=vaegan", "init_from={malicious}", "paths.output_dir={tmp}/new_b"],
        "evil.ckpt is not a gentrain checkpoint",
    ),
    row(
        "threads",
        "run",
        ["device.num_threads=0", "trainer.resume=auto"],
        "device.num_threads must be >= 1",
    ),
    row(
        "second-writer",
        "run",
        ["trainer.resume=auto", "+_hold_lock=true"],
        "is in use by another gentrain run, pid",
        "train into another directory",
    ),
    row(
        "unwritable-dir",
        "run",
        ["paths.output_dir={a_file}/run"],
        "cannot write to the run directory",
        "pick a writable one",
    ),
    # --- image folders ----------------------------------------------------------------------
    row(
        "folder-no-path",
        "run",
        ["dataset=image_folder", "dataset.image_size=16", "trainer.resume=auto"],
        "needs dataset.path",
    ),
    row(
        "folder-missing",
        "run",
        [
            "dataset=image_folder",
            "dataset.path={tmp}/nope",
            "dataset.image_size=16",
            "trainer.resume=auto",
        ],
        "is not a directory",
    ),
    row(
        "folder-one-image",
        "run",
        [
            "dataset=image_folder",
            "dataset.path={one_image}",
            "dataset.image_size=16",
            "trainer.resume=auto",
        ],
        "need at least 2",
    ),
    row(
        "folder-unreadable",
        "run",
        [
            "dataset=image_folder",
            "dataset.path={unreadable}",
            "dataset.image_size=16",
            "trainer.resume=auto",
        ],
        "broken.png",
        "Fix: remove or convert them",
    ),
    # --- gentrain-eval and gentrain-sample --------------------------------------------------
    row("eval-missing", "eval", ["{tmp}/nope"], "no checkpoint at", "pass a run directory"),
    row("eval-malicious", "eval", ["{malicious}"], "not a gentrain checkpoint"),
    row("eval-foreign", "eval", ["{foreign}"], "not a gentrain checkpoint"),
    row("sample-malicious", "sample", ["{malicious}"], "not a gentrain checkpoint"),
    row("sample-num", "sample", [R, "-n", "0"], "--num must be >= 1"),
    row("sample-batch", "sample", [R, "--batch-size", "0"], "--batch-size must be >= 1"),
    row("sample-output", "sample", [R, "--output", "{tmp}/x.gif"], "expected a .png file"),
    row("sample-num-negative", "sample", [R, "-n", "-5"], "--num must be >= 1, got -5"),
    row("sample-interpolate", "sample", [R, "--interpolate", "-3"], ">= 2", "got -3"),
    row(
        "sample-output-unwritable",
        "sample",
        [R, "--output", "/proc/gentrain/x.npz"],
        "could not write /proc/gentrain/x.npz",
        "then run gentrain-sample again",
    ),
    row(
        "eval-output-unwritable",
        "eval",
        [R, "--output", "/proc/gentrain/x.json"],
        "could not write /proc/gentrain/x.json",
        "then run gentrain-eval again",
    ),
    row(
        "cache-unwritable",
        "run",
        ["eval.enabled=true", "paths.cache_dir=/proc/gentrain-cache", "trainer.resume=auto"],
        "could not write /proc/gentrain-cache/classifiers/",
        "(GENTRAIN_CACHE_DIR or paths.cache_dir), then run again",
    ),
    # --- gentrain-compare ---------------------------------------------------------------------
    row("compare-model", "compare", ["model=vaeg"], "unknown model 'vaeg'", "'vae'?"),
    row("compare-dataset", "compare", ["dataset=mnistt"], "unknown dataset", "'mnist'?"),
    row("compare-optimizer", "compare", ["optimizer=adamm"], "unknown optimizer", "'adam'?"),
    row("compare-key", "compare", ["trainer.batchsize=3"], "unknown trainer key", "batch_size"),
    row("compare-seed", "compare", ["seed=3"], "sets this itself", "--seeds"),
    row("compare-arm", "compare", ["--arms", "vea"], "unknown arm(s) vea", "has: vae"),
    row("compare-epochs", "compare", ["--epochs", "0"], "--epochs must be >= 1, got 0"),
    row("compare-seconds", "compare", ["--seconds", "-5"], "--seconds must be > 0, got -5"),
    row("compare-value", "compare", ["optimizer.lr=-1"], "optimizer.lr must be positive"),
    # --- the installed commands, as a user runs them ------------------------------------------
    row("sh-model", "sh-gentrain", ["model=vaeg", "hydra.run.dir={run}"], "did you mean 'vae'?"),
    row("sh-compare", "sh-compare", ["model=vaeg", "--dry-run"], "unknown model 'vaeg'"),
    row("sh-eval", "sh-eval", ["{malicious}"], "evil.ckpt is not a gentrain checkpoint"),
]


# ---------------------------------------------------------------------------------------------
class RunsACommand:
    def __reduce__(self):
        return (os.system, ("touch /tmp/gentrain-bad-inputs-pwned",))


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_dir, cache_dir) -> dict[str, str]:
    """An existing run (a 4-step VAE) and the bad things the rows point at."""
    from gentrain.cli.train import train

    tmp = tmp_path_factory.mktemp("bad_inputs")
    run = tmp / "run"
    train(
        compose_config(
            [*smoke_overrides(data_dir, cache_dir, run), "eval.enabled=false", "logger=tensorboard"]
        )
    )
    truncated, garbage = tmp / "truncated", tmp / "garbage"
    for root in (truncated, garbage):
        shutil.copytree(data_dir / "MNIST" / "raw", root / "MNIST" / "raw")
    images = truncated / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:50_000])
    (garbage / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"<html>404</html>")
    torch.save({"format_version": 1, "model": RunsACommand()}, tmp / "evil.ckpt")
    torch.save(torch.zeros(3), tmp / "tensor.ckpt")
    whole = (run / "checkpoints" / "last.ckpt").read_bytes()
    (tmp / "cut.ckpt").write_bytes(whole[: len(whole) // 2])
    (tmp / "a_file").write_text("not a directory")
    one, unreadable = tmp / "one_image", tmp / "unreadable"
    for folder, count in ((one, 1), (unreadable, 3)):
        folder.mkdir()
        for i in range(count):
            Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(folder / f"img{i}.png")
    (unreadable / "broken.png").write_bytes(gzip.compress(b"not a png"))
    return {
        "run": str(run),
        "tmp": str(tmp),
        "data": str(data_dir),
        "cache": str(cache_dir),
        "truncated": str(truncated),
        "garbage": str(garbage),
        "malicious": str(tmp / "evil.ckpt"),
        "foreign": str(tmp / "tensor.ckpt"),
        "truncated_ckpt": str(tmp / "cut.ckpt"),
        "a_file": str(tmp / "a_file"),
        "one_image": str(one),
        "unreadable": str(unreadable),
    }


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder``, by content and modification time."""
    return {
        str(
            p.relative_to(folder)
        ): f"{hashlib.sha1(p.read_bytes()).hexdigest()} {p.stat().st_mtime_ns}"
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _in_process(call: Callable[[], object], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        call()
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def run_row(r: Row, world: dict[str, str], capsys, monkeypatch) -> tuple[int, str, str]:
    """The row's exit code, standard output and standard error."""
    args = [a.format(**world) for a in r.args]
    monkeypatch.setenv("GENTRAIN_DATA_DIR", world["data"])
    monkeypatch.setenv("GENTRAIN_CACHE_DIR", world["cache"])
    if r.kind == "cli":
        import hydra

        from gentrain.cli import train

        def no_hydra(*a, **k):
            raise AssertionError("the pre-flight check let a bad override through to Hydra")

        monkeypatch.setattr(hydra, "main", no_hydra)
        base = ["debug=fast", "device=cpu", f"hydra.run.dir={world['run']}"]
        monkeypatch.setattr(sys, "argv", ["gentrain", *base, *args])
        return _in_process(train.main, capsys)
    if r.kind == "run":
        from gentrain.cli.train import hydra_task
        from gentrain.training.run_lock import RunLock

        hold = "+_hold_lock=true" in args
        args = [a for a in args if a != "+_hold_lock=true"]
        output = next((a.split("=", 1)[1] for a in args if a.startswith("paths.output_dir=")), None)
        base = smoke_overrides(Path(world["data"]), Path(world["cache"]), Path(world["run"]))
        cfg = compose_config([*base, "eval.enabled=false", *args])
        if output is None:
            assert cfg.paths.output_dir == world["run"]
        if hold:
            with RunLock(Path(world["run"])):
                return _in_process(lambda: hydra_task(cfg), capsys)
        return _in_process(lambda: hydra_task(cfg), capsys)
    if r.kind in ("eval", "sample", "compare"):
        from gentrain.cli import compare, evaluate, sample

        if r.kind == "compare":
            args = [*args, "--dry-run", "--out", f"{world['tmp']}/compare"]
        module = {"eval": evaluate, "sample": sample, "compare": compare}[r.kind]
        return _in_process(lambda: module.main(args), capsys)
    command = {
        "sh-gentrain": [sys.executable, "-m", "gentrain", "debug=fast", "device=cpu"],
        "sh-compare": [sys.executable, "-m", "gentrain.cli.compare", "--out", f"{world['tmp']}/c"],
        "sh-eval": [sys.executable, "-m", "gentrain.cli.evaluate"],
    }[r.kind]
    result = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=300, cwd=world["tmp"]
    )
    return result.returncode, result.stdout, result.stderr


def test_the_table_has_forty_rows_or_more():
    assert len(ROWS) >= 40 and len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("r", ROWS, ids=[r.id for r in ROWS])
def test_a_bad_input_is_one_clear_line_and_exit_2(r, world, capsys, monkeypatch):
    before = snapshot(Path(world["run"]))
    code, out, err = run_row(r, world, capsys, monkeypatch)
    output = out + err
    assert code == 2, output
    assert "Traceback" not in output and "HYDRA_FULL_ERROR" not in output, output
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "error:" not in out, output  # on stderr, where shells look
    for expected in r.expect:
        assert expected.format(**world) in output, output
    assert snapshot(Path(world["run"])) == before  # nothing of the existing run changed
    assert not Path("/tmp/gentrain-bad-inputs-pwned").exists()
