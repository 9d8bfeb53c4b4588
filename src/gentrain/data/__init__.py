"""Datasets: each registered loader returns the whole split as a uint8 tensor."""

from gentrain.data import cifar10, image_folder, mnist  # noqa: F401  (registers loaders)
from gentrain.data.base import DatasetConfig, ImageData, build_dataset
from gentrain.data.loader import DeviceTensorLoader, check_batch_fits

__all__ = ["DatasetConfig", "DeviceTensorLoader", "check_batch_fits", "ImageData", "build_dataset"]
