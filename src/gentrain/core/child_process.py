"""A training run as gentrain-compare's child process: both ends of the tie.

The parent side (``ChildProcess``) starts ``gentrain`` and forwards the signals it gets; the
child side (``stop_with_parent``, called first thing by the CLI) makes the kernel stop the
run when the parent dies. ``PARENT_PID_ENV`` is how the child knows it has such a parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

PARENT_PID_ENV = "GENTRAIN_PARENT_PID"  # set by gentrain-compare for its training runs


class ChildProcess:
    """One ``gentrain`` process that stops cleanly when we are asked to stop.

    Ctrl-C and SIGTERM here reach the child once (SIGHUP as SIGTERM), and we wait while it
    saves its checkpoint; a second Ctrl-C stops it at once. The child has its own session,
    so a terminal's Ctrl-C is not delivered twice (which the trainer reads as "stop now").
    The handlers are in place before the child starts: no signal falls in between.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.command = command
        self.env = env or {}  # added to this process's environment
        self.stopped_by: str | None = None  # the first signal we forwarded
        self._child: subprocess.Popen | None = None
        self._pending: list[int] = []

    def _forward(self, signum: int, frame: Any) -> None:
        self.stopped_by = self.stopped_by or signal.Signals(signum).name
        sent = signal.SIGTERM if signum == signal.SIGHUP else signum
        if self._child is None:
            self._pending.append(sent)
        else:
            self._child.send_signal(sent)

    def run(self) -> int:
        previous = {s: signal.signal(s, self._forward) for s in self.HANDLED}
        try:
            # The child stops (saving) if we die: see gentrain.core.runtime.stop_with_parent.
            env = {**os.environ, **self.env, PARENT_PID_ENV: str(os.getpid())}
            self._child = subprocess.Popen(self.command, start_new_session=True, env=env)
            for sent in self._pending:
                self._child.send_signal(sent)
            return self._child.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def stop_with_parent() -> None:
    """A run started by gentrain-compare gets SIGTERM (save, then exit) when compare dies
    (a closed terminal, a kill): no trainer goes on alone, writing to a directory that a
    rerun would resume. Linux only (prctl); elsewhere compare forwards the signals it gets.
    """
    expected = os.environ.pop(PARENT_PID_ENV, None)
    if expected is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(expected):  # compare died before prctl: stop now
        sys.exit(143)
