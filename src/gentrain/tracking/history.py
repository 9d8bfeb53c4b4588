"""``history.jsonl``: one JSON record per validation (step, epoch, training time, ``val/*``).

The learning curves that reports draw (FID against training time) come from it. A run
killed mid-write (disk full, power) can leave a partial last line: readers skip lines that
do not parse instead of failing on every later resume or report.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from gentrain.core.checkpoint import write_failure

log = logging.getLogger("gentrain")


def read_history(path: Path) -> list[dict[str, Any]]:
    """The records of ``path`` (none if it does not exist), unreadable lines left out."""
    if not path.is_file():
        return []
    records, bad = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
        else:
            bad += 1
    if bad:
        log.warning("%s: skipped %d unreadable line(s)", path, bad)
    return records


def append_record(path: Path, record: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as exc:  # disk full: readers skip a partial last line
        raise write_failure(path, exc) from None
