"""How a class label enters a network (conditional models, ``model.conditional=true``).

- Decoders and generators: the label's one-hot vector is appended to the latent, and
  every BatchNorm becomes a *conditional* BatchNorm whose scale and shift are the label's
  rows of two embeddings (de Vries et al. 2017; Miyato & Koyama 2018 for GANs).
- Encoders, by ``ImageEncoder(conditioning=...)``:
  ``concat`` appends the one-hot label to the features before the head (the cVAE's
  q(z|x, y), Sohn et al. 2015); ``projection`` adds the inner product of a label
  embedding with those features to the logit (the projection discriminator, Miyato &
  Koyama 2018); ``auxiliary`` adds a class head beside the logit (ACGAN, Odena et al.
  2017).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_CONDITIONINGS = ("concat", "projection", "auxiliary")


def one_hot(labels: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """Labels as one-hot rows in ``like``'s dtype and device."""
    return F.one_hot(labels, num_classes).to(dtype=like.dtype, device=like.device)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine, then a per-class scale (from 1) and shift (from 0).

    The normalisation statistics are shared by all classes; only the affine depends on
    the label, which is how a generator draws one style in every class.
    """

    takes_labels = True
    batch_norm: type[nn.modules.batchnorm._BatchNorm] = nn.BatchNorm2d

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = self.batch_norm(channels, affine=False)
        self.scale = nn.Embedding(num_classes, channels)
        self.shift = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        per_channel = (-1, x.shape[1]) + (1,) * (x.dim() - 2)
        scale, shift = self.scale(labels).view(per_channel), self.shift(labels).view(per_channel)
        return self.norm(x) * scale + shift


class ConditionalBatchNorm1d(ConditionalBatchNorm2d):
    """The same for feature vectors (the ``mlp`` family's hidden layers)."""

    batch_norm = nn.BatchNorm1d


def run_with_labels(layers: nn.Sequential, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``layers(x)``, handing ``labels`` to the layers that take them."""
    for layer in layers:
        x = layer(x, labels) if getattr(layer, "takes_labels", False) else layer(x)
    return x
