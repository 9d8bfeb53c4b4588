"""``gentrain-sample``: draw images from a trained checkpoint, as a grid or as a sample
set for other tools (clean-fid, torch-fidelity, StudioGAN), on any device.

examples:
  gentrain-sample RUN                          # 64 samples -> <run>/images/sample.png
  gentrain-sample RUN --interpolate 10         # rows walk between pairs of random latents
  gentrain-sample RUN --interpolate 10 --real  # ... between encodings of real test images
  gentrain-sample RUN --reconstruct            # test images beside their reconstructions
  gentrain-sample RUN -n 50000 --output DIR/   # one PNG per image: DIR/000000.png ...
  gentrain-sample RUN -n 50000 --output samples.npz   # uint8 (N, H, W, 3) under 'arr_0'

conditional models (model.conditional=true):
  gentrain-sample RUN --label 7                # 64 sevens (a class index or its name)
  gentrain-sample RUN --label all              # one row per class, one style per column
  gentrain-sample RUN --label 7 --interpolate 10       # walks between styles of a 7
  gentrain-sample RUN --label 7 -n 5000 --output sevens.npz

Without --label a conditional model draws every class in turn. Sample sets are drawn
in batches (--batch-size) from noise seeded by --seed: the same seed and batch size
give the same images.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid, save_image

from gentrain.cli.parser import command_parser
from gentrain.core.checkpoint import atomic_write, check_writable, write_failure
from gentrain.core.errors import GentrainError
from gentrain.tracking.console import print_error, print_line
from gentrain.training.restore import TrainedRun, load_trained_run

AGAIN = "(--output), then run gentrain-sample again"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_parser("gentrain-sample", __doc__)
    parser.add_argument("checkpoint", help="run directory or .ckpt file")
    parser.add_argument(
        "-n",
        "--num",
        type=int,
        help="images (or rows) to draw (default 64); with --label all: columns (default 8)",
    )
    parser.add_argument(
        "--label",
        help="conditional models: the class to draw (its index or name), or 'all' (a row each)",
    )
    parser.add_argument(
        "--interpolate",
        type=int,
        metavar="STEPS",
        help="latent interpolations with this many steps per row",
    )
    parser.add_argument(
        "--real", action="store_true", help="interpolate between encodings of real test images"
    )
    parser.add_argument(
        "--reconstruct",
        action="store_true",
        help="test images and their reconstructions, side by side",
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument(
        "--batch-size", type=int, default=500, help="images generated at once (default 500)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--data-dir", help="datasets (default: $GENTRAIN_DATA_DIR, the run's)")
    parser.add_argument(
        "--output",
        type=str,
        help="a .png grid (default: <run>/images/<kind>.png), a directory ending in / "
        "(one PNG per image) or a .npz file (uint8 NHWC array 'arr_0')",
    )
    return parser.parse_args(argv)


#: ``--label all``: one row per class
ALL_CLASSES = -1


def parse_label(run: TrainedRun, label: str | None) -> int | None:
    """``--label`` as a class index (``ALL_CLASSES`` for 'all', None without it), checked
    against the run's model and dataset before anything is drawn."""
    if label is None:
        return None
    model, names = run.model, run.data.class_names or []
    if not model.conditional:
        raise GentrainError(
            f"--label {label}: this {run.config.model.name} is unconditional (trained without "
            "labels); train one with model.conditional=true to draw a chosen class"
        )
    if label == "all":
        return ALL_CLASSES
    if label in names:
        return names.index(label)
    numeric_names = all(name.isdecimal() for name in names)  # folders 2, 3, 10: names only
    if label.isdecimal() and int(label) < model.num_classes and not numeric_names:
        return int(label)
    shown = ", ".join(name if name == str(i) else f"{i} ({name})" for i, name in enumerate(names))
    raise GentrainError(
        f"--label {label}: {run.data.name} has no such class; available: {shown}, all"
    )


def labels_of(run: TrainedRun, label: int | None, n: int) -> torch.Tensor | None:
    """The class of each of ``n`` images: ``label`` throughout, or without one the model's
    default (every class in turn); None for an unconditional model."""
    if label is None:
        return run.model.balanced_labels(n, run.device)
    return torch.full((n,), label, dtype=torch.long, device=run.device)


def real_images(
    run: TrainedRun, n: int, label: int | None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` test images in [0, 1] (of class ``label`` only, when given): the first ones, or
    a random draw with ``generator``; and their labels for a conditional model."""
    index = torch.arange(len(run.data.val))
    if label is not None:
        index = index[run.data.val_labels == label]
    if n > len(index):
        raise GentrainError(f"--num: the test split has {len(index)} such images, not {n}")
    if generator is not None:
        index = index[torch.randperm(len(index), generator=generator)]
    index = index[:n]
    x = run.data.val[index].to(run.device).float() / 255
    y = run.data.val_labels[index].to(run.device) if run.model.conditional else None
    return x, y


def export_kind(output: str | None) -> str:
    """'grid' (a PNG file), 'png_dir' (one PNG per image) or 'npz', from ``--output``."""
    if output is None or output.lower().endswith(".png"):
        return "grid"
    if output.lower().endswith(".npz"):
        return "npz"
    if output.endswith(("/", os.sep)) or Path(output).is_dir() or not Path(output).suffix:
        return "png_dir"
    raise GentrainError(
        f"--output {output}: expected a .png file, a directory (ending in /) or a .npz file"
    )


@torch.no_grad()
def sample_batches(
    run: TrainedRun, num: int, seed: int, batch_size: int, label: int | None = None
) -> Iterator[torch.Tensor]:
    """``num`` samples (of class ``label``, or of each class in turn) as uint8
    (B, C, H, W) CPU batches; noise from a CPU generator seeded with ``seed``, so the
    images do not depend on the device."""
    generator = torch.Generator().manual_seed(seed)
    labels = labels_of(run, label, num)
    for start in range(0, num, batch_size):
        noise = run.model.sample_noise(min(batch_size, num - start), generator)
        drawn_for = None if labels is None else labels[start : start + len(noise)]
        images = run.model.sample(noise.to(run.device), drawn_for).clamp(0, 1)
        yield images.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu()  # as save_image


def export_samples(
    run: TrainedRun, args: argparse.Namespace, kind: str, label: int | None = None
) -> Path:
    """Write ``args.num`` samples as one PNG per image or as one .npz; return the path."""
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    batches = sample_batches(run, args.num, args.seed, args.batch_size, label)
    if kind == "png_dir":
        output.mkdir(exist_ok=True)
        index = 0
        for batch in batches:
            for image in batch.permute(0, 2, 3, 1).numpy():
                path = output / f"{index:06d}.png"
                try:
                    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(path)
                except OSError as exc:  # a full disk mid-way: the files so far stay
                    raise write_failure(path, exc, AGAIN) from None
                index += 1
        return output
    array = torch.cat(list(batches)).permute(0, 2, 3, 1)
    if array.shape[-1] == 1:  # the evaluators feed Inception: RGB, as they exchange it
        array = array.expand(-1, -1, -1, 3)
    # never a half-written file under the final name; a failed write is one line
    atomic_write(output, lambda f: np.savez(f, arr_0=array.contiguous().numpy()), AGAIN)
    return output


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation: stays where Gaussian latents have their mass."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


@torch.no_grad()
def draw(
    run: TrainedRun, args: argparse.Namespace, label: int | None = None
) -> tuple[torch.Tensor, int, str]:
    """(images, images per row, name) for the requested kind of grid; a conditional
    model's of class ``label`` (each class in turn without one, a row each for all)."""
    model, generator = run.model, torch.Generator().manual_seed(args.seed)
    needs_encoder = args.reconstruct or (args.interpolate and args.real)
    if needs_encoder and not model.has_encoder:
        raise GentrainError(
            f"{run.config.model.name} has no encoder: it cannot reconstruct or encode real images"
        )
    if label == ALL_CLASSES:
        images, columns = model.class_grid(model.sample_noise(args.num, generator).to(run.device))
        return images, columns, "classes"
    suffix = "" if label is None else f"_{run.data.class_names[label]}".replace("/", "-")
    if args.reconstruct:
        x, y = real_images(run, args.num, label)
        pairs = torch.stack([x, model.reconstruct(x, y)], dim=1).flatten(0, 1)
        return pairs, 2 * max(1, int(math.sqrt(args.num))), "reconstructions" + suffix
    if args.interpolate:
        steps, rows = args.interpolate, args.num
        if args.real:  # between the encodings of two test images (of class ``label``)
            x, y = real_images(run, 2 * rows, label, generator)
            mu, _ = model.encode(x, y)
            a, b = mu[:rows], mu[rows:]
            row_labels = None if y is None else y[:rows]  # a row keeps its first image's class
        else:
            a = model.sample_noise(rows, generator).to(run.device)
            b = model.sample_noise(rows, generator).to(run.device)
            row_labels = labels_of(run, label, rows)
        # Walks between codes (encodings, or a fitted prior's codes of the noise: the
        # mixture's map of noise jumps between components) are straight lines; between
        # noise vectors of N(0, I), great circles, where Gaussian noise has its mass.
        in_codes = args.real or model.latent_prior is not None
        if in_codes and not args.real:
            a, b = model.prior_codes(a, row_labels), model.prior_codes(b, row_labels)
        t = torch.linspace(0, 1, steps, device=run.device).view(1, steps, 1)
        z = (
            a.unsqueeze(1) + t * (b - a).unsqueeze(1)
            if in_codes
            else slerp(a.unsqueeze(1), b.unsqueeze(1), t)
        )
        labels = None if row_labels is None else row_labels.repeat_interleave(steps)
        walk = z.flatten(0, 1)
        images = model.decode(walk, labels) if in_codes else model.sample(walk, labels)
        return images, steps, "interpolations" + suffix
    noise = model.sample_noise(args.num, generator).to(run.device)
    images = model.sample(noise, labels_of(run, label, args.num))
    return images, max(1, int(math.sqrt(args.num))), "sample" + suffix


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if args.num is None:
            args.num = 8 if args.label == "all" else 64
        if args.num < 1:
            raise GentrainError(f"--num must be >= 1, got {args.num}")
        if args.interpolate is not None and args.interpolate < 2:
            raise GentrainError(
                f"--interpolate must be >= 2 (steps per row), got {args.interpolate}"
            )
        if args.batch_size < 1:
            raise GentrainError(f"--batch-size must be >= 1, got {args.batch_size}")
        kind = export_kind(args.output)
        if kind != "grid" and (args.interpolate or args.reconstruct):
            raise GentrainError(
                f"--output {args.output} exports samples; --interpolate and --reconstruct "
                "make grids: give a .png file (or no --output) for those"
            )
        run = load_trained_run(args.checkpoint, args.device, args.data_dir)
        if args.output:  # an unwritable --output is found before the sampling, not after
            target = Path(args.output)
            check_writable(target / "probe" if kind == "png_dir" else target, AGAIN)
        label = parse_label(run, args.label)
        if label == ALL_CLASSES and (kind != "grid" or args.interpolate or args.reconstruct):
            raise GentrainError(
                "--label all draws the class grid; for a sample set, interpolations or "
                "reconstructions give one class (--label 7) or none (every class in turn)"
            )
        if kind != "grid":
            output = export_samples(run, args, kind, label)
            what = "one PNG per image" if kind == "png_dir" else "uint8 NHWC array 'arr_0'"
            print_line(f"{args.num} samples from {run.path} (step {run.step}) -> {output} ({what})")
            return
        images, nrow, name = draw(run, args, label)
        output = Path(args.output) if args.output else run.run_dir / "images" / f"{name}.png"
        check_writable(output, AGAIN)
        save_image(make_grid(images.clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=0.5), output)
    except GentrainError as exc:
        print_error(exc)
        sys.exit(2)
    print_line(f"{len(images)} images from {run.path} (step {run.step}) -> {output}")
    if label == ALL_CLASSES:
        print_line("rows, top to bottom: " + ", ".join(run.data.class_names or []))


if __name__ == "__main__":
    main()
