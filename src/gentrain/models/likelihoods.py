"""The VAE's pixel likelihoods p(x | z), one table entry each, resolved once by the model.

Every entry reads the decoder's logits and includes its normalising constants, so NLLs are
in nats and comparable between likelihoods of the same kind of data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributions import ContinuousBernoulli


@dataclass(frozen=True)
class PixelLikelihood:
    """-log p(x | z) per pixel from the decoder's logits (with the fixed ``scale`` and the
    learned per-channel ``log_scale`` where the likelihood has them), and the image that
    the logits mean (what samples and reconstructions show)."""

    nll: Callable[[torch.Tensor, torch.Tensor, float, torch.Tensor | None], torch.Tensor]
    mean: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid
    learns_scale: bool = False  # a learned per-channel log scale (the discretised logistic)


def discretized_logistic_nll(
    logits: torch.Tensor, x: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """-log P(x) per pixel for 8-bit pixels x in {0, 1/255, ..., 1}: the mass of a logistic
    with mean sigmoid(logits) and scale exp(log_scale) on x's bin, the edge bins taking the
    tails (Salimans et al. 2017, PixelCNN++). A true probability of the 256 grey levels,
    so its NLL is in nats of the 8-bit image, comparable between models."""
    centered = x - torch.sigmoid(logits)
    inv_scale = torch.exp(-log_scale)
    plus, minus = inv_scale * (centered + 0.5 / 255), inv_scale * (centered - 0.5 / 255)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus): the bin at 0
    log_survival_minus = -F.softplus(minus)  # log (1 - sigmoid(minus)): the bin at 1
    mass = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_scale * centered  # density at the centre times the bin width, if mass underflows
    log_density = mid - log_scale - 2.0 * F.softplus(mid) - math.log(255.0)
    interior = torch.where(mass > 1e-5, mass.clamp(min=1e-12).log(), log_density)
    log_p = torch.where(
        x < 0.5 / 255, log_cdf_plus, torch.where(x > 1 - 0.5 / 255, log_survival_minus, interior)
    )
    return -log_p


def _gaussian(logits: torch.Tensor, x: torch.Tensor, scale: float, _: object) -> torch.Tensor:
    return 0.5 * ((x - torch.sigmoid(logits)) / scale).pow(2) + math.log(
        scale * math.sqrt(2 * math.pi)
    )


def _laplace(logits: torch.Tensor, x: torch.Tensor, scale: float, _: object) -> torch.Tensor:
    return (x - torch.sigmoid(logits)).abs() / scale + math.log(2 * scale)


def _logistic(
    logits: torch.Tensor, x: torch.Tensor, _: float, log_scale: torch.Tensor | None
) -> torch.Tensor:
    assert log_scale is not None, "the discretised logistic learns its scale"
    return discretized_logistic_nll(logits, x, log_scale.view(1, -1, 1, 1))


#: every likelihood by its config name (``model.likelihood``)
LIKELIHOODS: dict[str, PixelLikelihood] = {
    # Bernoulli: binary cross-entropy on the logits
    "bernoulli": PixelLikelihood(
        lambda logits, x, *_: F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    ),
    # a proper density on [0, 1] (Loaiza-Ganem & Cunningham 2019); its mean is not sigmoid
    "continuous_bernoulli": PixelLikelihood(
        lambda logits, x, *_: -ContinuousBernoulli(logits=logits).log_prob(x),
        mean=lambda logits: ContinuousBernoulli(logits=logits).mean,
    ),
    "discretized_logistic": PixelLikelihood(_logistic, learns_scale=True),
    "gaussian": PixelLikelihood(_gaussian),
    "laplace": PixelLikelihood(_laplace),
}


def reconstruction_nll(
    logits: torch.Tensor,
    x: torch.Tensor,
    kind: str,
    scale: float,
    log_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """-log p(x | z) per image in nats under likelihood ``kind``, summed over pixels: (N,)."""
    return LIKELIHOODS[kind].nll(logits, x, scale, log_scale).flatten(1).sum(1)
