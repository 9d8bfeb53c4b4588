"""MNIST and Fashion-MNIST, decoded straight from torchvision's raw IDX files.

The ``.gz`` archives are read in place (the data directory may be read-only), so nothing
is ever extracted next to them. Missing files are downloaded with torchvision when a
network exists; otherwise the error says where we looked and what to put there.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import torch

from gentrain.core.errors import DataNotFoundError
from gentrain.core.registry import DATASETS
from gentrain.data.base import DatasetConfig, ImageData
from gentrain.data.integrity import file_version, read_verified

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: Zalando's names for Fashion-MNIST's labels 0-9 (as torchvision's ``FashionMNIST.classes``)
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file (LeCun's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataNotFoundError(f"{path} is not an IDX file (bad magic number); delete it")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise DataNotFoundError(f"{path} is truncated: expected {dims}, delete it and retry")
    return array.reshape(dims)


def read_idx_once(path: Path) -> np.ndarray:
    """``read_idx``, decoded once per file version and process (read-only): a sweep's
    jobs run in one process and each loads the same files, and gunzipping MNIST's
    training images takes longer than a smoke run's steps."""
    return _decoded(*file_version(path))


@functools.lru_cache(maxsize=8)  # both files of both splits of MNIST and Fashion-MNIST
def _decoded(path: str, size: int, mtime_ns: int) -> np.ndarray:
    array = read_idx(Path(path))
    array.flags.writeable = False
    return array


def _find(raw_dir: Path, stem: str) -> Path | None:
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_dataset(cfg: DatasetConfig, folder: str, class_names: list[str]) -> ImageData:
    """Load both splits of an MNIST-layout dataset under ``<root>/<folder>/raw``
    (``folder`` is also the name of torchvision's dataset class, which downloads it)."""
    root = Path(cfg.root).expanduser()
    if root.is_file():
        raise DataNotFoundError(
            f"the data directory {root.resolve()} is a file, not a directory. Fix: point "
            f"GENTRAIN_DATA_DIR (or paths.data_dir) at the folder that holds {folder}/raw"
        )
    raw_dir = root / folder / "raw"
    stems = [stem for files in SPLIT_FILES.values() for stem in files]
    if any(_find(raw_dir, s) is None for s in stems) and cfg.download:
        from torchvision import datasets  # imported when needed: a missing file fails fast

        _download(getattr(datasets, folder), root)
    missing = [s for s in stems if _find(raw_dir, s) is None]
    if missing:
        raise DataNotFoundError(
            f"{folder} not found: looked in {raw_dir.resolve()} for "
            f"{', '.join(s + '[.gz]' for s in stems)}; missing {', '.join(missing)}.\n"
            "Fix: point the data directory at a copy that has them "
            "(GENTRAIN_DATA_DIR=/path/to/datasets or paths.data_dir=...), "
            "or run once with a network and dataset.download=true."
        )
    splits, labels = {}, {}
    for split, (images_stem, labels_stem) in SPLIT_FILES.items():
        images = read_verified(_find(raw_dir, images_stem), folder, read_idx_once)  # type: ignore[arg-type]
        splits[split] = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, 28, 28)
        targets = read_verified(_find(raw_dir, labels_stem), folder, read_idx_once)  # type: ignore[arg-type]
        labels[split] = torch.from_numpy(targets.astype(np.int64))
    return ImageData(
        name=cfg.name,
        train=splits["train"],
        val=splits["val"],
        train_labels=labels["train"],
        val_labels=labels["val"],
        class_names=class_names,
    )


def _download(tv_class: type, root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            tv_class(root=str(root), train=train, download=True)
    except Exception as exc:  # no network, read-only directory, mirror down, ...
        raise DataNotFoundError(
            f"could not download {tv_class.__name__} into {root.resolve()}: {exc}\n"
            "Fix: copy the four raw .gz files into "
            f"{(root / tv_class.__name__ / 'raw').resolve()} and set dataset.download=false, "
            "or point GENTRAIN_DATA_DIR at a directory that holds them."
        ) from None


@DATASETS.register("mnist")
def load_mnist(cfg: DatasetConfig) -> ImageData:
    return load_idx_dataset(cfg, "MNIST", [str(d) for d in range(10)])


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(cfg: DatasetConfig) -> ImageData:
    return load_idx_dataset(cfg, "FashionMNIST", FASHION_CLASSES)
