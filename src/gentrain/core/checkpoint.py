"""Checkpoints that survive crashes and load with ``torch.load(weights_only=True)``.

A checkpoint is written to a temporary file in the same directory, flushed to disk and
renamed over the old one, so ``last.ckpt`` is always either the old or the new state.
It holds only tensors, numbers, strings and containers of them (no pickled objects).
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from gentrain.core.errors import GentrainError, StorageError
from gentrain.core.ranks import rank_zero_only

FORMAT_VERSION = 1


WRITE_FIXES = {
    errno.ENOSPC: "free disk space or write elsewhere",
    errno.EDQUOT: "free space within your quota or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "fix the directory's permissions or write elsewhere",
    errno.EPERM: "fix the directory's permissions or write elsewhere",
}


# A resumed run continues in its own directory: to go on on another disk, move it first.
RESUME = (
    "(a new run: hydra.run.dir=...); then continue this run in place with "
    "trainer.resume=<its run dir>, after moving that directory if its disk is the problem"
)


def write_failure(path: Path, exc: OSError, then: str = RESUME) -> StorageError:
    """A failed write as one line: the file, the cause, what is kept and the fix (``then``:
    what to do after, for a run's own files resuming it)."""
    code = errno.errorcode.get(exc.errno or 0, "")
    cause = f"{exc.strerror or exc}" + (f" ({code})" if code else "")
    kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
    fix = WRITE_FIXES.get(exc.errno or 0, "check the disk and the directory")
    return StorageError(
        f"could not write {path}: {cause}; {kept}, no temporary file is left. Fix: {fix} {then}"
    )


def check_writable(path: Path, then: str) -> None:
    """Before the work whose result goes to ``path``: its directory can be created and
    written to (a probe file, removed), else the StorageError that writing would raise."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise write_failure(path, exc, then) from None


@rank_zero_only
def atomic_write(path: Path, write: Callable[[BinaryIO], None], then: str = RESUME) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync it, rename it over ``path``.

    On any failure the temp file is removed and ``path`` keeps its old content; an
    ``OSError`` (disk full, read-only, no permission), or torch's zip writer failing mid-file
    (a RuntimeError, not an OSError), becomes a StorageError saying so.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_failure(path, exc, then) from None
        if isinstance(exc, RuntimeError) and _is_torch_write_failure(exc):
            raise write_failure(path, _os_error_behind(exc, path.parent), then) from None
        raise


def _is_torch_write_failure(exc: RuntimeError) -> bool:
    """torch.save's C++ writer reports a short write as ``[enforce fail at
    inline_container.cc:...] . unexpected pos ...`` or ``PytorchStreamWriter failed ...``."""
    text = str(exc)
    return "inline_container" in text or "PytorchStreamWriter" in text or "file write" in text


def _os_error_behind(exc: RuntimeError, directory: Path) -> OSError:
    """The OSError a short write most likely was: a full disk when it has (almost) no
    space left, else the writer's own words."""
    try:
        full = shutil.disk_usage(directory).free < 1024**2
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return OSError(0, f"the write stopped short ({str(exc).splitlines()[0][:120]})")


def atomic_write_bytes(path: Path, data: bytes, then: str = RESUME) -> None:
    atomic_write(path, lambda f: f.write(data), then)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The training state in ``path``, read with ``weights_only=True``: nothing in the file
    runs. A foreign, damaged or malicious file is refused with a message that names it and
    never suggests ``weights_only=False`` (PyTorch's own text does)."""
    if not path.is_file():
        raise GentrainError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise GentrainError(
            f"{path} is not a gentrain checkpoint or holds Python objects that gentrain will "
            "not unpickle (its checkpoints hold only tensors and plain values); nothing in it "
            "was run. Use the checkpoints/last.ckpt of a gentrain run, and do not load this "
            "file elsewhere unless you trust its source"
        ) from None
    except Exception as exc:
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        raise GentrainError(
            f"cannot read checkpoint {path}: it is damaged or not a PyTorch file ({reason}). "
            "Use an intact checkpoints/last.ckpt of a gentrain run"
        ) from None
    if not isinstance(state, dict) or not {"format_version", "model"} <= set(state):
        raise GentrainError(
            f"{path} is not a gentrain checkpoint (it holds a {type(state).__name__} without "
            "gentrain's training state); pass a gentrain run directory or its "
            "checkpoints/last.ckpt"
        )
    if state.get("format_version") != FORMAT_VERSION:
        raise GentrainError(
            f"checkpoint {path} has format {state.get('format_version')}, "
            f"this gentrain reads format {FORMAT_VERSION}"
        )
    return state


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and plain Python values."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [
            np_name,
            torch.from_numpy(np_keys.astype(np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(
        (np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss)
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
