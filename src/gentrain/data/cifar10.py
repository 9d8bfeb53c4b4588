"""CIFAR-10 read from the python-pickle batches torchvision downloads.

Reading the batches ourselves (not ``torchvision.datasets.CIFAR10``) keeps the data
directory read-only friendly and hands back uint8 tensors with no per-image PIL work.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from gentrain.core.errors import DataNotFoundError
from gentrain.core.registry import DATASETS
from gentrain.data.base import DatasetConfig, ImageData
from gentrain.data.integrity import read_verified

FOLDER = "cifar-10-batches-py"
#: CIFAR-10's labels 0-9 (batches.meta's ``label_names``)
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]


def read_batches(folder: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8, (N, 3, 32, 32)) and labels (int64) of the named pickle batches."""
    arrays, labels = [], []
    for name in names:
        data, targets = read_verified(folder / name, FOLDER, _read_batch)
        arrays.append(data)
        labels.append(targets)
    return torch.from_numpy(np.concatenate(arrays)), torch.from_numpy(np.concatenate(labels))


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")  # the official files are pickles
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(entry["labels"], dtype=np.int64)


@DATASETS.register("cifar10")
def load_cifar10(cfg: DatasetConfig) -> ImageData:
    root = Path(cfg.root).expanduser()
    folder = root / FOLDER
    names = TRAIN_BATCHES + TEST_BATCHES
    if any(not (folder / n).is_file() for n in names) and cfg.download:
        try:
            root.mkdir(parents=True, exist_ok=True)
            from torchvision import datasets

            datasets.CIFAR10(root=str(root), train=True, download=True)
        except Exception as exc:
            raise DataNotFoundError(
                f"could not download CIFAR-10 into {root.resolve()}: {exc}\n"
                f"Fix: unpack cifar-10-python.tar.gz so that {folder.resolve()} holds "
                f"{', '.join(names)}, or point GENTRAIN_DATA_DIR at a directory that does."
            ) from None
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataNotFoundError(
            f"CIFAR-10 not found: looked in {folder.resolve()} for {', '.join(names)}; "
            f"missing {', '.join(missing)}.\nFix: point the data directory at a copy "
            "(GENTRAIN_DATA_DIR=... or paths.data_dir=...), or run with a network and "
            "dataset.download=true."
        )
    train, train_labels = read_batches(folder, TRAIN_BATCHES)
    val, val_labels = read_batches(folder, TEST_BATCHES)
    return ImageData(
        name=cfg.name,
        train=train,
        val=val,
        train_labels=train_labels,
        val_labels=val_labels,
        class_names=list(CLASSES),
    )
