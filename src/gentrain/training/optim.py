"""Optimiser and learning-rate schedule builders, chosen by ``optimizer=<name>``.

Models ask for one optimiser per network and pass their recommended settings
(a GAN wants Adam betas (0.5, 0.999)); any value set in the optimizer config wins.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from gentrain.core.errors import ConfigError
from gentrain.core.registry import OPTIMIZERS

log = logging.getLogger("gentrain")


@dataclass
class OptimizerConfig:
    """``configs/optimizer/*.yaml``. ``None`` means "the model's recommended value"."""

    name: str = "adam"
    lr: float | None = None
    betas: list[float] | None = None  # adam, adamw
    momentum: float | None = None  # sgd, rmsprop
    weight_decay: float = 0.0
    eps: float | None = None
    scheduler: str = "constant"  # constant | cosine
    warmup_steps: int = 0
    # Per-network overrides, e.g. {discriminator: {lr: 4e-4}} for a TTUR GAN.
    per_network: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"optimizer.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")
        if self.betas is not None and (
            len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas)
        ):
            raise ConfigError(f"optimizer.betas must be two numbers in [0, 1), got {self.betas}")
        if self.scheduler not in ("constant", "cosine"):
            raise ConfigError(
                f"unknown optimizer.scheduler {self.scheduler!r}; available: constant, cosine"
            )
        if self.warmup_steps < 0:
            raise ConfigError(f"optimizer.warmup_steps must be >= 0, got {self.warmup_steps}")


def _settings(cfg: OptimizerConfig, network: str, recommended: dict[str, Any]) -> dict[str, Any]:
    chosen = dict(recommended)
    for key in ("lr", "betas", "momentum", "eps"):
        if getattr(cfg, key) is not None:
            chosen[key] = getattr(cfg, key)
    chosen["weight_decay"] = cfg.weight_decay
    chosen.update(cfg.per_network.get(network, {}))
    if "betas" in chosen:
        chosen["betas"] = tuple(chosen["betas"])
    return chosen


def _arguments(settings: dict[str, Any], *accepted: str) -> dict[str, Any]:
    """The settings this optimiser's constructor takes (Adam has no momentum, SGD no betas)."""
    return {k: v for k, v in settings.items() if k in accepted}


@OPTIMIZERS.register("adam")
def adam(params: Iterable, settings: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, **_arguments(settings, "lr", "betas", "eps", "weight_decay"))


@OPTIMIZERS.register("adamw")
def adamw(params: Iterable, settings: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, **_arguments(settings, "lr", "betas", "eps", "weight_decay"))


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable, settings: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, **_arguments(settings, "lr", "momentum", "weight_decay"))


@OPTIMIZERS.register("rmsprop")
def rmsprop(params: Iterable, settings: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(
        params, **_arguments(settings, "lr", "momentum", "eps", "weight_decay")
    )


@dataclass
class OptimizerFactory:
    """Builds (optimiser, schedule) pairs for a model; the trainer hands it over."""

    cfg: OptimizerConfig
    total_steps: int
    grad_clip_norm: float | None = None

    def build(
        self, network: str, params: Iterable, recommended: dict[str, Any] | None = None
    ) -> tuple[torch.optim.Optimizer, LRScheduler]:
        self.networks_seen.append(network)
        settings = _settings(self.cfg, network, recommended or {})
        log.info("optimizer of %s: %s %s", network, self.cfg.name, settings)
        optimizer = OPTIMIZERS.get(self.cfg.name)(params, settings)
        return optimizer, LambdaLR(optimizer, lr_schedule(self.cfg, self.total_steps))

    def check_networks(self) -> None:
        """Reject per-network overrides that name a network the model does not have."""
        unknown = sorted(set(self.cfg.per_network) - set(self.networks_seen))
        if unknown:
            raise ConfigError(
                f"optimizer.per_network names {unknown}, but this model's networks are "
                f"{self.networks_seen}"
            )

    def __post_init__(self) -> None:
        self.networks_seen: list[str] = []


def lr_schedule(cfg: OptimizerConfig, total_steps: int):
    """Learning-rate multiplier per step: linear warm-up, then constant or cosine decay.

    A plain function (not a callable object) so the scheduler's state_dict holds only
    numbers and loads with ``torch.load(weights_only=True)``.
    """
    warmup, cosine = cfg.warmup_steps, cfg.scheduler == "cosine"

    def multiplier(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cosine:
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return multiplier
