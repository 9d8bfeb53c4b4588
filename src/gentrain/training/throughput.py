"""Throughput switches: ``trainer.precision``, ``trainer.channels_last``, ``trainer.compile``.

* ``precision``: ``32`` (default), ``bf16`` (autocast to bfloat16: no loss scaling
  needed) or ``16-mixed`` (autocast to float16, with a ``GradScaler`` per optimiser,
  since each network is stepped on its own gradient: ``GenerativeModel.update``). Only
  the forward passes run under autocast; gradients and optimiser steps stay float32.
* ``channels_last`` (on by default): the networks' weights and every batch in NHWC memory
  order, which tensor-core convolutions prefer (on CPU it was faster too).
* ``compile``: ``torch.compile`` of each network's ``forward`` (in place, so checkpoint
  keys do not change).

All three keep a model's numbers the same up to rounding. See
docs/guides/scaling.md for what they measured.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from gentrain.core.errors import ConfigError
from gentrain.data.batch import Batch

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16-mixed": torch.float16}


def check_precision(name: str) -> None:
    if name not in PRECISIONS:
        raise ConfigError(f"unknown trainer.precision {name!r}; available: {', '.join(PRECISIONS)}")


class Throughput:
    """Applies the switches to a model and its batches, and opens the autocast region."""

    def __init__(self, cfg: Any, device: torch.device) -> None:
        self.dtype = PRECISIONS[str(cfg.precision)]
        self.channels_last = cfg.channels_last
        self.compile = cfg.compile
        self.device = device
        if self.dtype is not None and device.type not in ("cpu", "cuda"):
            raise ConfigError(
                f"trainer.precision={cfg.precision} autocasts on CPU or CUDA, not "
                f"{device.type}; use trainer.precision=32"
            )

    def prepare(self, model: nn.Module) -> None:
        """Call after the optimisers exist (16-mixed gives each one a loss scaler)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.compile:
            for network in model.children():  # encoder, decoder, generator, D, EMA copy
                if any(True for _ in network.parameters()):
                    network.compile()
        if self.dtype is torch.float16:
            model.grad_scalers = {
                name: torch.amp.GradScaler(self.device.type) for name in model.optimizers
            }

    def batch(self, batch: Batch) -> Batch:
        if not self.channels_last:
            return batch
        return batch.with_images(batch.images.contiguous(memory_format=torch.channels_last))

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)
