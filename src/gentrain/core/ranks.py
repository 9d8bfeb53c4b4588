"""The one place that knows which process this is: its rank, and whether Hydra runs it as
a sweep's job.

Logging and checkpointing go through ``is_main_process`` / ``rank_zero_only`` so that
data-parallel training can be added later without touching the training loop.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

import torch.distributed as dist

F = TypeVar("F", bound=Callable)


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def is_main_process() -> bool:
    return rank() == 0


def rank_zero_only(fn: F) -> F:
    """Run ``fn`` on rank 0 only; other ranks get ``None``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) if is_main_process() else None

    return wrapper  # type: ignore[return-value]


def in_sweep_job() -> bool:
    """Whether Hydra runs this process's task as one job of a sweep (``-m``, a search)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
