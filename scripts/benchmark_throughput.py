"""Training throughput of each model's defaults on real MNIST: images/s and s/epoch.

    python scripts/benchmark_throughput.py                  # vae, gan, vaegan; 200 steps each
    python scripts/benchmark_throughput.py --models vae --steps 468 --device cpu

Runs ``gentrain.train.train`` (the same code path as the CLI) with logging off, and prints
one line per model. Reference on 2 CPU cores: pythae's default MNIST VAE trains at
67 images/s, its VAE-GAN at 15 images/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from gentrain.config import validate_config
from gentrain.models import build_model
from gentrain.paths import config_dir
from gentrain.train import train

MNIST_TRAIN_IMAGES = 60_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vae", "gan", "vaegan"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=os.environ.get("GENTRAIN_DATA_DIR", "./data"))
    args = parser.parse_args()

    print(f"{'model':8} {'params':>10} {'images/s':>10} {'s/epoch':>9} {'wall s':>8}")
    for model in args.models:
        with tempfile.TemporaryDirectory() as out:
            overrides = [
                f"model={model}",
                f"device={args.device}",
                "logger=none",
                f"paths.data_dir={Path(args.data_dir).resolve()}",
                f"paths.output_dir={out}",
                f"trainer.max_steps={args.steps}",
                f"trainer.batch_size={args.batch_size}",
                "trainer.limit_val_batches=1",
                "trainer.progress=false",
                f"trainer.log_every_n_steps={args.steps}",
                f"trainer.images_every_n_steps={args.steps * 10}",
                f"trainer.checkpoint_every_n_steps={args.steps * 10}",
            ]
            with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
                cfg = compose(config_name="train", overrides=overrides)
            start = time.perf_counter()
            metrics = train(cfg)
            wall = time.perf_counter() - start
            model_ = build_model(validate_config(cfg).model, (1, 28, 28))
            params = sum(p.numel() for p in model_.parameters() if p.requires_grad)
            speed = metrics["train/images_per_sec"]
            print(
                f"{model:8} {params:>10,} {speed:>10,.0f} {MNIST_TRAIN_IMAGES / speed:>9.1f} "
                f"{wall:>8.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
