"""The contract between a model and the trainer.

A model owns its networks, losses and optimisers: ``training_step`` takes a ``Batch``,
updates whatever networks it has (one optimiser or three) and returns named loss
terms. A conditional model (``num_classes > 0``) reads the batch's labels and takes
labels wherever it makes images; an unconditional one reads ``batch.images`` only.
The trainer owns loops, devices, logging and checkpoints, and never looks
inside a model beyond this class.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from gentrain.core.errors import ConfigError
from gentrain.core.registry import MODELS
from gentrain.core.terms import LoggedTerms
from gentrain.data.batch import Batch
from gentrain.models.latent_prior import LatentPrior, posterior_means
from gentrain.training.optim import OptimizerFactory


class GenerativeModel(nn.Module):
    """Base class for registered models. Images in and out are floats in [0, 1]."""

    #: the ``model.*`` schema: its fields and defaults are the model's config (registered
    #: with Hydra's ConfigStore by ``@MODELS.register``)
    Config: ClassVar[type]
    #: whether ``reconstruct`` is meaningful (VAE, VAE-GAN) or not (GAN)
    has_encoder: bool = False
    #: what the terms ``training_step`` returns mean: which network minimises which, which
    #: are D's outputs; read by the progress line, the dashboard and the runaway watch
    logged_terms: ClassVar[LoggedTerms] = LoggedTerms()
    #: the model's optimiser recipe, for every network, where ``optimizer.*`` is null
    #: (``optimizer.lr=...`` and ``optimizer.per_network`` override it); logged at start
    optimizer_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3}
    #: changes to that recipe for one network (the VAE-GAN's autoencoder); the same
    #: ``optimizer.*`` settings override them
    optimizer_defaults_per_network: ClassVar[dict[str, dict[str, Any]]] = {}
    #: what each network (a submodule's attribute name) is: ``encoder`` (image -> code),
    #: ``decoder`` (code -> image) or ``discriminator`` (image -> score). Warm start
    #: (``init_from``) copies a network from the source's network of the same role.
    network_roles: ClassVar[dict[str, str]] = {}
    #: set by ``gentrain.training.data_parallel.World.prepare`` when several ranks train this model
    data_parallel: Any = None

    def __init__(
        self, image_shape: tuple[int, int, int], latent_dim: int, num_classes: int = 0
    ) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.latent_dim = latent_dim
        self.num_classes = num_classes  # 0: unconditional
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.grad_clip_norm: float | None = None
        self._networks: dict[str, nn.Module] = {}
        # trainer.precision=16-mixed: one loss scaler per optimiser (gentrain.training.throughput)
        self.grad_scalers: dict[str, torch.amp.GradScaler] = {}
        # what an autoencoder's samples are drawn from, fitted by ``fit_to_data`` (None: N(0, I))
        self.latent_prior: LatentPrior | None = None

    @classmethod
    def from_config(
        cls, cfg: Any, image_shape: tuple[int, int, int], num_classes: int = 0
    ) -> GenerativeModel:
        """Build from the validated ``Config`` dataclass (override for other constructors);
        ``num_classes`` > 0 builds the conditional model (a model that cannot be conditional
        need not take the argument)."""
        return cls(cfg, image_shape, num_classes) if num_classes else cls(cfg, image_shape)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    # --- what every model implements -------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        """The networks that get an optimiser each, by name (``optimizer.per_network``
        keys, ``lr/<name>`` curves, the keys of ``update``'s losses)."""
        raise NotImplementedError

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Update the networks on ``batch``; return detached scalar loss terms."""
        raise NotImplementedError

    def update_on_slices(
        self, batch: Batch, parts: int, update: Callable[[Batch], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """``update`` on each of ``parts`` slices of ``batch`` in turn (more, smaller
        updates per data batch: a model's ``updates_per_batch``); the logs' means. With
        several ranks, each slice's random draws stand for the global slice's."""
        slices = batch.split(parts)
        if len(slices) == 1:
            return update(batch)
        steps = []
        for part in slices:
            world = self.data_parallel
            with world.slice_randomness(len(part)) if world else contextlib.nullcontext():
                steps.append(update(part))
        return {key: torch.stack([logs[key] for logs in steps]).mean() for key in steps[0]}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scalar validation losses for ``batch`` (mean over the batch)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images decoded from latent ``noise`` of shape (N, latent_dim); a conditional
        model draws class ``labels[i]`` for row i (default: ``balanced_labels``)."""
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstructions of ``x`` (only for models with an encoder; a conditional one
        needs the images' labels)."""
        raise NotImplementedError(f"{type(self).__name__} has no encoder")

    @torch.no_grad()
    def fit_to_data(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Fit what the model estimates from its training set beside its gradient steps: the
        ``latent_prior`` of an autoencoder (``posterior_means`` of uint8 ``images``). The
        trainer calls it at the end of every epoch (and of training), before validation,
        evaluation, grids and the checkpoint; nothing for other models."""
        if self.latent_prior is not None:
            labels = labels if self.conditional else None
            codes, code_labels = posterior_means(self, images, labels, self.latent_prior.fit_images)
            self.latent_prior.fit(codes, code_labels)

    def prior_codes(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The codes that standard normal ``noise`` stands for under ``latent_prior`` (of
        classes ``labels``, for a conditional model)."""
        return noise if self.latent_prior is None else self.latent_prior(noise, labels)

    # --- shared helpers ---------------------------------------------------------------
    def recommended_optimizer(self) -> dict[str, Any]:
        """The optimiser settings this configuration trains with by default."""
        return dict(self.optimizer_defaults)

    def configure_optimizers(self, factory: OptimizerFactory) -> None:
        """One optimiser and schedule per network of ``networks``."""
        for network, module in self.networks().items():
            own = self.optimizer_defaults_per_network.get(network, {})
            self.add_optimizer(factory, network, module, {**self.recommended_optimizer(), **own})

    def num_trainable_parameters(self) -> int:
        """Parameters an optimiser steps (not an EMA copy or a frozen feature network)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def learning_rates(self) -> dict[str, float]:
        """Each network's learning rate at this step (for the ``lr/<network>`` curves)."""
        return {name: s.get_last_lr()[0] for name, s in self.schedulers.items()}

    def initial_learning_rates(self) -> dict[str, float]:
        """Each network's learning rate before any schedule (for the HParams tab)."""
        return {name: s.base_lrs[0] for name, s in self.schedulers.items()}

    @torch.no_grad()
    def previews(self, noise: torch.Tensor, real: Batch) -> dict[str, tuple[torch.Tensor, int]]:
        """The trainer's image grids, by name: (images in [0, 1], images per row). Samples
        of ``noise`` (a conditional model: one row per class, see ``class_grid``); with an
        encoder, the ``real`` images each followed by its reconstruction."""
        nrow = max(1, int(math.sqrt(len(noise))))
        if self.conditional:
            images, nrow = self.class_grid(noise[:nrow])
            grids = {"samples": (images, nrow)}
        else:
            grids = {"samples": (self.sample(noise).clamp(0, 1), nrow)}
        if self.has_encoder:
            recon = self.reconstruct(real.images, real.labels).clamp(0, 1)
            pairs = torch.stack([real.images, recon], dim=1).flatten(0, 1)  # original, recon...
            grids["reconstructions"] = (pairs, 2 * max(1, nrow // 2))
        return grids

    @torch.no_grad()
    def class_grid(self, noise: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(images, images per row): one row per class, one column per row of ``noise``,
        so a row shows one class in many styles and a column one style in every class."""
        columns = len(noise)
        labels = torch.arange(self.num_classes, device=noise.device).repeat_interleave(columns)
        images = self.sample(noise.repeat(self.num_classes, 1), labels)
        return images.clamp(0, 1), columns

    def balanced_labels(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """Labels 0, 1, ..., K-1, 0, 1, ... for ``n`` samples (every class equally often
        when K divides n); None for an unconditional model."""
        if not self.conditional:
            return None
        return torch.arange(n, device=device) % self.num_classes

    def labels_for(
        self, n: int, labels: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor | None:
        """``labels`` checked for a conditional model (balanced ones when None), None for an
        unconditional one: what ``sample`` hands its networks."""
        if not self.conditional:
            return None
        if labels is None:
            return self.balanced_labels(n, device)
        if labels.shape != (n,):
            raise ValueError(f"expected {n} labels, got shape {tuple(labels.shape)}")
        return labels.to(device=device, dtype=torch.long)

    def batch_labels(self, batch: Batch) -> torch.Tensor | None:
        """The batch's labels for a conditional model (a ValueError if it has none), None for
        an unconditional one, which ignores them."""
        if not self.conditional:
            return None
        if batch.labels is None:
            raise ValueError(f"the conditional {type(self).__name__} needs a batch with labels")
        return batch.labels

    def mean_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over data-parallel ranks (itself in one process): for
        decisions every rank must take alike, from the global batch."""
        return value if self.data_parallel is None else self.data_parallel.mean(value)

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    def add_optimizer(
        self,
        factory: OptimizerFactory,
        network: str,
        module: nn.Module,
        recommended: dict[str, Any] | None = None,
    ) -> None:
        """Give ``module`` (one network) its own optimiser and learning-rate schedule, from
        ``recommended`` settings (default: ``recommended_optimizer()``)."""
        if recommended is None:
            recommended = self.recommended_optimizer()
        optimizer, scheduler = factory.build(network, module.parameters(), recommended)
        self.optimizers[network] = optimizer
        self.schedulers[network] = scheduler
        self._networks[network] = module
        self.grad_clip_norm = factory.grad_clip_norm

    def update(
        self, losses: dict[str, torch.Tensor], skip: frozenset[str] | set[str] = frozenset()
    ) -> dict[str, torch.Tensor]:
        """Step each network on the gradient of *its own* loss, and nothing else.

        ``losses`` maps a network name to the loss that network minimises. Gradients are
        taken with ``torch.autograd.grad`` per network, so when losses share a graph (the
        GAN's D and G, the VAE-GAN's three networks) no loss leaks into another network's
        gradient, whatever the order. All gradients are computed before any parameter
        changes. Networks in ``skip`` are not stepped. Schedules move in ``advance_schedules``.
        Returns each network's gradient norm (before clipping).
        """
        names = [n for n in losses if n not in skip]
        grads: dict[str, list[torch.Tensor]] = {}
        # Gradients and steps in full precision: autocast (trainer.precision) is for the
        # forward pass only.
        device_type = next(iter(losses.values())).device.type
        with (
            torch.autocast(device_type, enabled=False)
            if device_type in ("cpu", "cuda")
            else (contextlib.nullcontext())
        ):
            for i, name in enumerate(names):
                params = [p for p in self._networks[name].parameters() if p.requires_grad]
                loss = losses[name]
                if name in self.grad_scalers:
                    loss = self.grad_scalers[name].scale(loss)
                found = torch.autograd.grad(
                    loss, params, retain_graph=i < len(names) - 1, allow_unused=True
                )
                grads[name] = [
                    torch.zeros_like(p) if g is None else g for p, g in zip(params, found)
                ]
                if self.data_parallel is not None:  # DDP's hooks never see autograd.grad
                    grads[name] = self.data_parallel.average_gradients(grads[name])
            norms = {}
            for name in names:
                params = [p for p in self._networks[name].parameters() if p.requires_grad]
                for p, g in zip(params, grads[name]):
                    p.grad = g
                scaler = self.grad_scalers.get(name)
                if scaler is not None:
                    scaler.unscale_(self.optimizers[name])
                norms[name] = torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(p.grad) for p in params])
                )
                if self.grad_clip_norm:
                    nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
                if scaler is not None:  # skips the step if the scaled gradient overflowed
                    scaler.step(self.optimizers[name])
                    scaler.update()
                    # an overflow is the scaler's to handle (it lowers the scale), not a
                    # divergence: log 0 for the skipped step
                    norms[name] = torch.nan_to_num(norms[name], nan=0.0, posinf=0.0)
                else:
                    self.optimizers[name].step()
        return norms

    def advance_schedules(self) -> None:
        """One training step done: every network's learning-rate schedule moves on by one
        step, however many updates the step made (``n_critic``, ``updates_per_batch``) and
        whether or not a network stepped, so the schedule's horizon is the trainer's
        ``total_steps``. The trainer calls it after each ``training_step``."""
        with warnings.catch_warnings():
            # torch warns when a schedule moves before its optimiser's first step: a network
            # the step skipped (the VAE-GAN's gate) or a loss scaler's overflow
            warnings.simplefilter("ignore", UserWarning)
            for scheduler in self.schedulers.values():
                scheduler.step()

    def optimizer_state_dict(self) -> dict[str, Any]:
        state = {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
        }
        if self.grad_scalers:
            state["grad_scalers"] = {k: s.state_dict() for k, s in self.grad_scalers.items()}
        return state

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        for name, scaler in self.grad_scalers.items():
            if name in state.get("grad_scalers", {}):  # else: a run resumed with 16-mixed
                scaler.load_state_dict(state["grad_scalers"][name])


def model_classes(cfg: Any, dataset_classes: int | None, dataset: str = "this dataset") -> int:
    """The number of classes a model is built for: 0 unless ``model.conditional``, else the
    dataset's, checked against ``model.num_classes`` when that is set. A ConfigError, before
    any training, for a conditional model on a dataset without labels or a wrong count."""
    conditional = getattr(cfg, "conditional", False)
    wanted = getattr(cfg, "num_classes", None)
    if not conditional:
        if wanted is not None:
            raise ConfigError(
                f"model.num_classes={wanted} is set, but model.conditional=false: an "
                "unconditional model takes no labels. Fix: add model.conditional=true, or drop "
                "model.num_classes"
            )
        return 0
    if dataset_classes is None:
        raise ConfigError(
            f"model.conditional=true needs class labels, but {dataset} has none. Fix: use a "
            "labelled dataset (mnist, fashion_mnist, cifar10), put an image_folder's images in "
            "one subfolder per class, or set model.conditional=false"
        )
    if wanted is not None and wanted != dataset_classes:
        raise ConfigError(
            f"model.num_classes={wanted}, but {dataset} has {dataset_classes} classes. Fix: "
            f"set model.num_classes={dataset_classes}, or drop it (it defaults to the "
            "dataset's)"
        )
    return dataset_classes


def build_model(
    cfg: Any,
    image_shape: tuple[int, int, int],
    dataset_classes: int | None = None,
    dataset: str = "this dataset",
) -> GenerativeModel:
    """Build ``MODELS[cfg.name]`` from its validated config dataclass, for a dataset of
    ``dataset_classes`` classes (None: unlabelled); see ``model_classes``."""
    num_classes = model_classes(cfg, dataset_classes, dataset)
    return MODELS.get(cfg.name).from_config(cfg, image_shape, num_classes)
