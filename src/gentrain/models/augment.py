"""Differentiable augmentation for discriminators (DiffAugment, Zhao et al. 2020).

The same random transform family is applied to real and generated images *before D*, in
D's step and G's step alike, and it is differentiable, so G learns through it and never
learns to produce the augmentation. It keeps D from memorising a small training set,
which is what makes GANs trainable on few images. ``policy`` lists transforms from
``translation`` (shift by up to 1/8 of the side, zero padding) and ``cutout`` (a zeroed
square of half the side), applied in order; images are in D's [-1, 1] range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gentrain.core.errors import ConfigError

POLICIES = ("translation", "cutout")


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


TRANSFORMS = {"translation": translation, "cutout": cutout}


def augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    for name in policy:
        x = TRANSFORMS[name](x)
    return x
