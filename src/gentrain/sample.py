"""``gentrain-sample``: draw images from a trained checkpoint, as a grid or as a sample
set for other tools (clean-fid, torch-fidelity, StudioGAN), on any device.

examples:
  gentrain-sample RUN                          # 64 samples -> <run>/images/sample.png
  gentrain-sample RUN --interpolate 10         # rows walk between pairs of random latents
  gentrain-sample RUN --interpolate 10 --real  # ... between encodings of real test images
  gentrain-sample RUN --reconstruct            # test images beside their reconstructions
  gentrain-sample RUN -n 50000 --output DIR/   # one PNG per image: DIR/000000.png ...
  gentrain-sample RUN -n 50000 --output samples.npz   # uint8 (N, H, W, 3) under 'arr_0'

Sample sets are drawn in batches (--batch-size) from noise seeded by --seed: the same
seed and batch size give the same images.
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

from gentrain.cli_help import command_parser
from gentrain.console import print_error, print_line
from gentrain.errors import GentrainError
from gentrain.restore import TrainedRun, load_trained_run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_parser("gentrain-sample", __doc__)
    parser.add_argument("checkpoint", help="run directory or .ckpt file")
    parser.add_argument("-n", "--num", type=int, default=64, help="images (or rows) to draw")
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
def sample_batches(run: TrainedRun, num: int, seed: int, batch_size: int) -> Iterator[torch.Tensor]:
    """``num`` samples as uint8 (B, C, H, W) CPU batches; noise from a CPU generator seeded
    with ``seed``, so the images do not depend on the device."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, num, batch_size):
        noise = run.model.sample_noise(min(batch_size, num - start), generator)
        images = run.model.sample(noise.to(run.device)).clamp(0, 1)
        yield images.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu()  # as save_image


def export_samples(run: TrainedRun, args: argparse.Namespace, kind: str) -> Path:
    """Write ``args.num`` samples as one PNG per image or as one .npz; return the path."""
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    batches = sample_batches(run, args.num, args.seed, args.batch_size)
    if kind == "png_dir":
        output.mkdir(exist_ok=True)
        index = 0
        for batch in batches:
            for image in batch.permute(0, 2, 3, 1).numpy():
                Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
                    output / f"{index:06d}.png"
                )
                index += 1
        return output
    array = torch.cat(list(batches)).permute(0, 2, 3, 1)
    if array.shape[-1] == 1:  # the evaluators feed Inception: RGB, as they exchange it
        array = array.expand(-1, -1, -1, 3)
    tmp = output.with_name(output.name + ".tmp.npz")
    np.savez(tmp, arr_0=array.contiguous().numpy())
    os.replace(tmp, output)  # never a half-written file under the final name
    return output


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation: stays where Gaussian latents have their mass."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


@torch.no_grad()
def draw(run: TrainedRun, args: argparse.Namespace) -> tuple[torch.Tensor, int, str]:
    """(images, images per row, name) for the requested kind of grid."""
    model, generator = run.model, torch.Generator().manual_seed(args.seed)
    needs_encoder = args.reconstruct or (args.interpolate and args.real)
    if needs_encoder and not model.has_encoder:
        raise GentrainError(
            f"{run.config.model.name} has no encoder: it cannot reconstruct or encode real images"
        )
    if args.reconstruct:
        x = run.data.val[: args.num].to(run.device).float() / 255
        pairs = torch.stack([x, model.reconstruct(x)], dim=1).flatten(0, 1)
        return pairs, 2 * max(1, int(math.sqrt(args.num))), "reconstructions"
    if args.interpolate:
        steps, rows = args.interpolate, args.num
        if args.real:
            index = torch.randperm(len(run.data.val), generator=generator)[: 2 * rows]
            x = run.data.val[index].to(run.device).float() / 255
            mu, _ = model.encode(x)
            a, b = mu[:rows], mu[rows:]
        else:
            a = model.sample_noise(rows, generator).to(run.device)
            b = model.sample_noise(rows, generator).to(run.device)
        t = torch.linspace(0, 1, steps, device=run.device).view(1, steps, 1)
        z = (
            slerp(a.unsqueeze(1), b.unsqueeze(1), t)
            if not args.real
            else a.unsqueeze(1) + t * (b - a).unsqueeze(1)
        )
        return model.sample(z.flatten(0, 1)), steps, "interpolations"
    noise = model.sample_noise(args.num, generator).to(run.device)
    return model.sample(noise), max(1, int(math.sqrt(args.num))), "sample"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if args.num < 1 or (args.interpolate is not None and args.interpolate < 2):
            raise GentrainError("--num must be >= 1 and --interpolate >= 2")
        if args.batch_size < 1:
            raise GentrainError(f"--batch-size must be >= 1, got {args.batch_size}")
        kind = export_kind(args.output)
        if kind != "grid" and (args.interpolate or args.reconstruct):
            raise GentrainError(
                f"--output {args.output} exports samples; --interpolate and --reconstruct "
                "make grids: give a .png file (or no --output) for those"
            )
        run = load_trained_run(args.checkpoint, args.device, args.data_dir)
        if kind != "grid":
            output = export_samples(run, args, kind)
            what = "one PNG per image" if kind == "png_dir" else "uint8 NHWC array 'arr_0'"
            print_line(f"{args.num} samples from {run.path} (step {run.step}) -> {output} ({what})")
            return
        images, nrow, name = draw(run, args)
    except GentrainError as exc:
        print_error(exc)
        sys.exit(2)
    output = Path(args.output) if args.output else run.run_dir / "images" / f"{name}.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(images.clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=0.5), output)
    print_line(f"{len(images)} images from {run.path} (step {run.step}) -> {output}")


if __name__ == "__main__":
    main()
