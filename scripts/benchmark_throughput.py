"""Training throughput of each model's defaults on real MNIST: images/s and s/epoch.

    python scripts/benchmark_throughput.py                  # vae, gan, vaegan; 200 steps each
    python scripts/benchmark_throughput.py --models vae --steps 468 --device cpu
    python scripts/benchmark_throughput.py --models vae --precision 32 bf16 --compile 0 1 \
        --channels-last 0 1 --nproc 1 2                  # one row per combination

``--nproc N`` runs ``torchrun --nproc_per_node=N -m gentrain`` (the global batch stays
``--batch-size``; on a CPU give each rank ``--threads`` threads).

Runs ``gentrain.cli.train.train`` (the same code path as the CLI) with logging off, and prints
one line per model. Reference on 2 CPU cores: pythae's default MNIST VAE trains at
67 images/s, its VAE-GAN at 15 images/s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from gentrain.cli.train import train
from gentrain.core.config import validate_config
from gentrain.core.paths import config_dir
from gentrain.models import build_model

MNIST_TRAIN_IMAGES = 60_000


def measure(
    model: str,
    *,
    steps: int,
    batch_size: int,
    device: str,
    data_dir: str,
    nproc: int = 1,
    precision: str = "32",
    compiled: bool = False,
    nhwc: bool = False,
    threads: int | None = None,
    evaluate: bool = False,
    extra: tuple[str, ...] = (),
) -> dict[str, float]:
    """Train ``model`` for ``steps`` steps with these switches (in this process, or under
    torchrun with ``nproc`` ranks); its metrics with ``params``, ``wall_seconds`` and, on
    CUDA in this process, ``peak_memory_gib``."""
    import torch

    with tempfile.TemporaryDirectory() as out:
        overrides = [
            f"model={model}",
            f"device={device}",
            "logger=none",
            f"eval.enabled={evaluate}",
            f"paths.data_dir={Path(data_dir).resolve()}",
            f"trainer.max_steps={steps}",
            f"trainer.batch_size={batch_size}",
            f"trainer.precision={precision}",
            f"trainer.compile={compiled}",
            f"trainer.channels_last={nhwc}",
            "trainer.limit_val_batches=1",
            "trainer.progress=false",
            f"trainer.log_every_n_steps={steps}",
            f"trainer.images_every_n_steps={steps * 10}",
            f"trainer.checkpoint_every_n_steps={steps * 10}",
            *extra,
        ]
        if threads:
            overrides.append(f"device.num_threads={threads}")
        with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
            cfg = compose(config_name="train", overrides=[*overrides, f"paths.output_dir={out}"])
        cuda = torch.cuda.is_available() and device != "cpu"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        if nproc == 1:
            metrics = dict(train(cfg))
        else:
            command = [
                *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
                *(f"--nproc_per_node={nproc}", "-m", "gentrain"),
                *overrides,
                f"hydra.run.dir={out}",
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"torchrun failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
            metrics = json.loads((Path(out) / "metrics.json").read_text())
        metrics["wall_seconds"] = time.perf_counter() - start
        if cuda and nproc == 1:
            metrics["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        model_ = build_model(validate_config(cfg).model, (1, 28, 28), dataset_classes=10)
        metrics["params"] = model_.num_trainable_parameters()
        return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vae", "gan", "vaegan"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1], help="ranks (torchrun)")
    parser.add_argument("--precision", nargs="+", default=["32"], help="32 | bf16 | 16-mixed")
    parser.add_argument("--compile", type=int, nargs="+", default=[0], choices=[0, 1])
    parser.add_argument("--channels-last", type=int, nargs="+", default=[0], choices=[0, 1])
    parser.add_argument("--threads", type=int, default=None, help="torch threads per rank")
    parser.add_argument("--data-dir", default=os.environ.get("GENTRAIN_DATA_DIR", "./data"))
    args = parser.parse_args()

    print(
        f"{'model':8} {'nproc':>5} {'precision':>9} {'compile':>7} {'nhwc':>4} {'params':>10} "
        f"{'images/s':>10} {'s/epoch':>9} {'wall s':>8}"
    )
    rows = itertools.product(
        args.models, args.nproc, args.precision, args.compile, args.channels_last
    )
    for model, nproc, precision, compiled, nhwc in rows:
        metrics = measure(
            model,
            steps=args.steps,
            batch_size=args.batch_size,
            device=args.device,
            data_dir=args.data_dir,
            nproc=nproc,
            precision=precision,
            compiled=bool(compiled),
            nhwc=bool(nhwc),
            threads=args.threads,
        )
        speed = metrics["train/images_per_sec"]
        print(
            f"{model:8} {nproc:>5} {precision:>9} {compiled:>7} {nhwc:>4} "
            f"{metrics['params']:>10,} {speed:>10,.0f} {MNIST_TRAIN_IMAGES / speed:>9.1f} "
            f"{metrics['wall_seconds']:>8.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
