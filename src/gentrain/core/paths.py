"""Where gentrain's files are: its packaged configs and a run directory's checkpoint.

Low level on purpose (no torch, no models): the CLI modules, ``restore``, ``warm_start``,
``compare`` and ``report`` all find files through these helpers, so none of them has to
import a CLI module, and the layout of a run directory is spelled in one place.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gentrain.core.errors import GentrainError

log = logging.getLogger("gentrain")

CHECKPOINTS_DIR = "checkpoints"  # inside a run directory
LAST_CHECKPOINT = "last.ckpt"  # the one checkpoint a run keeps, rewritten atomically


def config_dir() -> Path:
    """The packaged configs (wheel installs) or the repository's ``configs/`` (editable)."""
    package = Path(__file__).resolve().parents[1]  # src/gentrain, or site-packages/gentrain
    for candidate in (package / "configs", package.parents[1] / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"gentrain's configs/ not found next to {package}; reinstall gentrain")


def last_checkpoint(run_dir: Path) -> Path:
    """``<run_dir>/checkpoints/last.ckpt``, whether or not it exists yet."""
    return Path(run_dir) / CHECKPOINTS_DIR / LAST_CHECKPOINT


def checkpoint_path(path: str | Path) -> Path:
    """A run directory or a checkpoint file -> the checkpoint file."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = last_checkpoint(path)
    if not path.is_file():
        raise GentrainError(f"no checkpoint at {path}; pass a run directory or a .ckpt file")
    return path
