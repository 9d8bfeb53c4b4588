"""Errors a user can fix: the CLI prints their message alone, without a traceback."""

from typing import Any


def bulleted(items: list[str], limit: int) -> str:
    """``items`` one per indented line, at most ``limit`` of them and a count of the rest."""
    shown = "\n  ".join(items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"  {shown}{more}"


class GentrainError(Exception):
    """Base class for errors caused by input (configs, data, checkpoints), not by bugs."""


class ConfigError(GentrainError):
    """A config value is missing, of the wrong type or out of range."""


class DataNotFoundError(GentrainError):
    """A dataset's files are not where the config says, and could not be downloaded."""


class TrainingDivergedError(GentrainError):
    """A loss became NaN or infinite; training stopped before writing a bad checkpoint."""


class CorruptDataError(GentrainError):
    """A dataset file is there but damaged (truncated download, bad copy)."""


class StorageError(GentrainError):
    """A file could not be written (disk full, read-only, no permission); the previous
    version of it is intact."""


def require_at_least(
    config: Any, section: str, minimum: int, *keys: str, nullable: bool = False
) -> None:
    """ConfigError naming the first of ``keys`` whose value in ``config`` (a config
    dataclass) is below ``minimum``; with ``nullable``, None passes."""
    for key in keys:
        value = getattr(config, key)
        if nullable and value is None:
            continue
        if value < minimum:
            bound = f">= {minimum} or null" if nullable else f">= {minimum}"
            raise ConfigError(f"{section}.{key} must be {bound}, got {value}")
