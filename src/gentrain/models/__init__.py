"""Generative models; importing this package imports every module in it, which registers
each model in ``MODELS``: a new model is a new module here, with no list to extend."""

import importlib
import pkgutil

from gentrain.models.base import GenerativeModel, build_model

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["GenerativeModel", "build_model"]
