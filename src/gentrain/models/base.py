"""The contract between a model and the trainer.

A model owns its networks, losses and optimisers: ``training_step`` takes a batch,
updates whatever networks it has (one optimiser or three) and returns named loss
terms. The trainer owns loops, devices, logging and checkpoints, and never looks
inside a model beyond this class.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gentrain.optim import OptimizerFactory
from gentrain.registry import MODELS


class GenerativeModel(nn.Module):
    """Base class for registered models. Images in and out are floats in [0, 1]."""

    #: whether ``reconstruct`` is meaningful (VAE, VAE-GAN) or not (GAN)
    has_encoder: bool = False

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.latent_dim = latent_dim
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.grad_clip_norm: float | None = None

    # --- what every model implements -------------------------------------------------
    def configure_optimizers(self, factory: OptimizerFactory) -> None:
        """Create one optimiser per network with ``self.add_optimizer``."""
        raise NotImplementedError

    def training_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Update the networks on batch ``x``; return detached scalar loss terms."""
        raise NotImplementedError

    @torch.no_grad()
    def validation_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scalar validation losses for batch ``x`` (mean over the batch)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """Images decoded from latent ``noise`` of shape (N, latent_dim)."""
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions of ``x`` (only for models with an encoder)."""
        raise NotImplementedError(f"{type(self).__name__} has no encoder")

    # --- shared helpers ---------------------------------------------------------------
    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    def add_optimizer(
        self,
        factory: OptimizerFactory,
        network: str,
        module: nn.Module,
        recommended: dict[str, Any] | None = None,
    ) -> None:
        optimizer, scheduler = factory.build(network, module.parameters(), recommended)
        self.optimizers[network] = optimizer
        self.schedulers[network] = scheduler
        self.grad_clip_norm = factory.grad_clip_norm

    def step_optimizer(self, network: str, module: nn.Module) -> torch.Tensor | None:
        """Clip the gradients already in ``module`` (if configured), step, advance the LR.

        Returns the gradient norm before clipping when clipping is on.
        """
        norm = None
        if self.grad_clip_norm:
            norm = nn.utils.clip_grad_norm_(module.parameters(), self.grad_clip_norm)
        self.optimizers[network].step()
        self.schedulers[network].step()
        return norm

    def optimizer_state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
        }

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])


def build_model(cfg: Any, image_shape: tuple[int, int, int]) -> GenerativeModel:
    """Build ``MODELS[cfg.name]`` from its validated config dataclass."""
    return MODELS.get(cfg.name).from_config(cfg, image_shape)
