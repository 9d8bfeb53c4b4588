"""Batches from a uint8 tensor that lives on the training device.

MNIST-sized data fits in a few hundred MB, so the fastest loader on any device is no
loader: keep the decoded images on the device and index them with a seeded permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from gentrain.core.errors import ConfigError
from gentrain.data.batch import Batch


def check_batch_fits(images: int, batch_size: int) -> None:
    """A ConfigError unless the training split holds at least one whole batch."""
    if images < batch_size:
        raise ConfigError(
            f"trainer.batch_size={batch_size} is larger than the training split "
            f"({images} images): not one batch fits. Fix: set trainer.batch_size to at most "
            f"{images}, or use more data (dataset.limit)"
        )


class DeviceTensorLoader:
    """Shuffled batches of float images in [0, 1] from uint8 images kept on ``device``,
    with their ``labels`` when given (conditional models).

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so a run resumed in
    the middle of an epoch sees exactly the batches an uninterrupted run would. With
    ``world_size`` ranks, ``batch_size`` is the global batch and rank ``rank`` gets its
    own ``batch_size // world_size`` rows of each (see ``gentrain.training.data_parallel``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        device: torch.device,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        labels: torch.Tensor | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if labels is not None and labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        check_batch_fits(len(images), batch_size)
        self.images = images.to(device)
        self.labels = None if labels is None else labels.to(device=device, dtype=torch.long)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.seed = seed
        self.rows = slice(
            rank * batch_size // world_size, (rank + 1) * batch_size // world_size
        )  # this rank's rows of every batch

    def __len__(self) -> int:
        """Full batches per epoch (the last, partial one is dropped)."""
        return len(self.images) // self.batch_size

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Yield the batches of ``epoch``, skipping the first ``start_batch`` of them."""
        n = len(self.images)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=generator).to(self.device)
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size][self.rows]
            images = self.images.index_select(0, index).float().div_(255.0)
            labels = None if self.labels is None else self.labels.index_select(0, index)
            yield Batch(images, labels)
