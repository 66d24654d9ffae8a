"""What a running task can ask about itself: ``up.current()``."""

from __future__ import annotations

import contextvars
import os


class TaskContext:
    """Read-only facts about the running attempt (a plain class: no dataclasses import)."""

    __slots__ = ("_logical_date", "attempt", "backend", "map_index", "max_attempts", "pipeline",
                 "run_id", "task_id")

    def __init__(self, run_id: str, pipeline: str, task_id: str, attempt: int, max_attempts: int,
                 map_index: int | None = None, backend: str = "local",
                 logical_date: str | None = None) -> None:
        self._logical_date = logical_date
        self.run_id = run_id
        self.pipeline = pipeline
        self.task_id = task_id
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.map_index = map_index
        self.backend = backend

    @property
    def logical_date(self):  # type: ignore[no-untyped-def]
        """The time this run stands for, a timezone-aware ``datetime``: the schedule's fire time
        for a scheduled or backfilled run, the trigger time for a manual or asset-triggered one
        (Airflow 3 gives those none: its ``run_after`` then); None if the backend passed none."""
        if self._logical_date is None:
            return None
        from datetime import datetime

        return datetime.fromisoformat(self._logical_date.replace("Z", "+00:00"))

    def __repr__(self) -> str:
        return (f"TaskContext(run_id={self.run_id!r}, task_id={self.task_id!r}, "
                f"attempt={self.attempt}/{self.max_attempts}, map_index={self.map_index!r})")

    def scratch_url(self) -> str:
        """A folder URL stable across the attempts of this task in this run (for checkpoints)."""
        from unipipe.runtime.store import scratch_root

        suffix = f"-{self.map_index}" if self.map_index is not None else ""
        return f"{scratch_root()}/{self.run_id}/{self.task_id}{suffix}"


_CURRENT: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "unipipe_task", default=None
)


def current() -> TaskContext:
    """The context of the task attempt running now; raises outside a unipipe task."""
    ctx = _CURRENT.get()
    if ctx is None:
        raise RuntimeError("up.current() is only available while a unipipe task runs")
    return ctx


def set_current(ctx: TaskContext | None) -> contextvars.Token:
    return _CURRENT.set(ctx)


def reset_current(token: contextvars.Token) -> None:
    _CURRENT.reset(token)


def env_run_id() -> str | None:
    return os.environ.get("UNIPIPE_RUN_ID")
