"""Generative models; importing this package registers every model in ``MODELS``."""

from gentrain.models import gan, vae, vaegan  # noqa: F401  (registers models)
from gentrain.models.base import GenerativeModel, build_model

__all__ = ["GenerativeModel", "build_model"]
