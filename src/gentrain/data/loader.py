"""Batches from a uint8 tensor that lives on the training device.

MNIST-sized data fits in a few hundred MB, so the fastest loader on any device is no
loader: keep the decoded images on the device and index them with a seeded permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class DeviceTensorLoader:
    """Shuffled float batches in [0, 1] from uint8 images kept on ``device``.

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so a run resumed in
    the middle of an epoch sees exactly the batches an uninterrupted run would. With
    ``world_size`` ranks, ``batch_size`` is the global batch and rank ``rank`` gets its
    own ``batch_size // world_size`` rows of each (see ``gentrain.data_parallel``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        device: torch.device,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if drop_last and len(images) < batch_size:
            raise ValueError(
                f"the split has {len(images)} images, fewer than one batch of {batch_size}; "
                "lower trainer.batch_size"
            )
        self.images = images.to(device)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rows = slice(
            rank * batch_size // world_size, (rank + 1) * batch_size // world_size
        )  # this rank's rows of every batch

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[torch.Tensor]:
        """Yield the batches of ``epoch``, skipping the first ``start_batch`` of them."""
        n = len(self.images)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size][self.rows]
            yield self.images.index_select(0, index).float().div_(255.0)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.epoch(0)
