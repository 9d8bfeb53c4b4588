"""Dataset files checked before training: torchvision's published MD5s, then decoding.

A truncated or damaged file (an interrupted download) fails where it is decoded, deep in
gzip or numpy, naming neither the file nor the fix. ``read_verified`` decodes a file and
turns any decoding failure into one ``CorruptDataError`` that names the file, says whether
it matches the MD5 torchvision publishes for it, and how to fix it. A file that decodes
but differs from the published sum (a re-compressed copy, test data) is used with a
warning.
"""

from __future__ import annotations

import functools
import logging
import pickle
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gentrain.core.errors import CorruptDataError, GentrainError

log = logging.getLogger("gentrain")
T = TypeVar("T")

DECODE_ERRORS = (
    EOFError,
    OSError,  # gzip.BadGzipFile among them
    zlib.error,
    pickle.UnpicklingError,
    ValueError,
    KeyError,
    TypeError,
    GentrainError,  # read_idx's own "bad magic number" / "truncated"
)
_checked: dict[tuple[str, int, int], bool] = {}  # (path, size, mtime) -> MD5 matches


@functools.cache
def published_md5s() -> dict[str, dict[str, str]]:
    """Folder under the data root -> {file name: MD5}, as torchvision downloads and checks
    them (torchvision is imported when data is read, not when a command starts)."""
    from torchvision import datasets

    return {
        "MNIST": dict(datasets.MNIST.resources),
        "FashionMNIST": dict(datasets.FashionMNIST.resources),
        "cifar-10-batches-py": dict(datasets.CIFAR10.train_list + datasets.CIFAR10.test_list),
    }


def published_md5(path: Path, folder: str) -> str | None:
    return published_md5s().get(folder, {}).get(path.name)


def file_version(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime): what a per-process cache of a file's contents is keyed
    by, so that a file replaced in place is read again."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def matches_published(path: Path, folder: str) -> bool | None:
    """Whether ``path`` has torchvision's MD5 (hashed once per file version and process);
    None if torchvision publishes none for it (an uncompressed copy, another dataset)."""
    md5 = published_md5(path, folder)
    if md5 is None:
        return None
    key = file_version(path)
    if key not in _checked:
        from torchvision.datasets.utils import check_integrity

        _checked[key] = check_integrity(str(path), md5)
    return _checked[key]


def read_verified(path: Path, folder: str, decode: Callable[[Path], T]) -> T:
    """``decode(path)``, or a CorruptDataError naming the file and the fix."""
    matches = matches_published(path, folder)
    try:
        result = decode(path)
    except DECODE_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        md5 = published_md5(path, folder)
        checksum = (
            f"; its MD5 differs from torchvision's published {md5}" if matches is False else ""
        )
        raise CorruptDataError(
            f"dataset file {path} is damaged and cannot be read ({type(exc).__name__}: "
            f"{reason}){checksum}. Fix: delete it and download it again (dataset.download=true "
            "with a network), or replace it with an intact copy"
        ) from None
    if matches is False:
        log.warning(
            "%s decodes, but its MD5 differs from torchvision's published %s: "
            "not the official file; using it",
            path,
            published_md5(path, folder),
        )
    return result
