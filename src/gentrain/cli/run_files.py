"""A single run's ``.hydra/`` and ``train.log``, written once the run's checks have passed.

Hydra writes both into the run directory before the task starts, so a run refused for a
bad dataset or checkpoint used to leave a directory of debris, and one refused inside an
existing run's directory rewrote that run's ``.hydra/config.yaml``. For a single run
``gentrain`` turns Hydra's writing off (``deferred_overrides``), keeps the log records in
memory, and writes the same files when the run really starts (``RunFiles.write``); a
refused run leaves nothing, and removes the directory Hydra created if it is empty. A
sweep's jobs keep Hydra's own files: each is a new directory, and the summary reads them.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gentrain.core.checkpoint import atomic_write_bytes
from gentrain.core.ranks import is_main_process

log = logging.getLogger("gentrain")

DEFERRED = [
    "hydra.output_subdir=null",
    "hydra.job_logging.root.handlers=[console]",
    "~hydra.job_logging.handlers.file",
]


def deferred_overrides(argv: list[str]) -> list[str]:
    """Hydra overrides that leave a single run's files to ``RunFiles`` (none for a sweep's
    jobs). Under torchrun every rank takes them: rank 0 alone writes the files, and the
    other ranks' messages still reach torchrun's console."""
    if any(arg in ("-m", "--multirun") for arg in argv) and is_main_process():
        return []
    return list(DEFERRED)


class RunFiles:
    """Log records kept from the task's start, and Hydra's files, until ``write``."""

    def __init__(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get() if HydraConfig.initialized() else None
        self.active = hydra is not None and hydra.output_subdir is None
        self.hydra = hydra
        self.buffer = logging.handlers.MemoryHandler(capacity=1_000_000, flushLevel=100)
        if self.active:
            logging.getLogger().addHandler(self.buffer)

    def write(self, cfg: DictConfig, output_dir: Path) -> None:
        """``.hydra/{config,hydra,overrides}.yaml`` and ``train.log`` (the records so far,
        then every later one), as Hydra would have written them."""
        if not self.active:
            return
        folder = output_dir / ".hydra"
        if (folder / "config.yaml").is_file():  # a resumed run keeps its own; the log grows
            log.info("continued with: %s", " ".join(self.hydra.overrides.task))
        else:
            folder.mkdir(parents=True, exist_ok=True)
            hydra = OmegaConf.create({"hydra": self.hydra})
            atomic_write_bytes(folder / "config.yaml", OmegaConf.to_yaml(cfg).encode())
            atomic_write_bytes(folder / "hydra.yaml", OmegaConf.to_yaml(hydra).encode())
            overrides = OmegaConf.to_yaml(list(self.hydra.overrides.task))
            atomic_write_bytes(folder / "overrides.yaml", overrides.encode())
        log_file = logging.FileHandler(output_dir / "train.log")  # appends
        simple = self.hydra.job_logging.formatters.simple.format
        log_file.setFormatter(logging.Formatter(simple))
        self.buffer.setTarget(log_file)
        self.buffer.flush()
        root = logging.getLogger()
        root.removeHandler(self.buffer)
        root.addHandler(log_file)
        self.active = False

    def discard(self) -> None:
        """A refused run: drop the records and the empty directory Hydra made for it."""
        logging.getLogger().removeHandler(self.buffer)
        if self.active:
            with contextlib.suppress(OSError):  # rmdir removes only an empty directory
                Path(self.hydra.runtime.output_dir).rmdir()
