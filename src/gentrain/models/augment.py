"""Differentiable augmentation for discriminators (DiffAugment, Zhao et al. 2020), with an
adaptive strength (ADA, Karras et al. 2020).

The same random transform family is applied to real and generated images *before D*, in
D's step and G's step alike, and it is differentiable, so G learns through it and never
learns to produce the augmentation. It keeps D from memorising a small training set,
which is what makes GANs trainable on few images. ``policy`` lists transforms from
``color`` (brightness, saturation and contrast jitter), ``translation`` (shift by up to
1/8 of the side, zero padding) and ``cutout`` (a zeroed square of half the side), applied
in order; images are in D's [-1, 1] range.

Each transform reaches each image with probability ``p``: 1 is DiffAugment; ADA
(``AdaptiveStrength``) starts ``p`` at 0 and moves it so that D's outputs on real images
stay positive on a ``target`` share of them (Karras et al.'s r_t = E[sign D(x)], 0.6): a D
that grows sure of the training set gets stronger augmentation, one that does not gets
less, so a large data set is left almost unaugmented.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from gentrain.core.errors import ConfigError

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The policy's transforms in order; ConfigError naming the valid ones otherwise."""
    names = tuple(policy)
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ConfigError(
            f"unknown model.augment transform(s) {unknown}; available: {', '.join(POLICIES)} "
            "(a list, e.g. model.augment=[translation,cutout]; [] for none)"
        )
    return names


def color(x: torch.Tensor) -> torch.Tensor:
    """DiffAugment's colour jitter per image: brightness +-0.5, saturation x[0, 2] (RGB
    only), contrast x[0.5, 1.5], on [-1, 1] images."""
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    if x.shape[1] == 3:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by a random whole number of pixels, filling with zeros."""
    n, _, h, w = x.shape
    sy, sx = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy + 1
    cols = torch.arange(w, device=x.device).view(1, 1, w) + dx + 1
    rows, cols = rows.clamp(0, h + 1), cols.clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1))  # the border ring is the zero fill
    index = (rows * (w + 2) + cols).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, index).view_as(x)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random square of ``ratio`` times the side in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - ch // 2, cx - cw // 2
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def augment(
    x: torch.Tensor, policy: tuple[str, ...], p: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """``x`` through each transform of ``policy`` in turn, each reaching each image with
    probability ``p`` (a 0-d tensor on the device stays there: no host sync)."""
    for name in policy:
        changed = TRANSFORMS[name](x)
        if isinstance(p, float) and p >= 1.0:
            x = changed
        else:
            chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p
            x = torch.where(chosen, changed, x)
    return x


def augment_alike(
    batches: list[torch.Tensor], policy: tuple[str, ...], p: float | torch.Tensor = 1.0
) -> list[torch.Tensor]:
    """Each batch through ``augment`` with the same random draws, so the i-th images of
    all batches get one transform (a VAE-GAN's X and its reconstruction X~: its learned
    similarity then compares like with like). The random state ends as after one batch."""
    device = batches[0].device
    generators = {"cuda": torch.cuda, "mps": getattr(torch, "mps", None)}
    accelerator = generators.get(device.type)
    start_cpu = torch.get_rng_state()
    start_device = accelerator.get_rng_state() if accelerator is not None else None
    out = []
    for batch in batches:
        torch.set_rng_state(start_cpu)
        if accelerator is not None:
            accelerator.set_rng_state(start_device)
        out.append(augment(batch, policy, p))
    return out


class AdaptiveStrength:
    """ADA's controller of ``p``: after each D step, ``p`` moves by ``sign(r_t - target)``
    times the images seen over ``images_to_full`` (the number of real images over which
    ``p`` could rise from 0 to 1), r_t being the share of real images D scores positive.
    ``p`` is a 0-d tensor on the model's device, kept in its state dict by the model."""

    def __init__(self, target: float, images_to_full: int, centre: float = 0.0) -> None:
        self.target = target
        self.images_to_full = images_to_full
        self.centre = centre  # D's output between real and fake (0 for logits, 0.5 LSGAN)

    @torch.no_grad()
    def adjust(self, p: torch.Tensor, d_real: torch.Tensor, mean: Any = None) -> torch.Tensor:
        """r_t = E[sign(d_real - centre)], and ``p`` moved in place; ``mean`` averages r_t
        over data-parallel ranks, so that every rank moves ``p`` alike."""
        r_t = torch.sign(d_real.detach().float() - self.centre).mean()
        r_t = r_t if mean is None else mean(r_t)
        step = torch.sign(r_t - self.target) * len(d_real) / self.images_to_full
        p.add_(step).clamp_(0.0, 1.0)
        return r_t
