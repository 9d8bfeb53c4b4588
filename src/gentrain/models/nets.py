"""Network families for encoders and decoders, sized from the image shape.

Every convolutional network works in *levels*: encoders (VAE encoders, discriminators)
halve the side once per level, decoders (VAE decoders, generators) double it, until the
side is odd or 4, so 28x28 runs at 14 and 7, 32x32 at 16, 8 and 4, 64x64 down to 4.
Channels start at ``width`` and double per level, capped at 8x. Three families share that
plan:

- ``dcgan``: one 4x4 stride-2 (transposed) convolution per level (Radford et al. 2016);
  small and fast.
- ``dcgan_deep``: the same, plus ``depth`` 3x3 convolutions per level and a 3x3 convolution
  at full resolution (the "standard CNN" of Miyato et al. 2018, SN-GAN, Table 3).
- ``resnet``: residual blocks per level, ``depth`` extra ones at the level's resolution
  (the SN-GAN / WGAN-GP ResNets: Miyato et al. 2018 appendix B, Gulrajani et al. 2017):
  pre-activation blocks, nearest-neighbour upsampling in decoders, average pooling in
  encoders.

A fourth has no convolutions:

- ``mlp``: ``depth + 1`` fully connected hidden layers of ``16 * width`` units on the
  flattened image (the VAE of Kingma & Welling 2014 and Burda et al. 2015, whose
  likelihoods papers report). A decoder pass costs a few matrix products, so the
  k = 5000 importance-sampled NLL of a whole test set takes minutes on a CPU.

An encoder's levels (an ``mlp``'s hidden layers) are its ``blocks`` (1-based in
``forward_with_features``), which is what the VAE-GAN's learned similarity metric reads.
With ``num_classes`` the networks take class labels too (``models/conditioning.py``);
without, they are exactly the networks above, with the same parameter names.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gentrain.core.errors import ConfigError
from gentrain.models.conditioning import (
    ConditionalBatchNorm1d,
    ConditionalBatchNorm2d,
    one_hot,
    run_with_labels,
)

MLP_UNITS_PER_WIDTH = 16  # an mlp hidden layer has 16 * width units
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


def _norm(kind: str, channels: int, num_classes: int = 0, vectors: bool = False) -> nn.Module:
    """A norm layer for feature maps (or for feature vectors, an mlp's)."""
    if kind == "batch":
        if num_classes:
            conditional = ConditionalBatchNorm1d if vectors else ConditionalBatchNorm2d
            return conditional(channels, num_classes)
        return nn.BatchNorm1d(channels) if vectors else nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}; available: {', '.join(NORMS)}")


def _conv_unit(
    in_ch: int, out_ch: int, norm: str, act: nn.Module, num_classes: int = 0
) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, 1, 1), _norm(norm, out_ch, num_classes), act]


class ResidualBlock(nn.Module):
    """Pre-activation residual block: [norm, ReLU, conv3x3] x 2 plus a shortcut.

    ``resample`` is ``"up"`` (nearest x2 before the first conv), ``"down"`` (2x2 average
    pooling after the second), or ``None``. ``first`` is SN-GAN's optimised first
    discriminator block, which reads the image itself (no activation before its conv).
    With ``num_classes``, its BatchNorms are conditional and it takes labels.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        norm: str,
        resample: str | None = None,
        first: bool = False,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.resample, self.first = resample, first
        self.takes_labels = num_classes > 0
        self.norm1 = nn.Identity() if first else _norm(norm, in_ch, num_classes)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.norm2 = _norm(norm, out_ch, num_classes)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        needs_projection = in_ch != out_ch or resample is not None
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = x if self.first else F.relu(self._normed(self.norm1, x, labels))
        if self.resample == "up":
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self._normed(self.norm2, self.conv1(h), labels)))
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

    def _normed(self, norm: nn.Module, x: torch.Tensor, labels: torch.Tensor | None):
        return norm(x, labels) if getattr(norm, "takes_labels", False) else norm(x)


@dataclass
class EncoderTrunk:
    """What a family builds of an encoder: a stem on the image, one block per level (the
    VAE-GAN's feature layers), an activation after the last, and the flat size it ends at."""

    stem: nn.Module
    blocks: list[nn.Module]
    final_activation: nn.Module
    flat_features: int


@dataclass
class DecoderBody:
    """What a family builds of a decoder: the shape the latent is projected to, the
    activation after that projection, and the blocks from there to the image's logits
    (made when called, after the projection, so a seed gives the weights it always gave)."""

    start_shape: tuple[int, ...]
    project_activation: nn.Module
    blocks: Callable[[], list[nn.Module]]


def _conv_encoder(
    image_shape: tuple[int, int, int], width: int, depth: int, norm: str, deep: bool
) -> EncoderTrunk:
    """dcgan: a 4x4 stride-2 conv per level (the first unnormalised, Radford et al. 2016);
    dcgan_deep adds a 3x3 stem and ``depth`` 3x3 convs per level."""
    channels, height, image_width = image_shape
    levels = levels_for(height, image_width)
    stem: nn.Module = nn.Identity()
    in_ch = channels
    if deep:
        in_ch = max(width // 2, 1)
        stem = nn.Sequential(nn.Conv2d(channels, in_ch, 3, 1, 1), nn.LeakyReLU(0.2))
    blocks = []
    for level in range(levels):
        out_ch = _channels(width, level)
        layers = [
            nn.Conv2d(in_ch, out_ch, 4, 2, 1),
            _norm(norm if level > 0 else "none", out_ch),
            nn.LeakyReLU(0.2),
        ]
        for _ in range(depth if deep else 0):
            layers += _conv_unit(out_ch, out_ch, norm, nn.LeakyReLU(0.2))
        blocks.append(nn.Sequential(*layers))
        in_ch = out_ch
    flat = in_ch * (height >> levels) * (image_width >> levels)
    return EncoderTrunk(stem, blocks, nn.Identity(), flat)


def _resnet_encoder(
    image_shape: tuple[int, int, int], width: int, depth: int, norm: str
) -> EncoderTrunk:
    """A downsampling residual block per level (SN-GAN's optimised one first), ``depth``
    more at the level's resolution, ReLU at the end."""
    channels, height, image_width = image_shape
    levels = levels_for(height, image_width)
    blocks, in_ch = [], channels
    for level in range(levels):
        out_ch = _channels(width, level)
        layers: list[nn.Module] = [
            ResidualBlock(in_ch, out_ch, norm, resample="down", first=level == 0)
        ]
        layers += [ResidualBlock(out_ch, out_ch, norm) for _ in range(depth)]
        blocks.append(nn.Sequential(*layers))
        in_ch = out_ch
    flat = in_ch * (height >> levels) * (image_width >> levels)
    return EncoderTrunk(nn.Identity(), blocks, nn.ReLU(), flat)


def _mlp_encoder(
    image_shape: tuple[int, int, int], width: int, depth: int, norm: str
) -> EncoderTrunk:
    """``depth + 1`` fully connected layers on the flattened image (the first unnormalised)."""
    in_ch, units, blocks = math.prod(image_shape), MLP_UNITS_PER_WIDTH * width, []
    for level in range(depth + 1):
        layers = [
            nn.Linear(in_ch, units),
            _norm(norm if level > 0 else "none", units, vectors=True),
            nn.LeakyReLU(0.2),
        ]
        blocks.append(nn.Sequential(*layers))
        in_ch = units
    return EncoderTrunk(nn.Flatten(), blocks, nn.Identity(), units)


def _decoder_channels(width: int, levels: int) -> list[int]:
    """Channels after each level, from the smallest resolution up to the image's: the
    mirror of the encoder (the last level's are added by the family)."""
    return [_channels(width, level - 1) for level in reversed(range(1, levels))]


def _conv_decoder(
    image_shape: tuple[int, int, int], width: int, depth: int, norm: str, k: int, deep: bool
) -> DecoderBody:
    """dcgan: a 4x4 stride-2 transposed conv per level, the last one to the image;
    dcgan_deep: ``depth`` 3x3 convs after each, ending at width // 2 channels at full
    resolution, then a 3x3 conv to the image."""
    channels, height, image_width = image_shape
    levels = levels_for(height, image_width)
    in_ch = _channels(width, levels - 1)
    start = (in_ch, height >> levels, image_width >> levels)
    outs = _decoder_channels(width, levels) + ([max(width // 2, 1)] if deep else [])

    def blocks() -> list[nn.Module]:
        made: list[nn.Module] = []
        previous = start[0]
        for out_ch in outs:
            made += [
                nn.ConvTranspose2d(previous, out_ch, 4, 2, 1),
                _norm(norm, out_ch, k),
                nn.ReLU(),
            ]
            for _ in range(depth if deep else 0):
                made += _conv_unit(out_ch, out_ch, norm, nn.ReLU(), k)
            previous = out_ch
        if deep:
            made.append(nn.Conv2d(previous, channels, 3, 1, 1))
        else:
            made.append(nn.ConvTranspose2d(previous, channels, 4, 2, 1))
        return made

    return DecoderBody(start, nn.ReLU(), blocks)


def _resnet_decoder(
    image_shape: tuple[int, int, int], width: int, depth: int, norm: str, k: int
) -> DecoderBody:
    """An upsampling residual block per level, ``depth`` more at each resolution, then
    norm, ReLU and a 3x3 conv to the image; the projection has no activation."""
    channels, height, image_width = image_shape
    levels = levels_for(height, image_width)
    in_ch = _channels(width, levels - 1)
    start = (in_ch, height >> levels, image_width >> levels)

    def blocks() -> list[nn.Module]:
        made: list[nn.Module] = []
        previous = start[0]
        for out_ch in [*_decoder_channels(width, levels), max(width // 2, 1)]:
            made.append(ResidualBlock(previous, out_ch, norm, resample="up", num_classes=k))
            made += [ResidualBlock(out_ch, out_ch, norm, num_classes=k) for _ in range(depth)]
            previous = out_ch
        return [*made, _norm(norm, previous, k), nn.ReLU(), nn.Conv2d(previous, channels, 3, 1, 1)]

    return DecoderBody(start, nn.Identity(), blocks)


def _mlp_decoder(
    image_shape: tuple[int, int, int], width: int, depth: int, norm: str, k: int
) -> DecoderBody:
    """``depth`` hidden layers of ``16 * width`` units after the projection, then one to
    the image's pixels."""
    units = MLP_UNITS_PER_WIDTH * width

    def blocks() -> list[nn.Module]:
        made: list[nn.Module] = []
        for _ in range(depth):
            made += [nn.Linear(units, units), _norm(norm, units, k, vectors=True), nn.ReLU()]
        return [*made, nn.Linear(units, math.prod(image_shape)), nn.Unflatten(1, image_shape)]

    return DecoderBody((units,), nn.ReLU(), blocks)


#: each family's encoder trunk and decoder body, by ``model.family``
ENCODER_TRUNKS: dict[str, Callable[..., EncoderTrunk]] = {
    "dcgan": functools.partial(_conv_encoder, deep=False),
    "dcgan_deep": functools.partial(_conv_encoder, deep=True),
    "resnet": _resnet_encoder,
    "mlp": _mlp_encoder,
}
DECODER_BODIES: dict[str, Callable[..., DecoderBody]] = {
    "dcgan": functools.partial(_conv_decoder, deep=False),
    "dcgan_deep": functools.partial(_conv_decoder, deep=True),
    "resnet": _resnet_decoder,
    "mlp": _mlp_decoder,
}
FAMILIES = tuple(ENCODER_TRUNKS)


class ImageEncoder(nn.Module):
    """Image -> vector of ``out_features`` (Gaussian parameters, or a critic's logit).

    With ``num_classes``, the label enters at the head as ``conditioning`` says (see
    ``models/conditioning.py``); the convolutional trunk never sees it.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int,
        out_features: int,
        norm: str = "none",
        spectral_norm: bool = False,
        family: str = "dcgan",
        depth: int = 1,
        num_classes: int = 0,
        conditioning: str = "concat",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conditioning = conditioning if num_classes else None
        trunk = ENCODER_TRUNKS[family](image_shape, width, depth, norm)
        self.stem, self.final_activation = trunk.stem, trunk.final_activation
        self.blocks = nn.ModuleList(trunk.blocks)
        flat = trunk.flat_features
        concat = num_classes if self.conditioning == "concat" else 0
        self.head = nn.Linear(flat + concat, out_features)
        if self.conditioning == "projection":
            self.label_embedding = nn.Embedding(num_classes, flat)
        elif self.conditioning == "auxiliary":
            self.class_head = nn.Linear(flat, num_classes)
        if spectral_norm:  # every weight of the network (Miyato et al. 2018)
            for module in list(self.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    nn.utils.parametrizations.spectral_norm(module)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head_output(self.trunk(x)[0], labels)

    def forward_with_features(
        self, x: torch.Tensor, layer: int, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output and the activation of level ``layer`` (1-based; the last level at most)."""
        flat, features = self.trunk(x, layer)
        return self.head_output(flat, labels), features

    def trunk(
        self, x: torch.Tensor, layer: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The flattened features the head reads, and the activation of level ``layer``."""
        features = None
        x = self.stem(x)
        for index, block in enumerate(self.blocks, start=1):
            x = block(x)
            if index == layer:
                features = x
        return self.final_activation(x).flatten(1), features

    def head_output(self, flat: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The head on the trunk's features, with the label where it is conditioned on."""
        if self.conditioning == "concat":
            return self.head(torch.cat([flat, one_hot(labels, self.num_classes, flat)], 1))
        out = self.head(flat)
        if self.conditioning == "projection":
            out = out + (self.label_embedding(labels) * flat).sum(1, keepdim=True)
        return out


class ImageDecoder(nn.Module):
    """Latent vector -> image logits (no output activation: the model picks it).

    With ``num_classes``, the one-hot label is appended to the latent and BatchNorms are
    conditional (``models/conditioning.py``).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int,
        latent_dim: int,
        norm: str = "batch",
        family: str = "dcgan",
        depth: int = 1,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        body = DECODER_BODIES[family](image_shape, width, depth, norm, num_classes)
        self.start_shape = body.start_shape
        self.project = nn.Sequential(
            nn.Linear(latent_dim + num_classes, math.prod(self.start_shape)),
            body.project_activation,
        )
        self.blocks = nn.Sequential(*body.blocks())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if not self.num_classes:
            return self.blocks(self.project(z).view(-1, *self.start_shape))
        z = torch.cat([z, one_hot(labels, self.num_classes, z)], 1)
        return run_with_labels(self.blocks, self.project(z).view(-1, *self.start_shape), labels)
