"""Errors a user can fix: the CLI prints their message alone, without a traceback."""


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
