"""Convolutional building blocks sized from the image shape.

Every network halves (encoders, discriminators) or doubles (decoders, generators) the
spatial size with 4x4 stride-2 convolutions until the side is odd or 4, so 28x28 runs
at 14 and 7, 32x32 at 16, 8 and 4, 64x64 down to 4. Channels start at ``width`` and
double per level, capped at 8x.
"""

from __future__ import annotations

from torch import nn

from gentrain.errors import ConfigError


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


def _channels(width: int, level: int) -> int:
    return width * min(2**level, 8)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}; available: batch, none")


class ConvEncoder(nn.Module):
    """Image -> vector of ``out_features`` (Gaussian parameters, or a critic's logit).

    ``features(x, layer)`` returns the activation after conv block ``layer`` (1-based),
    which the VAE-GAN uses as its learned similarity metric.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int,
        out_features: int,
        norm: str = "none",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        channels, height, wide = image_shape
        levels = levels_for(height, wide)
        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        blocks, in_ch = [], channels
        for level in range(levels):
            out_ch = _channels(width, level)
            norm_layer = _norm(norm, out_ch) if level > 0 else nn.Identity()
            blocks.append(
                nn.Sequential(
                    wrap(nn.Conv2d(in_ch, out_ch, 4, 2, 1)), norm_layer, nn.LeakyReLU(0.2)
                )
            )
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        flat = in_ch * (height >> levels) * (wide >> levels)
        self.head = wrap(nn.Linear(flat, out_features))

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x.flatten(1))

    def forward_with_features(self, x, layer: int):
        """Output and the activation of block ``layer`` (1-based; the last block at most)."""
        features = None
        for index, block in enumerate(self.blocks, start=1):
            x = block(x)
            if index == layer:
                features = x
        return self.head(x.flatten(1)), features


class ConvDecoder(nn.Module):
    """Latent vector -> image logits (no output activation: the model picks it)."""

    def __init__(
        self, image_shape: tuple[int, int, int], width: int, latent_dim: int, norm: str = "batch"
    ) -> None:
        super().__init__()
        channels, height, wide = image_shape
        levels = levels_for(height, wide)
        top = _channels(width, levels - 1)
        self.start_shape = (top, height >> levels, wide >> levels)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, top * self.start_shape[1] * self.start_shape[2]),
            nn.ReLU(),
        )
        blocks, in_ch = [], top
        for level in reversed(range(1, levels)):
            out_ch = _channels(width, level - 1)
            blocks += [nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1), _norm(norm, out_ch), nn.ReLU()]
            in_ch = out_ch
        blocks.append(nn.ConvTranspose2d(in_ch, channels, 4, 2, 1))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z):
        return self.blocks(self.project(z).view(-1, *self.start_shape))
