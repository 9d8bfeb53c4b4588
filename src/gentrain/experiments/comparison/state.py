"""``compare.json``: a comparison directory's plan and each run's status, and its lock."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gentrain.core.checkpoint import atomic_write_bytes
from gentrain.core.errors import ConfigError
from gentrain.experiments.comparison.arms import Arm

STATE_FILE = "compare.json"  # the plan and each run's status: what a rerun continues from


class CompareState:
    """``compare.json``: the plan, each run's command and status, rewritten atomically.

    A directory accumulates one comparison: later calls may add seeds or arms, but not
    change the budget, the overrides or an arm's definition (the numbers would not be
    comparable), and only one ``gentrain-compare`` works in it at a time.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / STATE_FILE
        self.data: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {"runs": {}}

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``DIR/.lock`` while training: a second process would resume the first
        one's runs and overwrite its state."""
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one process at a time by hand
            yield
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / ".lock").open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ConfigError(
                    f"{self.out} is in use by another gentrain-compare ({holder}); wait for "
                    "it to finish, or use another --out"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            self.data = self._read()  # what the last holder left, not what we read before
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def merge_plan(
        self,
        arms: list[Arm],
        order: list[str],
        seeds: list[int],
        budget: list[str],
        overrides: list[str],
    ) -> None:
        """Add this call's arms and seeds to the directory's plan; refuse other settings."""
        for key, now in (("budget", budget), ("overrides", overrides)):
            if key in self.data and self.data[key] != now:
                raise ConfigError(
                    f"{self.out} holds runs made with {key} {self.data[key]}, not {now}: their "
                    "numbers would not be comparable. Use another --out, or the same settings "
                    "(more --seeds or --arms are fine)"
                )
        known = {a["name"]: a for a in self.data.get("arms", [])}
        for arm in arms:
            before = known.get(arm.name)
            if before is None:
                continue
            if (
                before.get("overrides", arm.overrides) != arm.overrides
                or before.get("init_from") != arm.init_from
            ):
                raise ConfigError(
                    f"arm {arm.name!r} was {before.get('overrides')} "
                    f"(init_from {before.get('init_from')}) when {self.out} was made and is "
                    f"{arm.overrides} (init_from {arm.init_from}) now: their numbers would not "
                    "be comparable. Use another --out, or restore the arm's definition"
                )
        merged = {**known, **{a.name: _arm_record(a) for a in arms}}
        rank = {name: i for i, name in enumerate(order)}
        names = sorted(merged, key=lambda n: rank.get(n, len(rank)))
        self.data.update(
            arms=[merged[n] for n in names],
            seeds=sorted(set(self.data.get("seeds", [])) | set(seeds)),
            budget=budget,
            overrides=overrides,
        )

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, (json.dumps(self.data, indent=2) + "\n").encode())

    def record(self, key: str) -> dict[str, Any]:
        return self.data["runs"].setdefault(key, {"status": "pending"})


def _arm_record(arm: Arm) -> dict[str, Any]:
    return {
        "name": arm.name,
        "label": arm.label,
        "init_from": arm.init_from,
        "overrides": arm.overrides,
    }
