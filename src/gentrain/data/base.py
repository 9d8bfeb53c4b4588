"""The in-memory form every dataset is decoded into, and the dataset config schema."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gentrain.core.errors import ConfigError
from gentrain.core.registry import DATASETS


@dataclass
class DatasetConfig:
    """Keys shared by every ``configs/dataset/*.yaml``; unused ones stay ``None``."""

    name: str = "mnist"
    root: str = "./data"  # directory holding <root>/MNIST/raw, <root>/cifar-10-batches-py, ...
    image_size: int | None = None  # None: the dataset's native size; else resized square
    channels: int | None = None  # None: native; 1 or 3 converts
    download: bool = True  # fetch missing files when a network exists
    path: str | None = None  # image_folder: the directory of images
    val_fraction: float = 0.1  # image_folder: share held out for validation
    limit: int | None = None  # use only the first N images of each split (smoke runs)

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"dataset.image_size must be positive, got {self.image_size}")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"dataset.channels must be 1, 3 or null, got {self.channels}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"dataset.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"dataset.limit must be positive or null, got {self.limit}")


@dataclass
class ImageData:
    """Train and validation images as uint8 tensors of shape (N, C, H, W), on the CPU.

    Class labels (int64, shape (N,)) and the classes' names when the dataset has them:
    conditional models train on them, the evaluation's domain classifier learns from them,
    unconditional models never see them.
    """

    name: str
    train: torch.Tensor
    val: torch.Tensor
    train_labels: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    class_names: list[str] | None = None

    @property
    def num_classes(self) -> int | None:
        """Number of classes, or None for a dataset without labels."""
        return None if self.class_names is None else len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.shape[1:]
        return int(c), int(h), int(w)


def build_dataset(cfg: DatasetConfig) -> ImageData:
    """Load the configured dataset, then apply the shared size/channel/limit options."""
    data: ImageData = DATASETS.get(cfg.name)(cfg)
    train, val = data.train, data.val
    train_labels, val_labels = data.train_labels, data.val_labels
    if cfg.limit is not None:
        train, val = train[: cfg.limit], val[: cfg.limit]
        if train_labels is not None and val_labels is not None:
            train_labels, val_labels = train_labels[: cfg.limit], val_labels[: cfg.limit]
    train = _convert(train, cfg.channels, cfg.image_size)
    val = _convert(val, cfg.channels, cfg.image_size)
    return ImageData(
        name=data.name,
        train=train.contiguous(),
        val=val.contiguous(),
        train_labels=train_labels,
        val_labels=val_labels,
        class_names=data.class_names,
    )


def _convert(images: torch.Tensor, channels: int | None, size: int | None) -> torch.Tensor:
    if channels is not None and images.shape[1] != channels:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:  # ITU-R 601 luma, as PIL's "L" conversion
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    if size is not None and tuple(images.shape[2:]) != (size, size):
        resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images
