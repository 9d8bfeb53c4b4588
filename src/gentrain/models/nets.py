"""Convolutional network families, sized from the image shape.

Every network works in *levels*: encoders (VAE encoders, discriminators) halve the side
once per level, decoders (VAE decoders, generators) double it, until the side is odd or 4,
so 28x28 runs at 14 and 7, 32x32 at 16, 8 and 4, 64x64 down to 4. Channels start at
``width`` and double per level, capped at 8x. Three families share that plan:

- ``dcgan``: one 4x4 stride-2 (transposed) convolution per level (Radford et al. 2016);
  small and fast.
- ``dcgan_deep``: the same, plus ``depth`` 3x3 convolutions per level and a 3x3 convolution
  at full resolution (the "standard CNN" of Miyato et al. 2018, SN-GAN, Table 3).
- ``resnet``: residual blocks per level, ``depth`` extra ones at the level's resolution
  (the SN-GAN / WGAN-GP ResNets: Miyato et al. 2018 appendix B, Gulrajani et al. 2017):
  pre-activation blocks, nearest-neighbour upsampling in decoders, average pooling in
  encoders.

An encoder's levels are its ``blocks`` (1-based in ``forward_with_features``), which is
what the VAE-GAN's learned similarity metric reads.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gentrain.errors import ConfigError

FAMILIES = ("dcgan", "dcgan_deep", "resnet")
NORMS = ("batch", "none")


def levels_for(height: int, width: int) -> int:
    """Number of stride-2 levels for an image; ConfigError if the size cannot be handled."""
    if height % 4 or width % 4 or min(height, width) < 16:
        raise ConfigError(
            f"image size {height}x{width} cannot be handled: height and width must be "
            "multiples of 4 and at least 16 (e.g. 28, 32, 64); set dataset.image_size"
        )
    levels = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) > 4:
        height, width, levels = height // 2, width // 2, levels + 1
    return levels


def check_architecture(family: str, depth: int, width: int, *norms: str) -> None:
    """ConfigError for an unknown family or norm, or sizes below 1 (depth below 0)."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown model.family {family!r}; available: {', '.join(FAMILIES)}")
    if depth < 0:
        raise ConfigError(f"model.depth must be >= 0, got {depth}")
    if width < 2:
        raise ConfigError(f"model.width must be >= 2, got {width}")
    for norm in norms:
        if norm not in NORMS:
            raise ConfigError(f"unknown norm {norm!r}; available: {', '.join(NORMS)}")


def _channels(width: int, level: int) -> int:
    return width * min(2**level, 8)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}; available: {', '.join(NORMS)}")


def _conv_unit(in_ch: int, out_ch: int, norm: str, act: nn.Module) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, 1, 1), _norm(norm, out_ch), act]


class ResidualBlock(nn.Module):
    """Pre-activation residual block: [norm, ReLU, conv3x3] x 2 plus a shortcut.

    ``resample`` is ``"up"`` (nearest x2 before the first conv), ``"down"`` (2x2 average
    pooling after the second), or ``None``. ``first`` is SN-GAN's optimised first
    discriminator block, which reads the image itself (no activation before its conv).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        norm: str,
        resample: str | None = None,
        first: bool = False,
    ) -> None:
        super().__init__()
        self.resample, self.first = resample, first
        self.norm1 = nn.Identity() if first else _norm(norm, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.norm2 = _norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        needs_projection = in_ch != out_ch or resample is not None
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(self.norm1(x))
        if self.resample == "up":
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        if self.resample == "down":
            h = F.avg_pool2d(h, 2)
            # The optimised first block pools before its 1x1 conv (cheaper, same function).
            x = (
                self.shortcut(F.avg_pool2d(x, 2))
                if self.first
                else F.avg_pool2d(self.shortcut(x), 2)
            )
            return h + x
        return h + self.shortcut(x)


class ConvEncoder(nn.Module):
    """Image -> vector of ``out_features`` (Gaussian parameters, or a critic's logit)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int,
        out_features: int,
        norm: str = "none",
        spectral_norm: bool = False,
        family: str = "dcgan",
        depth: int = 1,
    ) -> None:
        super().__init__()
        channels, height, image_width = image_shape
        levels = levels_for(height, image_width)
        self.stem: nn.Module = nn.Identity()
        self.final_activation: nn.Module = nn.Identity()
        blocks: list[nn.Module] = []
        in_ch = channels
        if family == "dcgan_deep":
            in_ch = max(width // 2, 1)
            self.stem = nn.Sequential(nn.Conv2d(channels, in_ch, 3, 1, 1), nn.LeakyReLU(0.2))
        for level in range(levels):
            out_ch = _channels(width, level)
            if family == "resnet":
                layers: list[nn.Module] = [
                    ResidualBlock(in_ch, out_ch, norm, resample="down", first=level == 0)
                ]
                layers += [ResidualBlock(out_ch, out_ch, norm) for _ in range(depth)]
            else:
                # DCGAN leaves the first level unnormalised (Radford et al. 2016).
                level_norm = norm if level > 0 else "none"
                layers = [
                    nn.Conv2d(in_ch, out_ch, 4, 2, 1),
                    _norm(level_norm, out_ch),
                    nn.LeakyReLU(0.2),
                ]
                if family == "dcgan_deep":
                    for _ in range(depth):
                        layers += _conv_unit(out_ch, out_ch, norm, nn.LeakyReLU(0.2))
            blocks.append(nn.Sequential(*layers))
            in_ch = out_ch
        if family == "resnet":
            self.final_activation = nn.ReLU()
        self.blocks = nn.ModuleList(blocks)
        flat = in_ch * (height >> levels) * (image_width >> levels)
        self.head = nn.Linear(flat, out_features)
        if spectral_norm:  # every weight of the network (Miyato et al. 2018)
            for module in list(self.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(module)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_activation(x).flatten(1))

    def forward_with_features(self, x: torch.Tensor, layer: int):
        """Output and the activation of level ``layer`` (1-based; the last level at most)."""
        features = None
        x = self.stem(x)
        for index, block in enumerate(self.blocks, start=1):
            x = block(x)
            if index == layer:
                features = x
        return self.head(self.final_activation(x).flatten(1)), features


class ConvDecoder(nn.Module):
    """Latent vector -> image logits (no output activation: the model picks it)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int,
        latent_dim: int,
        norm: str = "batch",
        family: str = "dcgan",
        depth: int = 1,
    ) -> None:
        super().__init__()
        channels, height, image_width = image_shape
        levels = levels_for(height, image_width)
        top = _channels(width, levels - 1)
        self.start_shape = (top, height >> levels, image_width >> levels)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, top * self.start_shape[1] * self.start_shape[2]),
            nn.ReLU() if family != "resnet" else nn.Identity(),
        )
        # Channels after each level, from the smallest resolution up to the image's:
        # the mirror of the encoder, ending at width // 2 at full resolution (dcgan ends
        # directly at the image's channels).
        outs = [_channels(width, level - 1) for level in reversed(range(1, levels))]
        blocks: list[nn.Module] = []
        in_ch = top
        if family == "dcgan":
            for out_ch in outs:
                blocks += [nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1), _norm(norm, out_ch)]
                blocks.append(nn.ReLU())
                in_ch = out_ch
            blocks.append(nn.ConvTranspose2d(in_ch, channels, 4, 2, 1))
        else:
            for out_ch in [*outs, max(width // 2, 1)]:
                if family == "resnet":
                    blocks.append(ResidualBlock(in_ch, out_ch, norm, resample="up"))
                    blocks += [ResidualBlock(out_ch, out_ch, norm) for _ in range(depth)]
                else:
                    blocks += [nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1), _norm(norm, out_ch)]
                    blocks.append(nn.ReLU())
                    for _ in range(depth):
                        blocks += _conv_unit(out_ch, out_ch, norm, nn.ReLU())
                in_ch = out_ch
            if family == "resnet":
                blocks += [_norm(norm, in_ch), nn.ReLU()]
            blocks.append(nn.Conv2d(in_ch, channels, 3, 1, 1))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.project(z).view(-1, *self.start_shape))
