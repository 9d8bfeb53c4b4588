"""One writer per run directory: ``<run>/.gentrain.lock``, held for the life of a run.

Two processes resuming the same run (``trainer.resume=auto`` twice, a requeued SLURM job
beside its old copy, a sweep relaunched into the same directory) would both write
``last.ckpt`` and ``history.jsonl``. The first holds an advisory lock (``flock``) on the
lock file, which names its PID and host; a second is refused with those. The kernel drops
the lock when its holder dies, even by ``kill -9``, so the file a dead process left behind
is stale and the next run takes it over. Where ``flock`` is unavailable (Windows, some
network file systems) the PID in the file decides: a live process on this host, or any
process on another host, holds it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from gentrain.core.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("gentrain")
LOCK_NAME = ".gentrain.lock"


class RunDirectoryInUse(ConfigError):
    """Another live process writes this run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {since})"


class RunLock:
    """``with RunLock(run_dir):`` -- the lock on ``run_dir``, or RunDirectoryInUse."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _read(self, fd: int) -> dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode(errors="replace")
        try:
            holder = json.loads(text)
        except ValueError:
            return {}
        return holder if isinstance(holder, dict) else {}

    def _refuse(self, holder: dict[str, Any]) -> RunDirectoryInUse:
        who = _describe(holder) if holder else "another process"
        return RunDirectoryInUse(
            f"{self.run_dir} is in use by another gentrain run, {who}: two writers would "
            "overwrite each other's last.ckpt and history.jsonl. Wait for it to finish or stop "
            "it, or train into another directory"
        )

    def _open(self) -> int:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot write to the run directory {self.run_dir} ({exc.strerror}); "
                "pick a writable one (hydra.run.dir=... or paths.output_dir=...)"
            ) from None

    def acquire(self) -> None:
        while True:
            fd = self._open()
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise self._refuse(holder) from None
            except OSError:  # no flock here (some network file systems): PIDs decide
                pass
            else:  # a releasing holder unlinks the file: lock the one that is there now
                try:
                    current = os.stat(self.path).st_ino
                except FileNotFoundError:
                    current = None
                if current != os.fstat(fd).st_ino:
                    os.close(fd)
                    continue
                return self._take(fd, pid_check=fcntl is None)
            return self._take(fd, pid_check=True)

    def _take(self, fd: int, pid_check: bool) -> None:
        previous = self._read(fd)
        if previous and previous.get("pid") != os.getpid():
            here = previous.get("host") == socket.gethostname()
            if pid_check and (not here or _alive(int(previous.get("pid", 0)))):
                os.close(fd)
                refusal = self._refuse(previous)
                raise RunDirectoryInUse(
                    f"{refusal}; if that process is gone, delete {self.path}"
                ) from None
            log.warning(
                "%s: taking over the stale lock of %s, which is gone",
                self.run_dir,
                _describe(previous),
            )
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(holder) + "\n").encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: see acquire's inode check
        os.close(self._fd)  # drops the flock
        self._fd = None
