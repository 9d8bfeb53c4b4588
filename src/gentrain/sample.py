"""``gentrain-sample``: image grids from a trained checkpoint, on any device.

gentrain-sample RUN                          # 64 samples -> <run>/images/sample.png
gentrain-sample RUN --interpolate 10         # rows walk between pairs of random latents
gentrain-sample RUN --interpolate 10 --real  # ... between encodings of real test images
gentrain-sample RUN --reconstruct            # test images beside their reconstructions
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from gentrain.console import print_error, print_line
from gentrain.errors import GentrainError
from gentrain.restore import TrainedRun, load_trained_run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gentrain-sample", description=__doc__.splitlines()[0])
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir")
    parser.add_argument("--output", type=Path, help="PNG file (default: <run>/images/...)")
    return parser.parse_args(argv)


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
        run = load_trained_run(args.checkpoint, args.device, args.data_dir)
        images, nrow, name = draw(run, args)
    except GentrainError as exc:
        print_error(exc)
        sys.exit(2)
    output = args.output or run.run_dir / "images" / f"{name}.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(images.clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=0.5), output)
    print_line(f"{len(images)} images from {run.path} (step {run.step}) -> {output}")


if __name__ == "__main__":
    main()
