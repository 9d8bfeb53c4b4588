"""Convolutional VAE (Kingma & Welling 2014) with a choice of pixel likelihood.

Loss convention, stated because it is often got wrong: every term is *summed over the
pixels (and latent dimensions) of one image* and then *averaged over the batch*, so
``loss = E_batch[ -log p(x|z) + beta * KL(q(z|x) || N(0, I)) ]`` in nats per image,
and with ``beta = 1`` it is the negative ELBO that papers report.

With ``conditional``, it is the conditional VAE of Sohn et al. (2015): q(z|x, y) and
p(x|z, y) read the label y, the prior stays N(0, I), and the ELBO and NLL bound
log p(x | y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gentrain.core.errors import ConfigError, require_at_least
from gentrain.core.registry import MODELS
from gentrain.core.terms import LoggedTerms
from gentrain.data.batch import Batch
from gentrain.models.base import GenerativeModel
from gentrain.models.latent_prior import check_prior_config, latent_prior_for
from gentrain.models.likelihoods import LIKELIHOODS
from gentrain.models.nets import ImageDecoder, ImageEncoder, check_architecture


@dataclass
class VAEConfig:
    name: str = "vae"
    latent_dim: int = 32
    family: str = "dcgan_deep"  # dcgan | dcgan_deep | resnet | mlp (see models/nets.py)
    width: int = 32  # channels of the first conv level, doubling per level (mlp: 16x units)
    depth: int = 1  # extra 3x3 convs / residual blocks per level; mlp: depth + 1 layers
    # bernoulli (BCE) | continuous_bernoulli | discretized_logistic (8-bit pixels, learned
    # scale) | gaussian (MSE) | laplace (L1)
    likelihood: str = "bernoulli"
    likelihood_scale: float = 0.1  # sigma (gaussian), b (laplace), initial s (logistic)
    beta: float = 1.0  # weight on the KL term
    kl_warmup_steps: int = 0  # beta ramps linearly from 0 over this many steps
    free_bits: float = 0.0  # nats per latent dimension below which KL is not penalised
    decoder_norm: str = "batch"  # batch | none
    encoder_norm: str = "none"  # batch | none (none matches the VAE-GAN's, for init_from)
    binarize: bool = True  # dynamic binarisation: train on x ~ Bernoulli(pixels)
    # Samples' codes: 0 draws them from N(0, I); K > 0 from a K-component Gaussian mixture
    # fitted to the posterior means of prior_fit_images training images at each epoch's end
    # (Ghosh et al. 2020). The ELBO and the NLL keep N(0, I). See models/latent_prior.py.
    prior_components: int = 20
    prior_fit_images: int = 20_000
    conditional: bool = False  # cVAE: the class label into encoder and decoder
    num_classes: int | None = None  # conditional: null = the dataset's (checked if set)

    def __post_init__(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"unknown model.likelihood {self.likelihood!r}; available: {', '.join(LIKELIHOODS)}"
            )
        check_architecture(self.family, self.depth, self.width, self.decoder_norm)
        check_architecture(self.family, self.depth, self.width, self.encoder_norm)
        require_at_least(self, "model", 1, "latent_dim")
        if self.likelihood_scale <= 0:
            raise ConfigError(f"model.likelihood_scale must be > 0, got {self.likelihood_scale}")
        require_at_least(self, "model", 0, "beta", "kl_warmup_steps", "free_bits")
        check_prior_config(self)
        if self.binarize and self.likelihood != "bernoulli":
            raise ConfigError(
                f"model.likelihood={self.likelihood} models grey levels, but model.binarize=true "
                "(the default) trains on binarised pixels; add model.binarize=false"
            )


def posterior_encoder(
    cfg: Any, image_shape: tuple[int, int, int], num_classes: int = 0
) -> ImageEncoder:
    """q(z|x) (q(z|x, y) with classes) as a conv encoder to each latent's mean and
    log-variance: the VAE's and the VAE-GAN's (same config keys), so that init_from maps
    one onto the other."""
    return ImageEncoder(
        image_shape,
        cfg.width,
        2 * cfg.latent_dim,
        norm=cfg.encoder_norm,
        family=cfg.family,
        depth=cfg.depth,
        num_classes=num_classes,
        conditioning="concat",
    )


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in closed form, summed over latents: shape (N,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def free_bits_kl(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The batch's KL with each latent dimension's batch mean floored at ``free_bits`` nats
    (Kingma et al. 2016, IAF, eq. 15): dimensions under the floor get no KL gradient, so
    the encoder is not pushed to switch them off early in training."""
    per_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(0)
    return per_dim.clamp(min=free_bits).sum()


@MODELS.register("vae")
class VAE(GenerativeModel):
    """Encoder q(z|x) = N(mu, diag(exp(logvar))), decoder p(x|z), prior N(0, I)."""

    Config = VAEConfig
    optimizer_defaults = {"lr": 1e-3}  # Adam's own default
    logged_terms = LoggedTerms(
        by_network={"vae": ("loss", "nll", "kl")}, watched=("loss",), first=("loss", "nll", "kl")
    )
    has_encoder = True
    IWAE_IMAGES_PER_PASS = 8192  # decoder batch of the NLL estimate: bounds its memory
    network_roles = {"encoder": "encoder", "decoder": "decoder"}

    def __init__(
        self, cfg: VAEConfig, image_shape: tuple[int, int, int], num_classes: int = 0
    ) -> None:
        super().__init__(image_shape, cfg.latent_dim, num_classes)
        self.cfg = cfg
        arch = {"family": cfg.family, "depth": cfg.depth, "num_classes": num_classes}
        self.encoder = posterior_encoder(cfg, image_shape, num_classes)
        self.decoder = ImageDecoder(
            image_shape, cfg.width, cfg.latent_dim, norm=cfg.decoder_norm, **arch
        )
        self.likelihood = LIKELIHOODS[cfg.likelihood]
        self.pixel_log_scale = None  # the discretised logistic's learned log s per channel
        if self.likelihood.learns_scale:
            initial = torch.full((image_shape[0],), math.log(cfg.likelihood_scale))
            self.pixel_log_scale = nn.Parameter(initial)
        # Counts optimiser steps for the KL warm-up; a buffer so checkpoints carry it.
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.latent_prior = latent_prior_for(cfg, num_classes)

    def networks(self) -> dict[str, nn.Module]:
        return {"vae": self}  # one optimiser for encoder, decoder (and a learned scale)

    def encode(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, labels).chunk(2, dim=1)
        return mu, logvar

    def current_beta(self) -> float | torch.Tensor:
        """beta, ramped up over ``kl_warmup_steps``; while it ramps, a 0-d tensor on the
        model's device, so that no step waits for the host to read the step counter."""
        warmup = self.cfg.kl_warmup_steps
        if not warmup:
            return self.cfg.beta
        return self.cfg.beta * (self.steps_done.float() / warmup).clamp(max=1.0)

    def losses(
        self, x: torch.Tensor, beta: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x, labels)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        nll = self.pixel_nll(self.decoder(z, labels), x).mean()
        kl = gaussian_kl(mu, logvar).mean()
        penalised = free_bits_kl(mu, logvar, self.cfg.free_bits) if self.cfg.free_bits else kl
        return {"loss": nll + beta * penalised, "nll": nll, "kl": kl, "elbo": -(nll + kl)}

    def pixel_nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per image under the configured likelihood."""
        per_pixel = self.likelihood.nll(logits, x, self.cfg.likelihood_scale, self.pixel_log_scale)
        return per_pixel.flatten(1).sum(1)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Dynamically binarised pixels when ``binarize`` (a fresh draw each time)."""
        return torch.bernoulli(x) if self.cfg.binarize else x

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        beta = self.current_beta()
        terms = self.losses(self.prepare(batch.images), beta, self.batch_labels(batch))
        norms = self.update({"vae": terms["loss"]})
        self.steps_done += 1
        logs = {k: v.detach() for k, v in terms.items()}
        # on the model's device, like the rest
        logs["beta"] = torch.as_tensor(beta, dtype=terms["loss"].dtype, device=terms["loss"].device)
        logs["grad_norm"] = norms["vae"]
        return logs

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.losses(self.prepare(batch.images), self.cfg.beta, self.batch_labels(batch))

    @torch.no_grad()
    def importance_weighted_nll(
        self, x: torch.Tensor, k: int, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """-log p(x) per image (-log p(x|y) for a conditional model, given ``labels``),
        estimated with k importance samples (Burda et al. 2015).

        log p(x) >= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x); the bound
        tightens as k grows and equals the ELBO at k = 1, so this NLL is <= -ELBO.
        """
        x = self.prepare(x)
        labels = self.batch_labels(Batch(x, labels))
        mu, logvar = self.encode(x, labels)
        std = (0.5 * logvar).exp()
        n = x.shape[0]
        z = mu.unsqueeze(1) + std.unsqueeze(1) * torch.randn(n, k, mu.shape[1], device=x.device)
        # Decode the n*k samples a chunk of k at a time: k=5000 at once would not fit.
        chunk = max(1, self.IWAE_IMAGES_PER_PASS // n)
        parts = []
        for i in range(0, k, chunk):
            draws = z[:, i : i + chunk]
            repeat = draws.shape[1]
            y = None if labels is None else labels.repeat_interleave(repeat)
            logits = self.decoder(draws.flatten(0, 1), y)
            parts.append(-self.pixel_nll(logits, x.repeat_interleave(repeat, dim=0)).view(n, -1))
        log_px_z = torch.cat(parts, dim=1)
        log_normal = -0.5 * math.log(2 * math.pi)
        log_pz = (log_normal - 0.5 * z.pow(2)).sum(-1)
        eps = (z - mu.unsqueeze(1)) / std.unsqueeze(1)
        log_qz = (log_normal - 0.5 * eps.pow(2) - 0.5 * logvar.unsqueeze(1)).sum(-1)
        log_w = log_px_z + log_pz - log_qz
        return -(torch.logsumexp(log_w, dim=1) - math.log(k))

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = self.labels_for(len(noise), labels, noise.device)
        return self.decode(self.prior_codes(noise, labels), labels)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The mean image of codes ``z`` (of classes ``labels``)."""
        return self.likelihood.mean(self.decoder(z, labels))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = self.batch_labels(Batch(x, labels))
        mu, _ = self.encode(x, labels)
        return self.decode(mu, labels)
