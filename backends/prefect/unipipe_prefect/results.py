"""RunResult from Prefect's own records (task-run states, run counts, Cached), checked against the
shim's trace (one event per attempt the task body actually ran); the metrics, artifacts and
reports from the Prefect artifacts the task runs created (runtime.publish_record), as the API
gives them back (driver.flow_artifacts)."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from unipipe.ir.groups import members
from unipipe.ir.models import OutputInput, Pipeline
from unipipe.result import (
    RunResult,
    TaskResult,
    add_record,
    aggregate_elements,
    aggregate_map,
    upstream_verdict,
)
from unipipe.runtime import store, trace


class EngineTraceMismatch(AssertionError):
    """Prefect's task runs and the unipipe trace disagree about what ran."""


def _split(name: str) -> tuple[str, int | None]:
    if name.endswith("]") and "[" in name:
        base, _, idx = name[:-1].rpartition("[")
        try:
            return base, int(idx)
        except ValueError:
            pass
    return name, None


def _element(run: dict[str, Any], events: list[dict[str, Any]], timeout: float | None) -> TaskResult:
    # One event per attempt, the last written winning: when Prefect's timeout fires just as the
    # attempt's process finishes, the process has written its own event and the waiting side
    # writes the verdict Prefect acted on (a timeout) after it.
    by_attempt: dict[int, dict[str, Any]] = {}
    for e in events:
        if not e.get("cache_hit"):
            by_attempt[int(e["attempt"])] = e
    attempts_run = [by_attempt[a] for a in sorted(by_attempt)]
    times = [(e["start"], e["end"]) for e in attempts_run]
    cached = run["state_name"] == "Cached"
    attempts = max(int(run["run_count"] or 0), 1) if run["state_type"] == "COMPLETED" else int(
        run["run_count"] or 0)
    expected = attempts - (1 if cached else 0)
    if len(attempts_run) != expected:
        raise EngineTraceMismatch(
            f"task run {run['name']!r}: Prefect counts {attempts} run(s) ({run['state_name']}), "
            f"the unipipe trace {len(attempts_run)} attempt(s)")
    if run["state_type"] == "COMPLETED":
        return TaskResult("success", attempts, cached, store.from_transport(run.get("result")),
                          attempt_times=times)
    if run["state_name"] == "TimedOut":
        error_type, error = "TaskTimeout", f"task exceeded its timeout of {timeout:g}s"
    else:
        failed = [e for e in attempts_run if e.get("outcome") == "failed"]
        if failed:
            error_type, error = failed[-1]["error_type"], failed[-1]["error"]
        else:
            error_type, error = run["state_name"] or "Error", run.get("message") or ""
    return TaskResult("failed", attempts, False, None, error=f"{error_type}: {error}",
                      error_type=error_type, attempt_times=times)


def build_result(ir: Pipeline, report: dict[str, Any], *, run_id: str, params: dict[str, Any],
                 trace_dir: str) -> RunResult:
    events = trace.read(trace_dir, run_id)
    attempts: dict[tuple[str, int | None], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("kind") == "attempt":
            attempts[(e["task"], e.get("map_index"))].append(e)
    alerts = [e for e in events if e.get("kind") == "alert"]

    # @flow(retries=N): a retried flow run holds the task runs of every try; the result is the
    # last try's (as the reference runner reports it), and so are the trace's attempts. The
    # same holds for each group's subflow run (its own retries), inside the last try of its
    # parent: _current_task_runs.
    run_count = int(report.get("run_count") or 1)
    run_started = report.get("run_started") if run_count > 1 else None
    task_runs, started = _current_task_runs(report)
    if started:
        attempts = defaultdict(list, {k: [e for e in v if e["start"] >= started.get(k, 0.0)]
                                      for k, v in attempts.items()})

    runs: dict[str, dict[int | None, dict[str, Any]]] = defaultdict(dict)
    for run in task_runs:
        tid, idx = _split(run["name"])
        runs[tid][idx] = run

    # a mapped sub-pipeline's copies: its subflow runs <group>[i] (codegen), their tasks' runs
    # task[i]; the tasks of a copy that never started have none
    copied = {t: g.id for g in ir.groups if g.map_over is not None for t in members(ir, g.id)}
    copies: dict[str, int] = defaultdict(int)
    for f in (report.get("flow_runs") or [])[1:]:
        gid, idx = _split(str(f["name"]))
        if idx is not None:
            copies[gid] = max(copies[gid], idx + 1)

    results: dict[str, TaskResult] = {}
    elements: dict[str, TaskResult] = {}
    outputs: dict[str, Any] = {}
    for tid in ir.topo_order():
        task = ir.task(tid)
        timeout = ir.effective(task).timeout
        mine = runs.get(tid, {})
        if tid in copied:
            res = _copied(ir, tid, copied[tid], copies[copied[tid]], mine, attempts, results,
                          elements, timeout)
        elif task.map_over is None and None in mine:
            res = _element(mine[None], attempts[(tid, None)], timeout)
        elif task.map_over is not None and mine:
            parts = []
            for idx in sorted(i for i in mine if i is not None):
                part = _element(mine[idx], attempts[(tid, idx)], timeout)
                elements[f"{tid}[{idx}]"] = part
                parts.append(part)
            res = aggregate_map(parts)
        else:
            res = _not_run(ir, tid, results, outputs)
        results[tid] = res
        if res.state == "success":
            outputs[tid] = res.output
    failed = [t for t, r in results.items() if r.state in ("failed", "upstream_failed")]
    first_error = next((results[t].error for t in failed if results[t].error), None)
    results.update(elements)
    flow_ok = report["state_type"] == "COMPLETED"
    if flow_ok == bool(failed):
        raise EngineTraceMismatch(f"flow run is {report['state_name']} but failed tasks are "
                                  f"{failed or 'none'}")
    result = RunResult(pipeline=ir.name, backend="prefect", run_id=run_id,
                       state="success" if flow_ok else "failed",
                       output=report.get("output") if flow_ok else None, tasks=results,
                       alerts=alerts, params=params, error=first_error, run_attempts=run_count,
                       run_started=run_started)
    current = {r["id"]: _split(r["name"]) for r in task_runs}
    for tid, record in records_from_artifacts(report.get("artifacts") or [], current).items():
        if tid in results and results[tid].state == "success":
            add_record(result, tid, record)
    return result


def records_from_artifacts(artifacts: list[dict[str, Any]],
                           task_runs: dict[str, tuple[str, int | None]]
                           ) -> dict[str, dict[str, Any]]:
    """Each task's record (``{"artifacts", "metrics", "report"}``, as the shim wrote it) from
    the Prefect artifacts its task run created (runtime.publish_record): a link artifact per
    output (the fields after ``unipipe:`` in its description), the metrics table (stored as a
    JSON string), the markdown report. ``task_runs``: id -> (task, map index) of the task runs
    of the run's last try; artifacts of other task runs, of map elements (the reference keeps
    whole tasks' records) or not made by unipipe are left out."""
    from unipipe_prefect.runtime import ARTIFACT_TAG

    records: dict[str, dict[str, Any]] = {}
    for art in artifacts:
        desc = art.get("description") or ""
        at = desc.rfind(ARTIFACT_TAG)
        where = task_runs.get(art.get("task_run_id") or "")
        if at < 0 or where is None or where[1] is not None:
            continue
        fields = json.loads(desc[at + len(ARTIFACT_TAG):])
        record = records.setdefault(where[0], {"artifacts": {}, "metrics": {}})
        if fields.get("kind") == "output":
            record["artifacts"][fields["name"]] = {
                k: fields[k] for k in ("type", "uri", "sha256", "size") if k in fields}
        elif fields.get("kind") == "metrics":
            rows = art["data"]
            rows = json.loads(rows) if isinstance(rows, str) else rows
            record["metrics"] = {row["metric"]: row["value"] for row in rows}
        elif fields.get("kind") == "report":
            record["report"] = art["data"]
    return records


def _copied(ir: Pipeline, tid: str, gid: str, count: int, mine: dict[int | None, Any],
            attempts: dict[tuple[str, int | None], list[dict[str, Any]]],
            results: dict[str, TaskResult], elements: dict[str, TaskResult],
            timeout: float | None) -> TaskResult:
    """A task of a mapped sub-pipeline (runner rule 12): ``task[i]`` from copy i's task run, or
    (none: the copy kept it from running) the verdict of its upstream in that copy; the task's
    result is the copies' aggregate. No copy at all: the task the items come from did not
    complete, and its verdict is every member's."""
    group = ir.group(gid)
    task = ir.task(tid)
    if count == 0 and isinstance(group.items, OutputInput):
        verdict = upstream_verdict("all_success", [results[group.items.task]])
        if verdict is not None:
            return TaskResult(verdict)
    parts = []
    for i in range(count):
        if i in mine:
            part = _element(mine[i], attempts[(tid, i)], timeout)
        else:
            ups = [elements[f"{u}[{i}]"] if ir.task(u).group == gid else results[u]
                   for u in task.upstream()]
            verdict = upstream_verdict(task.run_if, ups)
            part = TaskResult(verdict) if verdict is not None else TaskResult(
                "failed", 0, error="NotRun: Prefect has no task run for this copy",
                error_type="NotRun")
        elements[f"{tid}[{i}]"] = part
        parts.append(part)
    return aggregate_elements(parts)


def _current_task_runs(report: dict[str, Any]
                       ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The task runs of the last try of the run, groups included, and (when anything was
    tried more than once) when the try that holds each task began, by task id.

    ``report["flow_runs"]`` is the pipeline's flow run and its groups' subflow runs, parents
    first (driver.flow_run_tree). A flow run's try is its ``run_count``; a task run belongs to
    try ``flow_run_run_count`` of its flow run (prefect/server/orchestration/core_policy.py
    ~1501 ``UpdateFlowRunTrackerOnTasks``). A subflow run counts if its parent's does and it
    ran in its parent's last try (it last started after its parent did); a group whose parent
    was tried again after it failed has a new subflow run, the latest counts."""
    top_id = report.get("flow_run_id")
    flow_runs = report.get("flow_runs") or [
        {"id": top_id, "name": None, "parent": None, "run_count": report.get("run_count") or 1,
         "run_started": report.get("run_started")}]
    by_id = {f["id"]: f for f in flow_runs}
    top = flow_runs[0]
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for f in flow_runs[1:]:
        key = (f["parent"], f["name"])
        if key not in latest or (f["run_started"] or 0.0) > (latest[key]["run_started"] or 0.0):
            latest[key] = f
    current = {top["id"]}
    for f in flow_runs[1:]:  # parents before their subflow runs
        parent = by_id.get(f["parent"])
        if (parent is not None and parent["id"] in current
                and latest[(f["parent"], f["name"])] is f
                and (f["run_started"] or 0.0) >= (parent["run_started"] or 0.0)):
            current.add(f["id"])
    kept = [r for r in report["task_runs"]
            if (r.get("flow_run_id") or top["id"]) in current
            and int(r.get("flow_run_run_count") or 1)
            == int(by_id[r.get("flow_run_id") or top["id"]]["run_count"] or 1)]
    retried = len(current) < len(flow_runs) or any(int(f["run_count"] or 1) > 1
                                                   for f in flow_runs)
    started: dict[str, float] = {}
    if retried:
        for r in kept:
            f = by_id[r.get("flow_run_id") or top["id"]]
            if f["run_started"] is not None:
                started[_split(r["name"])] = f["run_started"]
    return kept, started


def _not_run(ir: Pipeline, tid: str, results: dict[str, TaskResult],
             outputs: dict[str, Any]) -> TaskResult:
    """A task without task runs: the flow's guard kept it from running (the IR's rule 6)."""
    task = ir.task(tid)
    verdict = upstream_verdict(task.run_if, [results[d] for d in task.upstream()])
    if verdict is not None:
        return TaskResult(verdict)
    for cond in task.when:
        if store.select(outputs.get(cond.task), cond.path) is not cond.expect:
            return TaskResult("skipped")
    if task.map_over is not None:
        return TaskResult("success", 0, False, [])  # fanned out over an empty list
    return TaskResult("failed", 0, error="NotRun: Prefect has no task run for this task",
                      error_type="NotRun")
