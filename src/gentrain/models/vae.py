"""Convolutional VAE (Kingma & Welling 2014) with a choice of pixel likelihood.

Loss convention, stated because it is often got wrong: every term is *summed over the
pixels (and latent dimensions) of one image* and then *averaged over the batch*, so
``loss = E_batch[ -log p(x|z) + beta * KL(q(z|x) || N(0, I)) ]`` in nats per image,
and with ``beta = 1`` it is the negative ELBO that papers report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gentrain.errors import ConfigError
from gentrain.models.base import GenerativeModel
from gentrain.models.nets import ConvDecoder, ConvEncoder
from gentrain.optim import OptimizerFactory
from gentrain.registry import MODELS

LIKELIHOODS = ("bernoulli", "gaussian", "laplace")


@dataclass
class VAEConfig:
    name: str = "vae"
    latent_dim: int = 16
    width: int = 32  # channels of the first conv level; doubles per level
    likelihood: str = "bernoulli"  # bernoulli (BCE) | gaussian (MSE) | laplace (L1)
    likelihood_scale: float = 0.1  # sigma (gaussian) or b (laplace) on [0, 1] pixels
    beta: float = 1.0  # weight on the KL term
    kl_warmup_steps: int = 0  # beta ramps linearly from 0 over this many steps
    decoder_norm: str = "batch"  # batch | none
    encoder_norm: str = "none"  # batch | none (batch matches a VAE-GAN's encoder, for init_from)
    binarize: bool = False  # dynamic binarisation: train on x ~ Bernoulli(pixels)

    def __post_init__(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"unknown model.likelihood {self.likelihood!r}; available: {', '.join(LIKELIHOODS)}"
            )
        for key in ("latent_dim", "width"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.likelihood_scale <= 0:
            raise ConfigError(f"model.likelihood_scale must be > 0, got {self.likelihood_scale}")
        if self.beta < 0 or self.kl_warmup_steps < 0:
            raise ConfigError("model.beta and model.kl_warmup_steps must be >= 0")
        if self.binarize and self.likelihood != "bernoulli":
            raise ConfigError("model.binarize=true needs model.likelihood=bernoulli")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in closed form, summed over latents: shape (N,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def reconstruction_nll(logits: torch.Tensor, x: torch.Tensor, kind: str, scale: float):
    """-log p(x | z) per image in nats, summed over pixels: shape (N,).

    Bernoulli reads ``logits`` directly; Gaussian and Laplace use ``sigmoid(logits)`` as the
    mean, with fixed scale, and include their normalising constants.
    """
    if kind == "bernoulli":
        per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif kind == "gaussian":
        mean = torch.sigmoid(logits)
        per_pixel = 0.5 * ((x - mean) / scale).pow(2) + math.log(scale * math.sqrt(2 * math.pi))
    else:
        mean = torch.sigmoid(logits)
        per_pixel = (x - mean).abs() / scale + math.log(2 * scale)
    return per_pixel.flatten(1).sum(1)


@MODELS.register("vae")
class VAE(GenerativeModel):
    """Encoder q(z|x) = N(mu, diag(exp(logvar))), decoder p(x|z), prior N(0, I)."""

    Config = VAEConfig
    has_encoder = True
    #: init_from: checkpoints this model can start from (see gentrain/warm_start.py)
    warm_start_sources = {
        "VAE": [("encoder.", "encoder."), ("decoder.", "decoder.")],
        "VAEGAN": [("encoder.", "encoder."), ("decoder.", "decoder.")],
    }

    def __init__(self, cfg: VAEConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(image_shape, cfg.latent_dim)
        self.cfg = cfg
        self.encoder = ConvEncoder(
            image_shape, cfg.width, 2 * cfg.latent_dim, norm=cfg.encoder_norm
        )
        self.decoder = ConvDecoder(image_shape, cfg.width, cfg.latent_dim, norm=cfg.decoder_norm)
        # Counts optimiser steps for the KL warm-up; a buffer so checkpoints carry it.
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg: VAEConfig, image_shape: tuple[int, int, int]) -> VAE:
        return cls(cfg, image_shape)

    def configure_optimizers(self, factory: OptimizerFactory) -> None:
        self.add_optimizer(factory, "vae", self)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def current_beta(self) -> float:
        warmup = self.cfg.kl_warmup_steps
        ramp = min(1.0, int(self.steps_done) / warmup) if warmup else 1.0
        return self.cfg.beta * ramp

    def losses(self, x: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.decoder(z)
        nll = reconstruction_nll(logits, x, self.cfg.likelihood, self.cfg.likelihood_scale).mean()
        kl = gaussian_kl(mu, logvar).mean()
        return {"loss": nll + beta * kl, "nll": nll, "kl": kl, "elbo": -(nll + kl)}

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Dynamically binarised pixels when ``binarize`` (a fresh draw each time)."""
        return torch.bernoulli(x) if self.cfg.binarize else x

    def training_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        beta = self.current_beta()
        terms = self.losses(self.prepare(x), beta)
        norms = self.update({"vae": terms["loss"]})
        self.steps_done += 1
        logs = {k: v.detach() for k, v in terms.items()}
        logs["beta"] = torch.tensor(beta)
        logs["grad_norm"] = norms["vae"]
        return logs

    @torch.no_grad()
    def validation_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.losses(self.prepare(x), self.cfg.beta)

    @torch.no_grad()
    def importance_weighted_nll(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """-log p(x) per image, estimated with k importance samples (Burda et al. 2015).

        log p(x) >= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x); the bound
        tightens as k grows and equals the ELBO at k = 1, so this NLL is <= -ELBO.
        """
        x = self.prepare(x)
        mu, logvar = self.encode(x)
        std = (0.5 * logvar).exp()
        n = x.shape[0]
        z = mu.unsqueeze(1) + std.unsqueeze(1) * torch.randn(n, k, mu.shape[1], device=x.device)
        logits = self.decoder(z.flatten(0, 1))
        repeated = x.unsqueeze(1).expand(n, k, *x.shape[1:]).flatten(0, 1)
        log_px_z = -reconstruction_nll(
            logits, repeated, self.cfg.likelihood, self.cfg.likelihood_scale
        ).view(n, k)
        log_normal = -0.5 * math.log(2 * math.pi)
        log_pz = (log_normal - 0.5 * z.pow(2)).sum(-1)
        eps = (z - mu.unsqueeze(1)) / std.unsqueeze(1)
        log_qz = (log_normal - 0.5 * eps.pow(2) - 0.5 * logvar.unsqueeze(1)).sum(-1)
        log_w = log_px_z + log_pz - log_qz
        return -(torch.logsumexp(log_w, dim=1) - math.log(k))

    def _mean_image(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)  # Bernoulli mean, and the Gaussian/Laplace mean we use

    @torch.no_grad()
    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        return self._mean_image(self.decoder(noise))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.encode(x)
        return self._mean_image(self.decoder(mu))
