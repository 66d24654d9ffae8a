"""``unipipe backfill``: the runs a schedule would have created in a window, created now.

The dates are the schedule's fire times in ``[start, end]`` (:func:`unipipe.schedules.fire_times`,
the reference meaning); each run gets its date as ``up.current().logical_date``.

Backends: ``local`` (the reference runner) runs them here, at most ``max_active`` at once.
``kubeflow``: one KFP run per date through the backend's run (the project's executor, or a KFP
API with ``host=``), the date as the pipeline's hidden ``unipipe_logical_date`` parameter (KFP
fills the schedule-time placeholder of a run created by hand with its creation time).
A backend whose Backend object has ``backfill(ir, dates, *, max_active, params, progress,
extra) -> list[RunResult]`` creates the runs the engine's own way (Airflow's backfill, Prefect
flow runs scheduled at each date: docs/facts/events-schedules-artifacts.md). Any other backend
is refused before anything is created.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from unipipe.ir.models import Pipeline
from unipipe.result import RunResult
from unipipe.schedules import ScheduleError, fire_times, parse_when

#: backends with no backfill of their own whose runs, one per date, are the engine's runs
BACKENDS = ("local", "kubeflow")


class BackfillError(ValueError):
    """A backfill that cannot start (no schedule, a bad window, an unsupported backend): exit 2,
    no run created."""


def plan(ir: Pipeline, start: str, end: str) -> list[datetime]:
    """The logical dates of the runs the schedule creates in ``[start, end]`` (times without an
    offset are read in the schedule's timezone; an ``end`` that is a date includes that day)."""
    if ir.schedule is None:
        raise BackfillError(f"pipeline {ir.name!r} has no schedule: a backfill creates the runs "
                            f"its schedule would have created (@up.pipeline(schedule=...))")
    tz = ir.schedule.timezone
    try:
        first, last = parse_when(start, tz), parse_when(end, tz)
        if len(end.strip()) == 10:  # a date: the whole day, as people count a window's days
            last += timedelta(days=1, microseconds=-1)
    except ScheduleError as exc:
        raise BackfillError(f"--start/--end: {exc}") from None
    if first > last:
        raise BackfillError(f"--start {start} is after --end {end}")
    return fire_times(ir.schedule, first, last)


def _one(ir_json: str, backend: str, params: dict[str, Any], when: str) -> dict[str, Any]:
    import json

    from unipipe.api import run
    from unipipe.ir import load_ir_data

    ir = load_ir_data(json.loads(ir_json))
    stamp = when.replace(":", "").replace("+", "p")
    result = run(ir, backend=backend, params=params, run_id=f"backfill-{stamp}",
                 logical_date=when)
    return result.to_dict()


def backfill(ir: Pipeline, backend: str, start: str, end: str, *, max_active: int = 1,
             params: dict[str, Any] | None = None,
             progress: Callable[[str, RunResult], None] | None = None) -> list[RunResult]:
    """Create (and, on ``local``, run) one run per date of :func:`plan`; results by date."""
    from unipipe.compiler.registry import UnknownBackend, get_backend_for

    try:
        engine, selected = get_backend_for(backend)
    except UnknownBackend:
        engine, selected = None, {}
    own = getattr(engine, "backfill", None)
    if own is None and backend.split("@", 1)[0] not in BACKENDS:
        raise BackfillError(f"backfill on {backend!r} is not built yet: its backend has no "
                            f"backfill of its own and is not one of {', '.join(BACKENDS)}")
    if isinstance(max_active, bool) or not isinstance(max_active, int) or max_active < 1:
        raise BackfillError(f"--max-active takes a whole number >= 1, not {max_active!r}")
    dates = [d.isoformat() for d in plan(ir, start, end)]
    if own is not None:  # the engine creates the runs itself (Prefect: scheduled flow runs)
        return own(ir, dates, max_active=max_active, params=dict(params or {}),
                   progress=progress, extra=selected)
    results: dict[str, RunResult] = {}
    text = ir.to_json(indent=None)
    # each run in a process of its own: the reference runner forks its attempts and owns
    # the process's signals, so runs side by side cannot share one
    with ProcessPoolExecutor(max_workers=max(1, min(max_active, len(dates) or 1))) as pool:
        futures = {pool.submit(_one, text, backend, dict(params or {}), d): d for d in dates}
        for future in futures:
            when = futures[future]
            result = RunResult.from_dict(future.result())
            results[when] = result
            if progress is not None:
                progress(when, result)
    return [results[d] for d in dates]
