"""Sample quality of a trained VAE / VAE-GAN under each latent prior: N(0, I) and fitted
mixtures of K components (``model.prior_components``), on the same decoder.

    python scripts/benchmark_latent_prior.py outputs/runs/<date>/<run>
    python scripts/benchmark_latent_prior.py RUN --components 0 10 20 50 --num-samples 10000

Each row refits the run's ``LatentPrior`` with K components on the posterior means of the
run's ``prior_fit_images`` training images (K = 0: N(0, I)), draws ``--num-samples`` images
from the same seeded noise and scores them with gentrain's evaluation (FID/KID/IS/precision/
recall against the test images; conditional runs also conditional accuracy and intra-class
FID). The last row decodes the test images' posterior means: reconstructions, the quality
the decoder reaches where it was trained. Prints one table and the fit times.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gentrain.evaluation import Evaluator
from gentrain.evaluation.evaluator import EvalConfig
from gentrain.models.latent_prior import LatentPrior, posterior_means
from gentrain.training.restore import load_trained_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory or .ckpt of a VAE or VAE-GAN")
    parser.add_argument("--components", type=int, nargs="+", default=[0, 10, 20, 50])
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    run = load_trained_run(args.run, args.device)
    model, data = run.model, run.data
    cfg = run.config
    evaluator = Evaluator(
        EvalConfig(num_samples=args.num_samples), data, run.device, Path(cfg.paths.cache_dir)
    )
    images = data.train.to(run.device)
    labels = data.train_labels.to(run.device) if model.conditional else None
    codes, code_labels = posterior_means(model, images, labels, cfg.model.prior_fit_images)
    rows = []
    for k in args.components:
        started = time.perf_counter()
        prior = LatentPrior(model.latent_dim, k, classes=model.num_classes) if k else None
        model.latent_prior = None if prior is None else prior.to(run.device)
        if prior is not None:
            prior.fit(codes, code_labels)
        fitted = time.perf_counter() - started
        rows.append((f"K = {k}" if k else "N(0, I)", fitted, evaluator(model, final=False)))
    model.latent_prior = None  # the last row: the test images' reconstructions
    test = data.val[: args.num_samples].to(run.device).float() / 255
    test_labels = data.val_labels[: len(test)].to(run.device) if model.conditional else None
    with torch.no_grad():
        recon = [
            model.reconstruct(
                test[i : i + 500], None if test_labels is None else test_labels[i : i + 500]
            )
            for i in range(0, len(test), 500)
        ]
    rows.append(
        (
            "reconstructions",
            0.0,
            evaluator.score_images(
                torch.cat(recon).clamp(0, 1).cpu(),
                None if test_labels is None else test_labels.cpu(),
            ),
        )
    )

    keys = ["val/fid", "val/kid", "val/is", "val/precision", "val/recall"]
    if model.conditional:
        keys += ["val/cond_accuracy", "val/intra_fid"]
    print(f"{run.path} (step {run.step}), {args.num_samples} samples")
    print(" | ".join(["prior", "fit s", *(k.removeprefix("val/") for k in keys)]))
    for name, seconds, metrics in rows:
        cells = [f"{metrics.get(k, float('nan')):.3g}" for k in keys]
        print(" | ".join([name, f"{seconds:.1f}", *cells]))


if __name__ == "__main__":
    main()
