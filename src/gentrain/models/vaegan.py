"""VAE-GAN: Larsen, Sønderby, Larochelle & Winther, "Autoencoding beyond pixels using a
learned similarity metric", ICML 2016 (arXiv:1512.09300).

A VAE whose decoder is also a GAN generator, and whose reconstruction error is measured
in the feature space of the GAN's discriminator instead of pixel space. Per batch X:

    mu, logvar = Enc(X);  Z = mu + sigma * eps;  X~ = Dec(Z);  Zp ~ N(0, I);  Xp = Dec(Zp)
    L_prior = KL(q(Z|X) || N(0, I))                                   (summed over latents)
    L_llike = -log N(Dis_l(X) | Dis_l(X~), I)
            = 1/2 ||Dis_l(X) - Dis_l(X~)||^2 + const                  (summed over features)
    L_GAN   = log Dis(X) + log(1 - Dis(X~)) + log(1 - Dis(Xp))

Each network is updated from its own loss only (Algorithm 1 of the paper):

    Enc <- beta * L_prior + L_llike + w * L_pixel
    Dec <- gamma * L_llike + w * L_pixel + a * (adversarial loss of X~ and Xp)
                                   (-L_GAN's fake terms, or the non-saturating form)
    Dis <- -L_GAN                  (never L_llike)

L_pixel = -log Bernoulli(X | X~), summed over pixels, is weighted by w =
``pixel_weight`` (0 is the paper), the adversarial term by a = ``adversarial_weight``.
The three gradients are taken with ``torch.autograd.grad`` per parameter set, from one
shared forward pass, before any parameter moves. (Summing the losses and calling
``backward`` once, as some libraries do, sends -L_GAN's gradient into the decoder with
the wrong sign; tests/test_models.py checks this cannot happen here.) Every loss is
summed per image and averaged over the batch, like the VAE's.

With ``conditional``, every network reads the label y of X: Enc(X, y) as the cVAE's,
Dec(Z, y) with conditional BatchNorm, Dis(X, y) with a projection head (as the cGAN's);
Xp = Dec(Zp, y) draws the batch's classes. The losses and who minimises which are the
same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gentrain.core.errors import ConfigError, require_at_least
from gentrain.core.registry import MODELS
from gentrain.core.terms import LoggedTerms
from gentrain.data.batch import Batch
from gentrain.models.adversarial import (
    GAN_LOSSES,
    LOGISTIC_LOSSES,
    check_loss,
)
from gentrain.models.augment import augment, augment_alike, parse_policy
from gentrain.models.base import GenerativeModel
from gentrain.models.gan import to_signed
from gentrain.models.latent_prior import check_prior_config, latent_prior_for
from gentrain.models.nets import ImageDecoder, ImageEncoder, check_architecture
from gentrain.models.vae import gaussian_kl, posterior_encoder


@dataclass
class VAEGANConfig:
    name: str = "vaegan"
    latent_dim: int = 32
    family: str = "dcgan_deep"  # dcgan | dcgan_deep | resnet | mlp, for all three networks
    width: int = 32  # channels of each first conv level, doubling per level (mlp: 16x units)
    depth: int = 1  # extra 3x3 convs / residual blocks per level; mlp: depth + 1 layers
    beta: float = 1.0  # weight on L_prior in the encoder's loss (the paper's 1)
    gamma: float = 1.0  # weight on L_llike in the decoder's loss (the paper's gamma)
    # Weight of a pixel-space Bernoulli NLL added to the encoder's and decoder's losses
    # (0: the paper, features only). It anchors reconstructions to the input's pixels.
    pixel_weight: float = 1.0
    # Weight of the adversarial loss (of X~ and Xp) in the decoder's loss. The pixel and
    # feature terms are sums over hundreds of values per image, the GAN term one logit:
    # at weight 1 the decoder barely hears D, and its prior samples stay VAE-blurry.
    adversarial_weight: float = 1.0
    # Updates of the three networks per data batch, each on its own slice (as the GAN's):
    # batch 64 -> 4 updates on 16, which halves the time to a given FID on a CPU
    updates_per_batch: int = 4
    feature_layer: int = -1  # Dis_l: 1-based conv block of D; negative counts from the end
    gan_loss: str = "nonsaturating"  # nonsaturating | saturating (the paper's log(1 - D))
    d_norm: str = "none"  # batch | none: normalisation inside D
    spectral_norm: bool = True  # spectral normalisation on every D layer
    encoder_norm: str = "none"  # batch | none (none matches a default VAE, for init_from)
    equilibrium_gate: bool = False  # skip D / the decoder's GAN term when one side wins
    equilibrium: float = 0.68  # target BCE of D (ln 2 = 0.69 is chance)
    margin: float = 0.35
    conditional: bool = False  # the label into encoder, decoder and discriminator
    num_classes: int | None = None  # conditional: null = the dataset's (checked if set)
    # Samples' codes: 0 draws them from N(0, I) (the paper); K > 0 from a K-component
    # Gaussian mixture fitted to the posterior means of prior_fit_images training images
    # at each epoch's end (Ghosh et al. 2020). Training is unchanged. models/latent_prior.py
    prior_components: int = 20
    prior_fit_images: int = 20_000
    # DiffAugment for D's inputs (Zhao et al. 2020): [] or any of [color, translation,
    # cutout]. X and its reconstruction X~ get the same transform, Xp its own.
    augment: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_loss(self.gan_loss, LOGISTIC_LOSSES, key="model.gan_loss")
        parse_policy(self.augment)
        check_prior_config(self)
        check_architecture(self.family, self.depth, self.width, self.d_norm, self.encoder_norm)
        require_at_least(self, "model", 1, "latent_dim", "updates_per_batch")
        if self.feature_layer == 0:
            raise ConfigError("model.feature_layer is 1-based (or negative from the end), not 0")
        require_at_least(
            self, "model", 0, "beta", "gamma", "margin", "pixel_weight", "adversarial_weight"
        )


@MODELS.register("vaegan")
class VAEGAN(GenerativeModel):
    """Encoder, decoder (= generator) and discriminator, trained as in Larsen et al. 2016."""

    Config = VAEGANConfig
    #: the GAN's Adam settings (the paper: RMSprop, lr 3e-4, with a BatchNorm D), and for
    #: the encoder and decoder the VAE's lr of 1e-3: per epoch, reconstructions as close
    #: as the VAE's and a lower FID than at 2e-4 (docs/benchmarks.md)
    optimizer_defaults = {"lr": 2e-4, "betas": (0.5, 0.999)}
    logged_terms = LoggedTerms(
        by_network={
            "encoder": ("prior", "llike"),
            "decoder": ("llike", "gan_dec"),
            "discriminator": ("gan_d",),
        },
        watched=("llike", "gan_dec", "gan_d"),  # prior: a KL that starts near 0
        discriminator_outputs=("d_real", "d_recon", "d_prior"),
        generator_losses=("gan_dec",),
        first=("llike", "gan_dec", "gan_d", "prior", "d_real", "d_recon", "d_prior"),
    )
    optimizer_defaults_per_network = {"encoder": {"lr": 1e-3}, "decoder": {"lr": 1e-3}}
    has_encoder = True
    network_roles = {"encoder": "encoder", "decoder": "decoder", "discriminator": "discriminator"}

    def __init__(
        self, cfg: VAEGANConfig, image_shape: tuple[int, int, int], num_classes: int = 0
    ) -> None:
        super().__init__(image_shape, cfg.latent_dim, num_classes)
        self.cfg = cfg
        self.objective = GAN_LOSSES[cfg.gan_loss]
        arch = {"family": cfg.family, "depth": cfg.depth, "num_classes": num_classes}
        self.encoder = posterior_encoder(cfg, image_shape, num_classes)
        self.decoder = ImageDecoder(image_shape, cfg.width, cfg.latent_dim, norm="batch", **arch)
        self.discriminator = ImageEncoder(
            image_shape,
            cfg.width,
            1,
            cfg.d_norm,
            spectral_norm=cfg.spectral_norm,
            conditioning="projection",
            **arch,
        )
        blocks = self.discriminator.num_blocks
        layer = cfg.feature_layer if cfg.feature_layer > 0 else blocks + 1 + cfg.feature_layer
        if not 1 <= layer <= blocks:
            raise ConfigError(
                f"model.feature_layer={cfg.feature_layer}, but the discriminator for "
                f"{image_shape[1]}x{image_shape[2]} images has {blocks} blocks; "
                f"use 1..{blocks} or -1..-{blocks}"
            )
        self.layer = layer
        self.latent_prior = latent_prior_for(cfg, num_classes)
        self.augment_policy = parse_policy(cfg.augment)

    def networks(self) -> dict[str, nn.Module]:
        return {
            "encoder": self.encoder,
            "decoder": self.decoder,
            "discriminator": self.discriminator,
        }

    def encode(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, labels).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z, labels))

    def discriminate_with_features(
        self, signed: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logit and its layer-l features for images in [-1, 1]. Each batch (X, X~, Xp)
        goes through D in its own pass, so BatchNorm never mixes real and generated
        statistics."""
        logit, features = self.discriminator.forward_with_features(signed, self.layer, labels)
        return logit.squeeze(1), features

    def discriminator_inputs(
        self, x: torch.Tensor, x_tilde: torch.Tensor, x_p: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """X, X~ and Xp in D's [-1, 1], through ``model.augment`` in training (X and X~
        alike)."""
        x, x_tilde, x_p = to_signed(x), to_signed(x_tilde), to_signed(x_p)
        if self.augment_policy and self.training:
            x, x_tilde = augment_alike([x, x_tilde], self.augment_policy)
            x_p = augment(x_p, self.augment_policy)
        return x, x_tilde, x_p

    def losses(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every loss term of the paper for batch ``x`` (of classes ``y``), from one
        forward pass."""
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits_tilde = self.decoder(z, y)
        x_tilde = torch.sigmoid(logits_tilde)
        x_p = self.decode(torch.randn_like(mu), y)

        seen_x, seen_tilde, seen_p = self.discriminator_inputs(x, x_tilde, x_p)
        d_x, features_x = self.discriminate_with_features(seen_x, y)
        d_tilde, features_tilde = self.discriminate_with_features(seen_tilde, y)
        d_p, _ = self.discriminate_with_features(seen_p, y)

        prior = gaussian_kl(mu, logvar).mean()
        llike = 0.5 * (features_x - features_tilde).pow(2).flatten(1).sum(1).mean()
        objective = self.objective
        # D sees X as real, X~ and Xp as fake: L_GAN has one log(1 - D) term for each.
        gan_d = objective.discriminator(d_x, d_tilde) + F.softplus(d_p).mean()
        gan_dec = objective.generator(d_tilde) + objective.generator(d_p)
        return {
            "prior": prior,
            # Bernoulli NLL of X under Dec(Z), summed per image: the pixel_weight term.
            "pixel": F.binary_cross_entropy_with_logits(logits_tilde, x, reduction="none")
            .flatten(1)
            .sum(1)
            .mean(),
            "llike": llike,
            "gan_d": gan_d,
            "gan_dec": gan_dec,
            "d_real": torch.sigmoid(d_x).mean(),
            "d_recon": torch.sigmoid(d_tilde).mean(),
            "d_prior": torch.sigmoid(d_p).mean(),
            # For the equilibrium gate: D's BCE on real and on prior samples.
            "bce_real": F.softplus(-d_x).mean(),
            "bce_prior": F.softplus(d_p).mean(),
        }

    def encoder_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return (
            self.cfg.beta * terms["prior"] + terms["llike"] + self.cfg.pixel_weight * terms["pixel"]
        )

    def gate(self, terms: dict[str, torch.Tensor]) -> tuple[bool, bool]:
        """(train D, train the decoder's GAN term), from D's BCE on real and prior batches.

        When D's BCE is far below the equilibrium D is winning: pause it. Far above, D is
        losing: pause the decoder's adversarial term. Never pause both.
        """
        if not self.cfg.equilibrium_gate:
            return True, True
        low = self.cfg.equilibrium - self.cfg.margin
        high = self.cfg.equilibrium + self.cfg.margin
        pair = torch.stack([terms["bce_real"].detach(), terms["bce_prior"].detach()])
        bce = self.mean_over_ranks(pair).tolist()  # all ranks decide on the global batch
        train_d = not (bce[0] < low or bce[1] < low)
        train_dec = not (bce[0] > high or bce[1] > high)
        if not (train_d or train_dec):
            return True, True
        return train_d, train_dec

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.update_on_slices(batch, self.cfg.updates_per_batch, self._update)

    def _update(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch.images
        terms = self.losses(x, self.batch_labels(batch))
        train_d, train_dec = self.gate(terms)
        pixel = self.cfg.pixel_weight * terms["pixel"]
        decoder_loss = self.cfg.gamma * terms["llike"] + pixel
        if train_dec:
            decoder_loss = decoder_loss + self.cfg.adversarial_weight * terms["gan_dec"]
        norms = self.update(
            {
                "encoder": self.encoder_loss(terms),
                "decoder": decoder_loss,
                "discriminator": terms["gan_d"],
            },
            skip=set() if train_d else {"discriminator"},
        )
        logs = {k: v.detach() for k, v in terms.items() if not k.startswith("bce")}
        logs["gate_d"] = x.new_tensor(float(train_d))  # on the model's device, like the rest
        logs["gate_dec"] = x.new_tensor(float(train_dec))
        for name, norm in norms.items():
            logs[f"grad_norm_{name}"] = norm
        return logs

    def validation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        x, y = batch.images, self.batch_labels(batch)
        terms = self.losses(x, y)
        mu, _ = self.encode(x, y)
        # Pixel-space error of the mean reconstruction: comparable across models and runs.
        mse = (self.decode(mu, y) - x).pow(2).flatten(1).sum(1).mean()
        return {
            "loss": self.encoder_loss(terms),
            "pixel": terms["pixel"],
            "prior": terms["prior"],
            "llike": terms["llike"],
            "recon_mse": mse,
            "gan_d": terms["gan_d"],
            "gan_dec": terms["gan_dec"],
            "d_real": terms["d_real"],
            "d_recon": terms["d_recon"],
            "d_prior": terms["d_prior"],
        }

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = self.labels_for(len(noise), labels, noise.device)
        return self.decode(self.prior_codes(noise, labels), labels)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = self.batch_labels(Batch(x, labels))
        mu, _ = self.encode(x, labels)
        return self.decode(mu, labels)
