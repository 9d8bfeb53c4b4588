"""The process a run trains in: its device and its seeds.

Below the CLI: ``train``, ``restore`` (evaluation, sampling) and ``compare`` set up a
process the same way through these helpers.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from gentrain.core.config import DeviceConfig
from gentrain.core.errors import ConfigError


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not deterministic


def resolve_device(cfg: DeviceConfig) -> torch.device:
    """The configured device, or a ConfigError saying why it is not usable here."""
    if cfg.num_threads is not None:
        if cfg.num_threads < 1:
            raise ConfigError(f"device.num_threads must be >= 1, got {cfg.num_threads}")
        torch.set_num_threads(cfg.num_threads)
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if cfg.name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if cfg.name == "cuda" and not cuda:
        raise ConfigError(
            "device=cuda but CUDA is not available here "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "use device=cpu or device=auto"
        )
    if cfg.name == "mps" and not mps:
        raise ConfigError("device=mps but Apple MPS is not available here; use device=auto")
    return torch.device(cfg.name)
