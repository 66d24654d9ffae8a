"""Opt-in timing of the runtime shim's own work inside one attempt's process, for
comparisons/perf/shim_engines.py (issue 16). Off, and free, unless ``UNIPIPE_SHIM_TIMING``
names a folder: then each attempt appends one JSON line to ``<folder>/timing.jsonl`` with
``time.perf_counter`` spans taken in the attempt's own process:

- ``import_ms``: executing the engine adapter's module (``unipipe_airflow.runtime``), timed by
  the module itself from its first statement to its last (finding and reading the file before
  that is in ``-X importtime``, which the benchmark records separately);
- ``entry_ms``: the adapter's entry point (``run_task`` / ``run_component``) from its first
  statement to its return, which includes importing the shim (``unipipe.runtime``) and the
  task's module (``module_ms`` of it) and the user function's call (``user_ms``);
- ``shim_ms`` = ``import_ms + entry_ms - user_ms``: what unipipe adds to the attempt.

The line is written after the entry point's clock stops (one O_APPEND write), so writing it is
not counted.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # keeps `typing` off the shim's import path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DIR = os.environ.get("UNIPIPE_SHIM_TIMING") or None
_spans: dict[str, float] = {}


def add(name: str, seconds: float) -> None:
    """Add ``seconds`` to the span ``name`` of the running attempt (when timing is on)."""
    if DIR is not None:
        _spans[name] = _spans.get(name, 0.0) + seconds


def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its calls added to ``user`` (when timing is on; else ``fn`` itself)."""
    if DIR is None:
        return fn

    def call(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            add("user", time.perf_counter() - start)

    return call


def finish(entered: float, *, backend: str, task: str,
           imported: tuple[float, float] | None = None) -> None:
    """Close the attempt's record: ``entered`` is the entry point's first perf_counter."""
    if DIR is None:
        return
    entry = time.perf_counter() - entered
    spans = dict(_spans)
    _spans.clear()
    import_s = imported[1] - imported[0] if imported else 0.0
    user = spans.get("user", 0.0)
    record = {"backend": backend, "task": task, "pid": os.getpid(),
              "import_ms": round(1000 * import_s, 3), "entry_ms": round(1000 * entry, 3),
              "module_ms": round(1000 * spans.get("module", 0.0), 3),
              "user_ms": round(1000 * user, 3),
              "shim_ms": round(1000 * (import_s + entry - user), 3)}
    import json

    os.makedirs(DIR, exist_ok=True)
    fd = os.open(os.path.join(DIR, "timing.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)
