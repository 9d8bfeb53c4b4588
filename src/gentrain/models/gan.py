"""GAN (Goodfellow et al. 2014) with DCGAN/SN-GAN networks and the recipes that matter.

The generator is a decoder from N(0, I) noise to image logits (images are
``sigmoid(logits)`` in [0, 1]; D sees them rescaled to [-1, 1]); the discriminator is an
encoder to one logit, both from a network family of ``models/nets.py``. Losses:
non-saturating (default), hinge, least-squares, or Wasserstein with gradient penalty;
``n_critic`` D updates per G update; spectral norm on D (default); R1 penalty; DiffAugment
on D's inputs; an EMA copy of G for samples and evaluation, sampling with BatchNorm
statistics of its own (``standing_statistics``).

With ``conditional``, G(z, y) draws class y (one-hot y appended to z, conditional
BatchNorm) and D judges (x, y): by default with a projection head (Miyato & Koyama
2018), or, with ``conditioning=acgan``, with an auxiliary classifier whose cross-entropy
on real and generated images is added to D's loss and on generated ones to G's (Odena
et al. 2017). Generated images get uniformly drawn labels.

An unconditional GAN with ``code_classes`` K > 0 is an InfoGAN (Chen et al. 2016): G also
takes a categorical code read from its noise (``models/latent_code.py``) and an auxiliary
head on D learns to recover it from generated images, its cross-entropy weighted by
``info_weight`` in both players' losses. No labels are read; the code finds the modes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gentrain.core.errors import ConfigError, require_at_least
from gentrain.core.registry import MODELS
from gentrain.core.terms import LoggedTerms
from gentrain.data.batch import Batch
from gentrain.models.adversarial import (
    GAN_LOSSES,
    check_loss,
    gradient_penalty,
    r1_penalty,
)
from gentrain.models.augment import AdaptiveStrength, augment, parse_policy
from gentrain.models.base import GenerativeModel
from gentrain.models.latent_code import noise_for_codes, split_code
from gentrain.models.nets import ImageDecoder, ImageEncoder, check_architecture

GAN_KINDS = ("nonsaturating", "hinge", "lsgan", "wgan_gp")
CONDITIONINGS = ("projection", "acgan")


@dataclass
class GANConfig:
    name: str = "gan"
    latent_dim: int = 64
    family: str = "dcgan_deep"  # dcgan | dcgan_deep | resnet | mlp (see models/nets.py)
    width: int = 32  # channels of G's last and D's first conv level (mlp: 16x units)
    depth: int = 1  # extra 3x3 convs / residual blocks per level; mlp: depth + 1 layers
    loss: str = "nonsaturating"  # nonsaturating | hinge | lsgan | wgan_gp
    gp_weight: float = 10.0  # lambda of the WGAN-GP gradient penalty
    n_critic: int = 1  # D updates per G update
    # D-and-G updates per data batch, each on its own slice: batch 64 -> 4 updates on 16
    updates_per_batch: int = 4
    spectral_norm: bool = True  # spectral normalisation on every D layer
    d_norm: str = "none"  # batch | none (BatchNorm in D; not with wgan_gp)
    ema_decay: float | None = 0.999  # EMA of G's weights for samples; null turns it off
    r1_gamma: float = 0.0  # R1 penalty gamma/2 * E||grad D(x_real)||^2 (Mescheder 2018)
    # DiffAugment for D's inputs (Zhao et al. 2020): [] or any of [color, translation, cutout]
    augment: list[str] = field(default_factory=list)
    # ADA (Karras et al. 2020): null applies `augment` to every image; a target (0.6) starts
    # its probability at 0 and adapts it so that D scores that share of reals positive
    ada_target: float | None = None
    ada_images: int = 20_000  # real images over which ADA's probability can go 0 -> 1
    conditional: bool = False  # cGAN: G(z, y) with conditional BatchNorm, D judges (x, y)
    num_classes: int | None = None  # conditional: null = the dataset's (checked if set)
    conditioning: str = "projection"  # conditional D: projection | acgan
    acgan_weight: float = 1.0  # conditioning=acgan: weight of the class cross-entropy
    code_classes: int = 0  # InfoGAN: a categorical code with this many values (0: none)
    info_weight: float = 1.0  # code_classes > 0: weight of the code's cross-entropy

    def __post_init__(self) -> None:
        check_loss(self.loss, GAN_KINDS)
        if self.conditioning not in CONDITIONINGS:
            raise ConfigError(
                f"unknown model.conditioning {self.conditioning!r}; available: "
                f"{', '.join(CONDITIONINGS)}"
            )
        check_architecture(self.family, self.depth, self.width, self.d_norm)
        parse_policy(self.augment)
        require_at_least(
            self, "model", 1, "latent_dim", "n_critic", "updates_per_batch", "ada_images"
        )
        if self.ada_target is not None and not (-1.0 < self.ada_target < 1.0 and self.augment):
            raise ConfigError(
                f"model.ada_target={self.ada_target} adapts the strength of model.augment: "
                "give it a value in (-1, 1) (0.6 is Karras et al.'s) and a policy, e.g. "
                "model.augment=[color,translation,cutout]"
            )
        if self.loss == "wgan_gp" and self.d_norm == "batch":
            raise ConfigError(
                "model.loss=wgan_gp penalises per-sample gradients, which BatchNorm in D "
                "couples across the batch; set model.d_norm=none"
            )
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay must be in (0, 1) or null, got {self.ema_decay}")
        require_at_least(
            self, "model", 0, "gp_weight", "r1_gamma", "acgan_weight", "code_classes", "info_weight"
        )
        if self.code_classes == 1:
            raise ConfigError("model.code_classes=1 is a code with one value; use 0 (none) or >= 2")
        if self.code_classes and self.conditional:
            raise ConfigError(
                "model.code_classes (InfoGAN's unsupervised code) and model.conditional=true "
                "(the labels) both choose what G draws; set one of them"
            )


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to the [-1, 1] range discriminators are built for."""
    return x * 2.0 - 1.0


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, decay: float | torch.Tensor) -> None:
    """average <- decay * average + (1 - decay) * model; buffers (BN statistics) copied."""
    for a, p in zip(average.parameters(), model.parameters()):
        a.lerp_(p, 1.0 - decay)
    for a, b in zip(average.buffers(), model.buffers()):
        a.copy_(b)


@torch.no_grad()
def standing_statistics(network: nn.Module, inputs: list[tuple]) -> None:
    """Recompute ``network``'s BatchNorm statistics as the average over its forward passes
    on ``inputs`` (Brock et al. 2019's "standing statistics"). An EMA generator needs them:
    the running statistics it copies belong to the live generator's weights, not its own.
    """
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was_training = network.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the passes
    network.train()
    for args in inputs:
        network(*args)
    network.train(was_training)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


@MODELS.register("gan")
class GAN(GenerativeModel):
    """Generator G(z) and discriminator D(x), trained adversarially."""

    Config = GANConfig
    #: DCGAN's Adam betas at a higher lr for four updates per batch (docs/benchmarks.md);
    #: a loss with settings of its own (wgan_gp) brings them
    optimizer_defaults = {"lr": 8e-4, "betas": (0.5, 0.999)}
    logged_terms = LoggedTerms(
        by_network={"generator": ("loss_g",), "discriminator": ("loss_d",)},
        watched=("loss_g", "loss_d"),
        discriminator_outputs=("d_real", "d_fake"),
        generator_losses=("loss_g",),
        first=("loss_g", "loss_d", "d_real", "d_fake"),
    )
    network_roles = {
        "generator": "decoder",
        "generator_ema": "decoder",
        "discriminator": "discriminator",
    }

    def __init__(
        self, cfg: GANConfig, image_shape: tuple[int, int, int], num_classes: int = 0
    ) -> None:
        super().__init__(image_shape, cfg.latent_dim, num_classes)
        self.cfg = cfg
        self.objective = GAN_LOSSES[cfg.loss]
        self.code_classes = 0 if num_classes else cfg.code_classes
        # What G's class inputs and D's class head stand for: labels, or InfoGAN's code.
        arch = {
            "family": cfg.family,
            "depth": cfg.depth,
            "num_classes": num_classes or self.code_classes,
        }
        self.generator = ImageDecoder(image_shape, cfg.width, cfg.latent_dim, "batch", **arch)
        self.acgan = bool(num_classes) and cfg.conditioning == "acgan"
        self.auxiliary = self.acgan or bool(self.code_classes)  # D has a class head
        self.discriminator = ImageEncoder(
            image_shape,
            cfg.width,
            1,
            cfg.d_norm,
            spectral_norm=cfg.spectral_norm,
            conditioning="auxiliary" if self.auxiliary else "projection",
            **arch,
        )
        self.augment_policy = parse_policy(cfg.augment)
        self.ada = None
        if cfg.ada_target is not None:  # p starts at 0 and is saved with the weights
            centre = 0.5 if cfg.loss == "lsgan" else 0.0
            self.ada = AdaptiveStrength(cfg.ada_target, cfg.ada_images, centre)
            self.register_buffer("augment_p", torch.zeros(()))
        self.generator_ema = None
        if cfg.ema_decay is not None:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        # Generator steps so far: warms the EMA up (and is saved in checkpoints).
        self.register_buffer("g_steps", torch.zeros((), dtype=torch.long))
        self._standing_step = -1  # the step at which generator_ema's statistics were made
        self.register_load_state_dict_post_hook(lambda module, keys: module._stale_statistics())

    def ema_decay_now(self) -> torch.Tensor:
        """The EMA decay, warmed up as min(decay, (1 + t) / (10 + t)): a fixed 0.999 would
        still hold 40% of the random initial weights after 1,000 steps. A 0-d tensor on the
        model's device, so that no step waits for the host to read the counter."""
        t = self.g_steps.float()
        return ((1.0 + t) / (10.0 + t)).clamp(max=self.cfg.ema_decay)

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def recommended_optimizer(self) -> dict[str, Any]:
        return dict(self.objective.optimizer or self.optimizer_defaults)

    def generate(
        self,
        noise: torch.Tensor,
        labels: torch.Tensor | None = None,
        generator: nn.Module | None = None,
    ) -> torch.Tensor:
        return torch.sigmoid((generator or self.generator)(noise, labels))

    def generator_inputs(
        self, noise: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(noise, classes) that G takes for standard normal ``noise``: a conditional model's
        ``labels`` (uniformly drawn when None), InfoGAN's code read from the noise, or none."""
        if self.code_classes:
            codes, noise = split_code(noise, self.code_classes)
            return noise, codes
        if self.conditional and labels is None:
            labels = torch.randint(self.num_classes, (len(noise),), device=noise.device)
        return noise, labels

    def discriminate(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's logit for images in [0, 1] (of class ``labels``, with a projection D)."""
        return self.discriminate_with_classes(x, labels)[0]

    def discriminate_with_classes(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's logit and, for ACGAN, its class logits; through the augmentation when one
        is set (in training only: validation and the gradient penalties see the images as
        they are)."""
        x = to_signed(x)
        if self.augment_policy and self.training:
            x = augment(x, self.augment_policy, 1.0 if self.ada is None else self.augment_p)
        if self.auxiliary:
            flat, _ = self.discriminator.trunk(x)
            logit = self.discriminator.head_output(flat)
            return logit.squeeze(1), self.discriminator.class_head(flat)
        return self.discriminator(x, labels).squeeze(1), None

    def discriminator_losses(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        real_labels: torch.Tensor | None = None,
        fake_labels: torch.Tensor | None = None,
    ):
        """D's loss. Real and fake go through D in *separate* passes, so BatchNorm
        normalises each batch by its own statistics and never mixes the two."""
        r1 = self.cfg.r1_gamma > 0
        if r1:
            real = real.detach().requires_grad_(True)
        d_real, classes_real = self.discriminate_with_classes(real, real_labels)
        d_fake, classes_fake = self.discriminate_with_classes(fake, fake_labels)
        loss = self.objective.discriminator(d_real, d_fake)
        logs = {
            "d_real": self.objective.real_probability(d_real),
            "d_fake": self.objective.real_probability(d_fake),
        }
        if self.ada is not None and self.training:
            logs["augment_p"] = self.augment_p.clone()
            logs["ada_rt"] = self.ada.adjust(self.augment_p, d_real, self.mean_over_ranks)
        if self.acgan:
            class_loss = F.cross_entropy(classes_real, real_labels) + F.cross_entropy(
                classes_fake, fake_labels
            )
            loss = loss + self.cfg.acgan_weight * class_loss
            logs["d_class_loss"] = class_loss
        if self.code_classes:  # Q recovers the code of generated images only
            info_loss = F.cross_entropy(classes_fake, fake_labels)
            loss = loss + self.cfg.info_weight * info_loss
            logs["info_loss"] = info_loss
        if self.objective.gradient_penalty:
            penalty = gradient_penalty(lambda v: self.discriminate(v, real_labels), real, fake)
            loss = loss + self.cfg.gp_weight * penalty
            logs["gradient_penalty"] = penalty
        if r1:
            penalty = r1_penalty(d_real, real)
            loss = loss + 0.5 * self.cfg.r1_gamma * penalty
            logs["r1_penalty"] = penalty
        return loss, logs

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.update_on_slices(batch, self.cfg.updates_per_batch, self._update)

    def _update(self, batch: Batch) -> dict[str, torch.Tensor]:
        x, labels = batch.images, self.batch_labels(batch)
        n = x.shape[0]
        for _ in range(self.cfg.n_critic):  # the same real batch, fresh noise each time
            with torch.no_grad():
                noise, fake_labels = self.generator_inputs(
                    torch.randn(n, self.latent_dim, device=x.device)
                )
                fake = self.generate(noise, fake_labels)
            loss_d, d_logs = self.discriminator_losses(x, fake, labels, fake_labels)
            norms = self.update({"discriminator": loss_d})
        grad_norm_d = norms["discriminator"]

        noise, fake_labels = self.generator_inputs(torch.randn(n, self.latent_dim, device=x.device))
        fake = self.generate(noise, fake_labels)
        d_fake, classes_fake = self.discriminate_with_classes(fake, fake_labels)
        loss_g = self.objective.generator(d_fake)
        if self.auxiliary:
            weight = self.cfg.acgan_weight if self.acgan else self.cfg.info_weight
            loss_g = loss_g + weight * F.cross_entropy(classes_fake, fake_labels)
        grad_norm_g = self.update({"generator": loss_g})["generator"]
        if self.generator_ema is not None:
            ema_update(self.generator_ema, self.generator, self.ema_decay_now())
        self.g_steps += 1

        logs = {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "grad_norm_d": grad_norm_d,
            "grad_norm_g": grad_norm_g,
        }
        logs.update({k: v.detach() for k, v in d_logs.items()})
        return logs

    #: noise vectors (in batches of STANDING_BATCH) whose BatchNorm statistics the EMA
    #: generator samples with; recomputed when G has stepped since, about once per evaluation
    STANDING_SAMPLES = 1024
    STANDING_BATCH = 512

    def _sampler(self) -> nn.Module:
        """The EMA generator with statistics of its own (or G when there is no EMA)."""
        if self.generator_ema is None:
            return self.generator
        step = int(self.g_steps)  # a host read per sampling call, never per training step
        if step != self._standing_step:
            seeded = torch.Generator().manual_seed(0)
            device = self.g_steps.device
            inputs = []
            n = self.STANDING_BATCH
            for _ in range(self.STANDING_SAMPLES // n):
                noise = torch.randn(n, self.latent_dim, generator=seeded, device="cpu").to(device)
                inputs.append(self.generator_inputs(noise, self.balanced_labels(n, device)))
            standing_statistics(self.generator_ema, inputs)
            self._standing_step = step
        return self.generator_ema

    def _stale_statistics(self) -> None:
        self._standing_step = -1

    def validation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        x, labels = batch.images, self.batch_labels(batch)
        noise, fake_labels = self.generator_inputs(
            torch.randn(x.shape[0], self.latent_dim, device=x.device),
            self.balanced_labels(len(x), x.device),
        )
        fake = self.generate(noise, fake_labels, self._sampler())
        d_real, d_fake = self.discriminate(x, labels), self.discriminate(fake, fake_labels)
        return {
            "loss_d": self.objective.discriminator(d_real, d_fake),
            "loss_g": self.objective.generator(d_fake),
            "d_real": self.objective.real_probability(d_real),
            "d_fake": self.objective.real_probability(d_fake),
        }

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        noise, labels = self.generator_inputs(
            noise, self.labels_for(len(noise), labels, noise.device)
        )
        return self.generate(noise, labels, self._sampler())

    @torch.no_grad()
    def previews(self, noise: torch.Tensor, real: Batch) -> dict[str, tuple[torch.Tensor, int]]:
        """The samples grid, and for an InfoGAN a ``codes`` grid: one row per code value,
        one column per style (the same noise otherwise), which shows what the code learnt."""
        grids = super().previews(noise, real)
        if self.code_classes:
            columns = grids["samples"][1]  # as many styles as the samples grid has columns
            codes = torch.arange(self.code_classes, device=noise.device)
            codes = codes.repeat_interleave(columns)
            styles = noise[:columns].repeat(self.code_classes, 1)
            images = self.sample(noise_for_codes(styles, codes, self.code_classes))
            grids["codes"] = (images.clamp(0, 1), columns)
        return grids
