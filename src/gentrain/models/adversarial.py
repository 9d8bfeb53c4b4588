"""Adversarial losses on discriminator logits, shared by the GAN and the VAE-GAN.

Each function returns a scalar to *minimise* (mean over the batch). ``real`` and ``fake``
are raw discriminator outputs (logits, or critic scores for hinge and Wasserstein).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gentrain.core.errors import ConfigError


@dataclass(frozen=True)
class GANLoss:
    """One adversarial objective, resolved once by a model from its config name: D's loss
    on (real, fake) scores, G's loss on fake scores, whether the scores are logits of a
    probability (what "D(x)" logs), whether D's loss needs WGAN-GP's gradient penalty, and
    the optimiser settings its authors trained with (None: the model's own)."""

    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]
    logistic: bool = False
    gradient_penalty: bool = False
    optimizer: dict[str, Any] | None = None

    def real_probability(self, scores: torch.Tensor) -> torch.Tensor:
        """What to log as "D(x)": a probability for the logistic losses, the raw score
        otherwise."""
        return torch.sigmoid(scores).mean() if self.logistic else scores.mean()


def _logistic_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()  # -[log D(x) + log(1 - D(G(z)))]


#: every loss by its config name; the models pick from these (``check_loss``)
GAN_LOSSES: dict[str, GANLoss] = {
    # -log D(G(z)): strong gradients when D rejects the fakes
    "nonsaturating": GANLoss(_logistic_d, lambda fake: F.softplus(-fake).mean(), logistic=True),
    # log(1 - D(G(z))): Goodfellow's minimax form, as in the paper
    "saturating": GANLoss(_logistic_d, lambda fake: -F.softplus(fake).mean(), logistic=True),
    "hinge": GANLoss(
        lambda real, fake: F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean(),
        lambda fake: -fake.mean(),
    ),
    "lsgan": GANLoss(
        lambda real, fake: 0.5 * ((real - 1.0).pow(2).mean() + fake.pow(2).mean()),
        lambda fake: 0.5 * (fake - 1.0).pow(2).mean(),
    ),
    # the Wasserstein critic, with Gulrajani et al.'s penalty and Adam settings
    "wgan_gp": GANLoss(
        lambda real, fake: fake.mean() - real.mean(),
        lambda fake: -fake.mean(),
        gradient_penalty=True,
        optimizer={"lr": 1e-4, "betas": (0.0, 0.9)},
    ),
}
#: the losses whose scores are probabilities' logits (the VAE-GAN's paper form needs that)
LOGISTIC_LOSSES = tuple(name for name, loss in GAN_LOSSES.items() if loss.logistic)


def check_loss(kind: str, allowed: tuple[str, ...], key: str = "model.loss") -> None:
    if kind not in allowed:
        raise ConfigError(f"unknown {key} {kind!r}; available: {', '.join(allowed)}")


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - 1)^2] on interpolates."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


def r1_penalty(real_scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[||grad_x D(x)||_2^2] on real images only, from the
    scores D gave ``real`` (which must require grad); the caller weighs it by gamma / 2.
    It keeps D flat on the data manifold, which makes the non-saturating GAN converge."""
    (grad,) = torch.autograd.grad(real_scores.sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(1).mean()
