"""One JSON line per task attempt (and per alert) in ``$UNIPIPE_TRACE_DIR/<run_id>.jsonl``.

Lines are written with a single O_APPEND write, so concurrent task processes never interleave.
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False  # keeps `typing` off the shim's import path; type checkers see True
if TYPE_CHECKING:
    from typing import Any


def emit(event: dict[str, Any]) -> None:
    trace_dir = os.environ.get("UNIPIPE_TRACE_DIR")
    if not trace_dir:
        return
    os.makedirs(trace_dir, exist_ok=True)
    path = os.path.join(trace_dir, f"{_safe(str(event.get('run_id', 'run')))}.jsonl")
    line = (json.dumps(event, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:200]


def read(trace_dir: str | os.PathLike[str], run_id: str | None = None) -> list[dict[str, Any]]:
    """Events of one run (or all runs) in write order."""
    from pathlib import Path

    root = Path(trace_dir)
    files = [root / f"{_safe(run_id)}.jsonl"] if run_id else sorted(root.glob("*.jsonl"))
    events = []
    for f in files:
        if f.exists():
            for line in f.read_text().splitlines():
                if line.strip():
                    events.append(json.loads(line))
    return events
