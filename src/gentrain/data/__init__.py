"""Datasets: each registered loader returns the whole split as a uint8 tensor. Importing
this package imports every module in it, which registers each loader in ``DATASETS``."""

import importlib
import pkgutil

from gentrain.data.base import DatasetConfig, ImageData, build_dataset
from gentrain.data.batch import Batch
from gentrain.data.loader import DeviceTensorLoader, check_batch_fits

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "Batch",
    "DatasetConfig",
    "DeviceTensorLoader",
    "ImageData",
    "build_dataset",
    "check_batch_fits",
]
