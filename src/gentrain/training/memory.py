"""Whether a model fits in memory, decided from its config before anything is allocated.

The model is built on PyTorch's ``meta`` device (shapes, no storage), so ``model.width=
100000`` is refused in a second with the figure and the fix, instead of the allocator's
``RuntimeError`` for 320 GB after the data has loaded.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from gentrain.core.errors import ConfigError
from gentrain.models import build_model

# float32 weights; for each trainable weight its gradient and Adam's two moments
BYTES_PER_WEIGHT = 4
BYTES_PER_TRAINABLE = 4 + 8


def training_bytes(model: torch.nn.Module) -> int:
    """A lower bound of training memory: weights and buffers, gradients and the optimiser
    state (activations come on top)."""
    weights = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return weights * BYTES_PER_WEIGHT + trainable * BYTES_PER_TRAINABLE


def _sized_alike(model_cfg: Any) -> Any:
    """The config without spectral norm, which reparametrises a weight without resizing it
    but runs its power iterations at construction: on the meta device they take a few
    tenths of a second, longer than building the model itself."""
    if getattr(model_cfg, "spectral_norm", False) and dataclasses.is_dataclass(model_cfg):
        return dataclasses.replace(model_cfg, spectral_norm=False)
    return model_cfg


def available_bytes(device: torch.device) -> int:
    """The device's memory: a GPU's total, else this machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not reported here: nothing to check
        return 2**63


def check_model_fits(
    model_cfg: Any,
    image_shape: tuple[int, int, int],
    num_classes: int | None,
    dataset: str,
    device: torch.device,
) -> None:
    """ConfigError with the figures when the model's weights, gradients and optimiser
    state alone exceed the device's memory."""
    with torch.random.fork_rng(), torch.device("meta"):  # the run's random draws untouched
        model = build_model(_sized_alike(model_cfg), image_shape, num_classes, dataset)
    need, have = training_bytes(model), available_bytes(device)
    if need <= have:
        return
    params = sum(p.numel() for p in model.parameters())
    raise ConfigError(
        f"model={model_cfg.name} with model.width={getattr(model_cfg, 'width', '?')} has "
        f"{params / 1e6:,.0f} M parameters: its weights, gradients and optimiser state alone "
        f"need {need / 2**30:,.1f} GiB, more than the {have / 2**30:,.1f} GiB of {device.type} "
        "memory here. Fix: lower model.width (or model.depth, model.latent_dim)"
    )
