"""``unipipe backfill PIPELINE --backend airflow[@2.11]``: Airflow's own backfill creates the runs
the schedule would have created in a window, and Airflow runs them.

The dates come from :func:`unipipe.backfill.plan` (the reference meaning of the schedule); the
window handed to Airflow is ``[first date, last date]``, which Airflow fills from the DAG's own
timetable (``CronTriggerTimetable``), so the runs it creates are checked against the dates: a
different count (the declared DST difference on a fall-back day) fails the backfill loudly.

- Airflow 3.3: a backfill needs a running scheduler (``POST /api/v2/backfills`` only creates
  queued runs: ``airflow/models/backfill.py`` ``_create_backfill`` ~623,
  ``iter_dagrun_infos_between`` inclusive at both ends, ``serialization/definitions/dag.py``
  ~467). The home's ``airflow standalone`` runs with ``[scheduler] use_job_schedule = False``
  (``jobs/scheduler_job_runner.py`` ~1923): no scheduled run of its own besides the backfill's,
  while queued backfill runs still start. The DAG is unpaused (a paused DAG's task instances
  are never queued, ~651). ``max_active_runs`` of the backfill is ``--max-active``.
- Airflow 2.11: ``airflow dags backfill -s FIRST -e LAST DAG`` runs ``BackfillJobRunner`` in its
  own process with the SequentialExecutor (SQLite), no scheduler (``cli/commands/
  dag_command.py`` ~63-133, ``models/dag.py`` ~2918-2946): one task at a time, whatever
  ``--max-active`` says (declared).

Either way each run is reported through ``progress`` as it ends (its RunResult built from
Airflow's records as every Airflow run's is), and the logical date each task sees is the run's
(``up.current().logical_date``).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unipipe.ir.models import Pipeline
from unipipe.result import RunResult

FINISHED = ("success", "failed")


class BackfillRunError(RuntimeError):
    """Airflow's backfill did not create or finish the expected runs."""


def _utc(text: str) -> datetime:
    when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def backfill_runs(db: Path, dag_id: str) -> list[tuple[str, datetime, str]]:
    """(run id, logical date in UTC, state) of the DAG's backfill runs, oldest first."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60) as con:
            cols = {r[1] for r in con.execute("PRAGMA table_info(dag_run)")}
            date = "logical_date" if "logical_date" in cols else "execution_date"
            rows = con.execute(
                f"SELECT run_id, {date}, state FROM dag_run WHERE dag_id = ? "  # noqa: S608
                "AND run_type = 'backfill' ORDER BY 2", (dag_id,)).fetchall()
    except sqlite3.OperationalError:
        return []
    return [(r[0], _utc(r[1]), str(r[2])) for r in rows if r[1] is not None]


def run(backend: Any, ir: Pipeline, dates: list[str], *, max_active: int,
        params: dict[str, Any], progress: Callable[[str, RunResult], None] | None,
        extra: dict[str, Any]) -> list[RunResult]:
    from unipipe.api import search_path
    from unipipe.compiler.backend import RunOptions
    from unipipe.params import resolve_params
    from unipipe_airflow.engine import engine_dialect, prepare

    if not dates:
        return []
    values = resolve_params(ir, params)
    own = {k: v for k, v in extra.items() if k in ("version", "dialect", "backoff")}
    if own.get("version") == engine_dialect():
        own.pop("version")
    workdir = extra.get("workdir") or tempfile.mkdtemp(prefix="unipipe-airflow-backfill-")
    options = RunOptions(params=values, workdir=Path(workdir), search_path=search_path(ir),
                         extra=own)
    home = prepare(ir, options)
    timeout = float(extra.get("timeout", 1800))
    wanted = {_utc(d): d for d in dates}
    _check_timetable(home, dates, workdir if not extra.get("workdir") else None)
    if home.engine.own_env:
        proc = _start_airflow2(home, dates, values)

        def stop() -> None:  # the backfill ends by itself once its runs are done
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=30)

        alive = lambda: proc.poll() is None  # noqa: E731
    else:
        proc3, stop, alive = _start_airflow3(home, dates, values, max_active, timeout)
    from unipipe_airflow.results import build_result, read_records

    results: dict[str, RunResult] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < len(dates):
            for run_id, when, state in backfill_runs(home.db, home.dag_id):
                date = wanted.get(when)
                if date is None:
                    raise BackfillRunError(
                        f"Airflow's backfill created a run for {when.isoformat()}, which the "
                        f"schedule's reference dates do not have ({', '.join(dates)})")
                if state in FINISHED and date not in results:
                    result = build_result(ir, read_records(home.db, home.dag_id, run_id),
                                          home.trace_dir, values)
                    if home.engine.own_env:
                        result.backend = f"airflow@{home.engine.dialect}"
                    results[date] = result
                    if progress is not None:
                        progress(date, result)
            if len(results) == len(dates):
                break
            if not alive():
                missing = [d for d in dates if d not in results]
                raise BackfillRunError(f"Airflow's backfill ended without runs for "
                                       f"{', '.join(missing)}; logs in {home.root}")
            if time.monotonic() > deadline:
                raise BackfillRunError(f"the backfill did not finish in {timeout:.0f}s; logs "
                                       f"in {home.root}")
            time.sleep(1)
    finally:
        stop()
    if not extra.get("workdir"):  # a folder of our own: gone after a backfill, kept on error
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return [results[d] for d in dates]


def _check_timetable(home: Any, dates: list[str], own_dir: str | None) -> None:
    """Refuse, before anything is created, a window where the DAG's own timetable (what
    Airflow's backfill fills the window from) fires at other times than the reference: the
    declared DST difference (a repeated wall time on a fall-back day is its second occurrence
    on Airflow, its first in the reference)."""
    from unipipe.backfill import BackfillError
    from unipipe_airflow.timetable import planned_runs

    first, last = _utc(dates[0]), _utc(dates[-1])
    airflow = planned_runs(home.dags, home.dag_id, first, last, home.engine)
    if [a.astimezone(UTC) for a in airflow] == [_utc(d) for d in dates]:
        return
    if own_dir is not None:
        import shutil

        shutil.rmtree(own_dir, ignore_errors=True)
    ours = {_utc(d) for d in dates}
    theirs = {a.astimezone(UTC) for a in airflow}
    raise BackfillError(
        f"Airflow's timetable for {home.dag_id} fires at other times in this window than the "
        f"schedule's reference (declared: on a fall-back day Airflow fires a repeated wall "
        f"time at its second occurrence): only Airflow "
        f"{sorted(t.isoformat() for t in theirs - ours)}, only the reference "
        f"{sorted(t.isoformat() for t in ours - theirs)}; nothing was created. Backfill the "
        f"days before and after separately, or use --backend local")


def _start_airflow2(home: Any, dates: list[str], values: dict[str, Any]) -> subprocess.Popen[Any]:
    import os

    log = open(home.root / "backfill.log", "wb")  # noqa: SIM115 - closed with the process
    # the executor starts each try as `airflow tasks run ...` by name: 2.11's own first
    env = {**home.env, "PATH": os.pathsep.join([os.path.dirname(home.engine.python),
                                                home.env.get("PATH", "")])}
    return subprocess.Popen(
        [home.engine.python, "-m", "airflow", "dags", "backfill", "-s", dates[0], "-e",
         dates[-1], "-c", json.dumps(values), home.dag_id],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=home.root)


LOCKED_TRIES = 6


def _post_backfill(api: Any, body: dict[str, Any]) -> None:
    """``POST /backfills``, tried again while SQLite's lock is lost to another component.

    Airflow 3.3 answers 503 "Database is locked" when creating the backfill or its runs lost a
    write lock (api_fastapi/core_api/routes/public/backfills.py:74-84, :279-280). It has undone
    the attempt by then: the Backfill row is committed first, and a lock error while its runs are
    created deletes it and them, "so the user can retry" (models/backfill.py:702-733,
    ``_cleanup_partial_backfill`` :736-748). Seen in a CI run beside a busy scheduler.
    That cleanup is best effort: a retry answered 409 (a backfill already running) means it did
    not happen, and the error says so rather than running a half-made backfill.
    Any other error is not tried again (the POST is not idempotent).
    """
    import urllib.error

    locked = False
    for attempt in range(1, LOCKED_TRIES + 1):
        try:
            api.call("POST", "/backfills", body, tries=1)
            return
        except urllib.error.HTTPError as exc:
            said = f"{exc} {exc.read().decode(errors='replace')}"
            if exc.code == 409 and locked:
                raise BackfillRunError(f"{said} (after Airflow answered 'Database is locked': "
                                       f"its clean-up of the half-made backfill did not happen)"
                                       ) from exc
            if exc.code != 503 or "locked" not in said or attempt == LOCKED_TRIES:
                raise BackfillRunError(said) from exc
            locked = True
        time.sleep(2)


def _start_airflow3(home: Any, dates: list[str], values: dict[str, Any], max_active: int,
                    timeout: float) -> tuple[Any, Callable[[], None], Callable[[], bool]]:
    import urllib.error

    from unipipe_airflow import server

    port = server.free_port()
    proc = server.start(home, port, env={
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__PARALLELISM": str(max(4, max_active)),
    })
    api = server.Api(f"http://127.0.0.1:{port}/api/v2")
    deadline = time.monotonic() + timeout
    try:
        server.wait_ready(proc, api, deadline)
        server.wait_for_dag(api, home.dag_id, deadline, alive=lambda: proc.poll() is None)
        api.call("PATCH", server.dag_path(home.dag_id), {"is_paused": False})
        _post_backfill(api, {
            "dag_id": home.dag_id, "from_date": dates[0], "to_date": dates[-1],
            "max_active_runs": max_active, "dag_run_conf": values,
            "reprocess_behavior": "none"})
    except (urllib.error.URLError, server.AirflowRunError, BackfillRunError) as exc:
        server.stop(proc)
        # an HTTP error of the readiness checks or the unpause: Airflow's answer says why
        detail = exc.read().decode(errors="replace") if isinstance(exc, urllib.error.HTTPError) else ""
        raise BackfillRunError(f"Airflow did not take the backfill: {exc} {detail}; logs in "
                               f"{home.root}") from exc
    return proc, lambda: server.stop(proc), lambda: proc.poll() is None
