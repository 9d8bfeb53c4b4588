"""What a training or validation step receives: images, and class labels when the model
is conditional."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    """Float images in [0, 1] of shape (N, C, H, W), on the training device, and their
    int64 class labels of shape (N,) — ``None`` for unconditional models, which never
    read them (the loader does not even gather them)."""

    images: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)

    def with_images(self, images: torch.Tensor) -> Batch:
        """The same labels beside other images (another memory format, a binarised draw)."""
        return Batch(images, self.labels)

    def split(self, parts: int) -> list[Batch]:
        """The batch in consecutive slices of ceil(n / ``parts``) images (the last may be
        smaller, and there are fewer when n is small), labels sliced alike."""
        size = -(-len(self) // parts)
        images = self.images.split(size)
        if self.labels is None:
            return [Batch(x) for x in images]
        return [Batch(x, y) for x, y in zip(images, self.labels.split(size))]
