"""A directory of the user's own images, decoded once into memory.

Every PIL-readable file under ``dataset.path`` (nested folders included) is converted to
the configured channels, resized on its short side and centre-cropped to a square, then
held as uint8. Files PIL cannot read stop the run with their names listed: silently
skipping them would train on less data than the user thinks.

Labels come from the layout, as torchvision's ``ImageFolder`` reads it: when every image
lies under a first-level subfolder and there are at least two, each subfolder is a class
(sorted by name; the names are the class names grids and ``gentrain-sample --label`` show).
Images directly under ``dataset.path`` make the dataset unlabelled.

The validation split is ``dataset.val_fraction`` of the images, drawn with a fixed seed
(independent of the training seed, so it never changes between runs) and, for a labelled
folder, per class: each class keeps its share in both splits, however unbalanced the
folder. The split is logged with its counts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gentrain.core.errors import ConfigError, DataNotFoundError, bulleted
from gentrain.core.registry import DATASETS
from gentrain.data.base import DatasetConfig, ImageData

log = logging.getLogger("gentrain")

SPLIT_SEED = 0
IGNORED_SUFFIXES = {".txt", ".md", ".json", ".csv", ".yaml", ".yml", ".db", ".ini"}
# In-memory decoding is the fast path; refuse sizes that would not fit in host memory.
MAX_BYTES = 8 * 1024**3


def list_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in IGNORED_SUFFIXES
    )


def classes_from_layout(folder: Path, files: list[Path]) -> tuple[list[str] | None, list[int]]:
    """(class names, each file's label) when the files sit in one subfolder per class,
    else (None, [])."""
    first = [f.relative_to(folder).parts[0] for f in files]
    if any(len(f.relative_to(folder).parts) < 2 for f in files) or len(set(first)) < 2:
        return None, []
    names = sorted(set(first))
    index = {name: i for i, name in enumerate(names)}
    return names, [index[name] for name in first]


def split(count: int, val_fraction: float, labels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """(train, validation) indices: ``val_fraction`` of the images (at least one), chosen
    with a fixed seed; with labels, that share of each class (at least one of each class
    that has two images or more), so both splits keep the folder's class balance."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    groups = (
        [torch.arange(count)]
        if labels is None
        else [torch.nonzero(labels == c).flatten() for c in range(int(labels.max()) + 1)]
    )
    train, val = [], []
    for group in groups:
        order = group[torch.randperm(len(group), generator=generator)]
        n_val = (
            min(max(1, round(len(order) * val_fraction)), len(order) - 1) if len(order) > 1 else 0
        )
        train.append(order[n_val:])
        val.append(order[:n_val])
    train_rows, val_rows = torch.cat(train), torch.cat(val)
    if not len(val_rows):  # every class a single image: hold one out all the same
        val_rows, train_rows = train_rows[:1], train_rows[1:]
    # Classes mixed in each split, so that a grid or dataset.limit's first rows show several.
    train_rows = train_rows[torch.randperm(len(train_rows), generator=generator)]
    val_rows = val_rows[torch.randperm(len(val_rows), generator=generator)]
    return train_rows, val_rows


def load_image(path: Path, channels: int, size: int) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize(
            (max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC
        )
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
        array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


@DATASETS.register("image_folder")
def load_image_folder(cfg: DatasetConfig) -> ImageData:
    if cfg.path is None:
        raise ConfigError("dataset=image_folder needs dataset.path=/directory/of/images")
    if cfg.image_size is None:
        raise ConfigError("dataset=image_folder needs dataset.image_size (e.g. 32 or 64)")
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        raise DataNotFoundError(f"dataset.path {folder.resolve()} is not a directory")
    files = list_images(folder)
    channels = cfg.channels or 3
    if len(files) < 2:
        raise DataNotFoundError(
            f"found {len(files)} image file(s) under {folder.resolve()}; need at least 2 "
            "(one for training, one for validation)"
        )
    needed = len(files) * channels * cfg.image_size**2
    if needed > MAX_BYTES:
        raise ConfigError(
            f"{len(files)} images at {cfg.image_size}px need {needed / 1024**3:.1f} GiB in memory "
            f"(limit {MAX_BYTES / 1024**3:.0f} GiB); lower dataset.image_size or use a subset"
        )
    images, unreadable = [], []
    for path in files:
        try:
            images.append(load_image(path, channels, cfg.image_size))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            unreadable.append(f"{path} ({type(exc).__name__})")
    if unreadable:
        raise DataNotFoundError(
            f"{len(unreadable)} file(s) under {folder.resolve()} are not readable images:\n"
            f"{bulleted(unreadable, 20)}\nFix: remove or convert them."
        )
    data = torch.from_numpy(np.stack(images))
    class_names, labels = classes_from_layout(folder, files)
    targets = torch.tensor(labels, dtype=torch.long) if class_names else None
    train, val = split(len(data), cfg.val_fraction, targets)
    log.info(
        "image folder %s: %d training and %d validation images%s (seeded split, %s)",
        folder,
        len(train),
        len(val),
        "" if class_names is None else f" in {len(class_names)} classes",
        "unlabelled" if class_names is None else "the same share of every class",
    )
    return ImageData(
        name=cfg.name,
        train=data[train],
        val=data[val],
        train_labels=None if targets is None else targets[train],
        val_labels=None if targets is None else targets[val],
        class_names=class_names,
    )
