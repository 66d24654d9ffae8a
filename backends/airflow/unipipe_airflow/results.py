"""From Airflow's records to a RunResult.

Airflow's own task instances decide each task's state and number of tries (``try_number``;
earlier tries are in ``task_instance_history``) and XCom holds the outputs; the shim's trace
adds what Airflow does not know (cache hits, the user's error, each try's start and end) and is
cross-checked against the task instances (:func:`cross_check`). Helper tasks the code generator
adds (short-circuit gates, ``*_items``, the watcher) are not IR tasks and do not appear in the result.
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unipipe.ir.models import Pipeline
from unipipe.outputs import evaluate
from unipipe.result import RunResult, TaskResult, add_record, aggregate_elements, aggregate_map
from unipipe.runtime import store, trace
from unipipe_airflow.runtime import XCOM_ARTIFACTS, XCOM_METRICS, XCOM_REPORT

_STATES = {"success": "success", "failed": "failed", "upstream_failed": "upstream_failed",
           "skipped": "skipped"}


@dataclass
class Records:
    run_id: str | None = None
    run_state: str | None = None
    #: (task_id, map_index) -> {"state", "try_number"}
    tis: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    #: (task_id, map_index) -> XCom return value (JSON-decoded)
    xcoms: dict[tuple[str, int], Any] = field(default_factory=dict)
    #: (task_id, map_index) -> {"artifacts"?, "metrics"?, "report"?}: what the try that
    #: succeeded pushed as XComs unipipe_artifacts / unipipe_metrics / unipipe_report
    #: (runtime.push_record), in the shape of the shim's record
    records: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)


def _epoch(value: str) -> float:
    """A UTC timestamp as SQLite holds Airflow's (``2026-12-06 13:54:38.989120``)."""
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp()


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    return json.loads(value) if isinstance(value, str) else value


def read_records(db: Path, dag_id: str, run_id: str | None = None) -> Records:
    """One run of ``dag_id`` (the latest unless ``run_id``) in an Airflow SQLite metadata DB."""
    rec = Records()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        if run_id is None:
            row = con.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ? "
                              "ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
        else:
            row = con.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ? AND "
                              "run_id = ?", (dag_id, run_id)).fetchone()
        if row is None:
            return rec
        rec.run_id, rec.run_state = row
        # try_number counts the tries on 3.3 and 2.11 alike. On 2.11 ``DAG.test`` adds 1 each
        # time it schedules a try (``airflow/models/dag.py`` ~3050-3053) and keeps no
        # task_instance_history under ``dags test``: ``_run_raw_task`` leaves the state
        # SCHEDULED, and ``handle_failure`` records history only for a RUNNING instance
        # (``airflow/models/taskinstance.py`` ~3395-3400). Same table and columns on both.
        for task_id, index, state, tries in con.execute(
                "SELECT task_id, map_index, state, try_number FROM task_instance "
                "WHERE dag_id = ? AND run_id = ?", (dag_id, rec.run_id)):
            rec.tis[(task_id, index)] = {"state": state, "try_number": tries or 0, "times": {}}
        # each try's start and end as Airflow recorded them: the current try on the task
        # instance, earlier ones in task_instance_history (3.x, dags test included; 2.11
        # keeps none under dags test, see above). Where the shim could not trace a try (its
        # process was killed), these are the try's times.
        tries_sql = ("SELECT task_id, map_index, try_number, start_date, end_date FROM {} "
                     "WHERE dag_id = ? AND run_id = ?")
        for table in ("task_instance_history", "task_instance"):
            try:
                rows = con.execute(tries_sql.format(table), (dag_id, rec.run_id)).fetchall()
            except sqlite3.OperationalError:  # no such table (an older schema)
                continue
            for task_id, index, number, start, end in rows:
                ti = rec.tis.get((task_id, index))
                if ti is not None and number and start and end:
                    ti["times"][int(number)] = (_epoch(start), _epoch(end))
        # XCom values are JSON on both lines (2.11: ``BaseXCom.serialize_value``,
        # ``airflow/models/xcom.py`` ~689, ``json.dumps(value, cls=XComEncoder)``).
        for task_id, index, value in con.execute(
                "SELECT task_id, map_index, value FROM xcom WHERE dag_id = ? AND run_id = ? "
                "AND key = 'return_value'", (dag_id, rec.run_id)):
            rec.xcoms[(task_id, index)] = _decode(value)
        # The records the tries pushed (runtime.push_record). Airflow 3 keeps every XCom value
        # as JSON in the xcom table (``XComModel.value``, a JSON column: airflow/models/xcom.py
        # ~76, written through ``XComModel.serialize_value`` ~336); 2.11 likewise, see above.
        keys = {XCOM_ARTIFACTS: "artifacts", XCOM_METRICS: "metrics", XCOM_REPORT: "report"}
        for task_id, index, key, value in con.execute(
                "SELECT task_id, map_index, key, value FROM xcom WHERE dag_id = ? AND run_id = ? "
                f"AND key IN ({', '.join('?' * len(keys))})", (dag_id, rec.run_id, *keys)):
            rec.records.setdefault((task_id, index), {})[keys[key]] = _decode(value)
    return rec


def _attempt_events(events: list[dict[str, Any]]) -> dict[tuple[str, int | None], list[dict[str, Any]]]:
    by: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    for e in events:
        if e.get("kind") == "attempt":
            by.setdefault((e["task"], e.get("map_index")), []).append(e)
    for evs in by.values():
        evs.sort(key=lambda e: (e["attempt"], e.get("start") or 0))
    return by


def _task_result(ti: dict[str, Any] | None, xcom: Any, evs: list[dict[str, Any]]) -> TaskResult:
    if ti is None:  # never created: Airflow did not get that far
        return TaskResult("upstream_failed")
    state = _STATES.get(str(ti["state"]), "failed")
    attempts = int(ti["try_number"]) if state in ("success", "failed") else 0
    times = _try_times(ti, evs, attempts)
    if state == "success":
        last = evs[-1] if evs else {}
        return TaskResult("success", attempts, bool(last.get("cache_hit")), xcom,
                          attempt_times=times)
    if state == "failed":
        last_failed = next((e for e in reversed(evs) if e.get("outcome") == "failed"), None)
        if last_failed is None or len(evs) < attempts:
            etype, msg = "ProcessKilled", "task process ended without a result"
        else:
            etype, msg = last_failed.get("error_type"), last_failed.get("error") or ""
        return TaskResult("failed", attempts, False, None, f"{etype}: {msg}", etype,
                          attempt_times=times)
    return TaskResult(state)


def _try_times(ti: dict[str, Any], evs: list[dict[str, Any]],
               attempts: int) -> list[tuple[float, float]]:
    """(start, end) of each try in order: the shim's, else Airflow's record of that try. One
    per try when every try is known either way; the traced ones alone otherwise."""
    traced = {int(e["attempt"]): (float(e["start"]), float(e["end"])) for e in evs
              if e.get("start") is not None and e.get("end") is not None}
    known = {**ti.get("times", {}), **traced}
    if attempts and all(k in known for k in range(1, attempts + 1)):
        return [known[k] for k in range(1, attempts + 1)]
    return [(float(e["start"]), float(e["end"])) for e in evs]


def _copies(tid: str, records: Records, by: dict[tuple[str, int | None], list[dict[str, Any]]],
            elements: dict[str, TaskResult]) -> TaskResult:
    """A task of a mapped sub-pipeline (runner rule 12): one task instance per copy, its map
    index the copy's (Airflow expands every task of a mapped task group with the group), each
    reported as ``task[i]``; the task itself is their aggregate. Before the expansion the task
    has one unexpanded instance (map index -1), which keeps the state Airflow gave it when the
    group never ran (upstream_failed after the items' task failed; skipped over no items)."""
    indexes = sorted(i for (t, i) in records.tis if t == tid and i >= 0)
    if not indexes:
        ti = records.tis.get((tid, -1))
        return _task_result(ti, None, []) if ti else TaskResult("upstream_failed")
    parts = []
    for i in indexes:
        part = _task_result(records.tis[(tid, i)], records.xcoms.get((tid, i)),
                            by.get((tid, i), []))
        parts.append(part)
        elements[f"{tid}[{i}]"] = part
    return aggregate_elements(parts)


def cross_check(ir: Pipeline, records: Records, events: list[dict[str, Any]]) -> list[str]:
    """Where the shim's trace and Airflow's task instances disagree (empty when they agree).

    The trace may have fewer tries than Airflow (a killed process writes nothing), never more,
    and the last traced try's outcome must be the task instance's state.
    """
    problems = []
    by = _attempt_events(events)
    ids = {t.id for t in ir.tasks}
    for (task_id, index), ti in records.tis.items():
        if task_id not in ids:
            continue
        evs = by.get((task_id, index if index >= 0 else None), [])
        tries = int(ti["try_number"] or 0)
        if len(evs) > tries:
            problems.append(f"{task_id}[{index}]: {len(evs)} traced tries, Airflow counts {tries}")
        if evs and ti["state"] in ("success", "failed") and evs[-1]["outcome"] != ti["state"]:
            problems.append(f"{task_id}[{index}]: last traced try {evs[-1]['outcome']}, "
                            f"Airflow says {ti['state']}")
    return problems


def build_result(ir: Pipeline, records: Records, trace_dir: Path,
                 params: dict[str, Any]) -> RunResult:
    assert records.run_id is not None
    events = trace.read(trace_dir, records.run_id)
    problems = cross_check(ir, records, events)
    if problems:
        warnings.warn("airflow records and unipipe trace disagree: " + "; ".join(problems),
                      stacklevel=2)
    by = _attempt_events(events)
    results: dict[str, TaskResult] = {}
    elements: dict[str, TaskResult] = {}
    outputs: dict[str, Any] = {}
    mapped_groups = {g.id for g in ir.groups if g.map_over is not None}
    for tid in ir.topo_order():
        task = ir.task(tid)
        if task.group in mapped_groups:
            r = _copies(tid, records, by, elements)
        elif task.map_over is None:
            r = _task_result(records.tis.get((tid, -1)), records.xcoms.get((tid, -1)),
                             by.get((tid, None), []))
        else:
            indexes = sorted(i for (t, i) in records.tis if t == tid and i >= 0)
            if not indexes:
                ti = records.tis.get((tid, -1))
                r = _task_result(ti, None, []) if ti else TaskResult("upstream_failed")
                if r.state == "success":  # expanded over nothing
                    r = TaskResult("success", 0, False, [])
            else:
                parts = []
                for i in indexes:
                    part = _task_result(records.tis[(tid, i)], records.xcoms.get((tid, i)),
                                        by.get((tid, i), []))
                    parts.append(part)
                    elements[f"{tid}[{i}]"] = part
                r = aggregate_map(parts)
        results[tid] = r
        if r.state == "success":
            outputs[tid] = r.output
    failed = [t for t, r in results.items() if r.state in ("failed", "upstream_failed")]
    state = "failed" if failed else "success"
    if records.run_state in ("success", "failed"):
        # The DagRun's own state is the run's verdict; Airflow decides it from the leaves only
        # (airflow/models/dagrun.py ~1217), so it can disagree with the tasks (a cleanup leaf
        # that succeeded after a failure) unless the DAG has a watcher (codegen.watcher_def).
        if records.run_state != state:
            warnings.warn(f"airflow marked the run {records.run_state} but failed tasks are "
                          f"{failed or 'none'}", stacklevel=2)
        state = records.run_state
    output = evaluate(ir.output, outputs, params) if state == "success" else None
    results.update(elements)
    for r in results.values():
        if r.output is not None:
            r.output = store.from_transport(r.output)
    alerts = [e for e in events if e.get("kind") == "alert"]
    first_error = next((results[t].error for t in failed if results[t].error), None)
    result = RunResult(pipeline=ir.name, backend="airflow", run_id=records.run_id, state=state,
                       output=output, tasks=results, alerts=alerts, params=params,
                       error=first_error)
    # artifacts, metrics and reports as Airflow keeps them: the XComs each successful task
    # pushed (a task that runs once: map index -1, as the reference runner reports them)
    for tid in ir.topo_order():
        if results[tid].state == "success":
            add_record(result, tid, records.records.get((tid, -1)))
    return result
