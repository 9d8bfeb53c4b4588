"""Sample quality per minute of training: each model's preset under one time budget.

    python scripts/benchmark_quality.py --seconds 900                  # vae, gan, vaegan
    python scripts/benchmark_quality.py --presets gan_mnist --seconds 300 --device cuda
    python scripts/benchmark_quality.py --presets vae_mnist_mlp --seconds 1800 \\
        --nll-samples 5000 --nll-images 10000                           # Burda et al.'s NLL
    python scripts/benchmark_quality.py --presets cgan_mnist cvae_mnist cvaegan_mnist
    python scripts/benchmark_quality.py --presets model=gan model=vaegan dataset=fashion_mnist
    python scripts/benchmark_quality.py --presets model=gan --seconds 1800 \
        dataset=image_folder dataset.path=../shared/datasets/emoji/images   # as typed
    python scripts/benchmark_quality.py --references-only dataset=fashion_mnist  # the scale

A preset is an experiment name (``gan_mnist``) or ``model=<name>``: the command as a user
types it, with the recipe that model and dataset select (configs/recipe/).

Each preset is trained by ``gentrain.cli.train.train`` (the CLI's code path) for
``trainer.max_seconds`` of training time, evaluated every epoch and at the end with
gentrain's metrics (FID/KID/IS/precision/recall on 10,000 samples against the 10,000 test
images, in the feature space of the data set's own classifier; the VAE's importance-weighted
NLL), and the table is printed beside reference rows that put the numbers on a scale:
real train images (the floor), real images with Gaussian pixel noise, and real images
blurred by 0.5 and 0.8 px (scored with their true labels, the best case of the
conditional models' conditional accuracy and intra-class FID). Writes
``<out>/results.json``, ``<out>/fid_vs_time.png`` (FID against training seconds, from
each run's history.jsonl) and keeps every run directory (its samples are in
``<run>/images/``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from torchvision.transforms.functional import gaussian_blur  # noqa: E402

from gentrain.cli.train import train  # noqa: E402
from gentrain.core.config import validate_config  # noqa: E402
from gentrain.core.paths import config_dir  # noqa: E402
from gentrain.data import build_dataset  # noqa: E402
from gentrain.evaluation import Evaluator  # noqa: E402
from gentrain.tracking.history import read_history  # noqa: E402

COLUMNS = [
    ("model", "{}"),
    ("family", "{}"),
    ("params", "{:,.0f}"),
    ("train s", "{:.0f}"),
    ("img/s", "{:,.0f}"),
    ("FID", "{:.1f}"),
    ("KID", "{:.1f}"),
    ("IS", "{:.2f}"),
    ("precision", "{:.2f}"),
    ("recall", "{:.2f}"),
    ("NLL", "{:.2f}"),
    ("cond acc", "{:.3f}"),
    ("intra-FID", "{:.1f}"),
]


def compose_run(preset: str, args: argparse.Namespace, out: Path):
    overrides = [
        preset if "=" in preset else f"experiment={preset}",
        f"device={args.device}",
        f"paths.data_dir={Path(args.data_dir).resolve()}",
        f"paths.output_dir={out}",
        f"trainer.max_seconds={args.seconds}",
        "trainer.max_epochs=1000",
        "trainer.progress=false",
        f"seed={args.seed}",
        *args.overrides,
    ]
    if args.nll_samples is not None:
        overrides.append(f"eval.nll_samples={args.nll_samples}")
    if args.nll_images is not None:
        overrides.append(f"eval.nll_images={args.nll_images}")
    if args.cache_dir:
        overrides.append(f"paths.cache_dir={args.cache_dir}")
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return compose(config_name="train", overrides=overrides)


def reference_rows(cfg, device: torch.device) -> list[dict]:
    """The scale: real train images as they are, with noise, and blurred."""
    run = validate_config(cfg)
    data = build_dataset(run.dataset)
    evaluator = Evaluator(run.eval, data, device, Path(run.paths.cache_dir))
    generator = torch.Generator().manual_seed(run.eval.seed + 1)
    index = torch.randperm(len(data.train), generator=generator)[: run.eval.num_samples]
    real = data.train[index].float() / 255
    noise = torch.randn(real.shape, generator=generator)
    references = {
        "real train images": real,
        "real + noise σ=0.1": (real + 0.1 * noise).clamp(0, 1),
        "real blurred σ=0.5 px": gaussian_blur(real, [5, 5], [0.5, 0.5]),
        "real blurred σ=0.8 px": gaussian_blur(real, [5, 5], [0.8, 0.8]),
    }
    rows = []
    labels = data.train_labels[index] if data.train_labels is not None else None
    for name, images in references.items():
        # the real images with their own labels: the conditional metrics' best case
        metrics = evaluator.score_images(images, labels)
        rows.append({"model": name, "family": "–", **row_metrics(metrics)})
    return rows


def row_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    return {
        "FID": metrics.get("val/fid"),
        "KID": metrics.get("val/kid"),
        "IS": metrics.get("val/is"),
        "precision": metrics.get("val/precision"),
        "recall": metrics.get("val/recall"),
        "NLL": metrics.get("val/nll_iwae"),
        "cond acc": metrics.get("val/cond_accuracy"),
        "intra-FID": metrics.get("val/intra_fid"),
    }


def print_table(rows: list[dict]) -> None:
    cells = [[name for name, _ in COLUMNS]]
    for row in rows:
        cells.append(
            ["–" if row.get(name) is None else fmt.format(row[name]) for name, fmt in COLUMNS]
        )
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    for i, line in enumerate(cells):
        print(" | ".join(c.rjust(w) if i else c.ljust(w) for c, w in zip(line, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def plot_curves(runs: dict[str, Path], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, run_dir in runs.items():
        records = [r for r in read_history(run_dir / "history.jsonl") if "val/fid" in r]
        if records:
            ax.plot(
                [r["train_seconds"] / 60 for r in records],
                [r["val/fid"] for r in records],
                marker="o",
                label=name,
            )
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("FID (gentrain classifier features)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["vae_mnist", "gan_mnist", "vaegan_mnist"])
    parser.add_argument("--seconds", type=float, default=900, help="training time per preset")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.environ.get("GENTRAIN_DATA_DIR", "./data"))
    parser.add_argument("--cache-dir", help="feature classifiers (default: gentrain's)")
    parser.add_argument("--nll-samples", type=int, help="k of the VAE's IWAE NLL at the end")
    parser.add_argument("--nll-images", type=int, help="test images the NLL averages over")
    parser.add_argument("--no-references", action="store_true", help="skip the real-data rows")
    parser.add_argument(
        "--references-only", action="store_true", help="only the real-data rows: no training"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmark_quality"))
    parser.add_argument("overrides", nargs="*", help="extra gentrain overrides for every run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = args.out / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)

    rows, runs = [], {}
    for preset in [] if args.references_only else args.presets:
        run_dir = out / preset
        cfg = compose_run(preset, args, run_dir)
        metrics = train(cfg)
        runs[preset] = run_dir
        rows.append(
            {
                "model": preset,
                "family": cfg.model.get("family", "dcgan"),
                "params": metrics["model/parameters"],
                "train s": metrics["train/seconds"],
                "img/s": metrics["train/images_per_sec"],
                **row_metrics(metrics),
            }
        )
        print_table(rows)
    if not args.no_references:
        rows += reference_rows(
            compose_run(args.presets[0], args, out / "reference"), torch.device("cpu")
        )
    print()
    print_table(rows)
    if runs:
        plot_curves(runs, out / "fid_vs_time.png")
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nwritten: {out}/results.json, {out}/fid_vs_time.png, runs in {out}/<preset>/")


if __name__ == "__main__":
    main()
