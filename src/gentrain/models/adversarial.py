"""Adversarial losses on discriminator logits, shared by the GAN and the VAE-GAN.

Each function returns a scalar to *minimise* (mean over the batch). ``real`` and ``fake``
are raw discriminator outputs (logits, or critic scores for hinge and Wasserstein).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from gentrain.errors import ConfigError

GAN_LOSSES = ("nonsaturating", "saturating", "hinge", "lsgan", "wgan_gp")


def check_loss(kind: str, allowed: tuple[str, ...] = GAN_LOSSES, key: str = "model.loss") -> None:
    if kind not in allowed:
        raise ConfigError(f"unknown {key} {kind!r}; available: {', '.join(allowed)}")


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """D's loss on one real and one fake batch: the negative of the GAN value it maximises."""
    if kind in ("nonsaturating", "saturating"):  # -[log D(x) + log(1 - D(G(z)))]
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "lsgan":
        return 0.5 * ((real - 1.0).pow(2).mean() + fake.pow(2).mean())
    if kind == "wgan_gp":  # the penalty is added by the caller
        return fake.mean() - real.mean()
    raise ConfigError(f"unknown GAN loss {kind!r}")


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """G's loss on D's output for a fake batch."""
    if kind == "nonsaturating":  # -log D(G(z)): strong gradients when D rejects the fakes
        return F.softplus(-fake).mean()
    if kind == "saturating":  # log(1 - D(G(z))): Goodfellow's minimax form, as in the paper
        return -F.softplus(fake).mean()
    if kind in ("hinge", "wgan_gp"):
        return -fake.mean()
    if kind == "lsgan":
        return 0.5 * (fake - 1.0).pow(2).mean()
    raise ConfigError(f"unknown GAN loss {kind!r}")


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


def real_probability(kind: str, logits: torch.Tensor) -> torch.Tensor:
    """What to log as "D(x)": a probability for the logistic losses, the raw score otherwise."""
    if kind in ("nonsaturating", "saturating"):
        return torch.sigmoid(logits).mean()
    return logits.mean()
