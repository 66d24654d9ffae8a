"""RunResult from what the executor recorded (the engine's view) and the shim's trace events.

The engine tells states, launches, cache hits of KFP's own cache and output parameters; the shim's
events tell error types and messages, shim cache hits, and the alerts it delivered. A launch
that the adapter short-circuited (non-retryable error already seen) is not an attempt; a launch
killed at its deadline is one, and gets the trace event the shim could not write (as the
reference runner writes one for a timeout it enforces); so does a hit of KFP's own cache.

Executions are matched to IR tasks by display name (``taskInfo.name``), which the generated
module sets to the IR id on every task, sub-pipeline members included (``<group>__<task>``),
so a member is reported by its IR id whatever DAG it ran in. The sub-pipelines' own tasks
(DAGs, not executions) and their alert tasks (``<group> alerts``) are not IR tasks.

A mapped sub-pipeline's tasks run once per iteration of the ParallelFor around its call: each
execution is reported as ``task[i]`` (i the iteration, which the local executor records and
passes the shim, so the trace events carry it too), and the task itself as
:func:`unipipe.result.aggregate_elements` of its copies (reference rule 12). When the loop
never ran (the task its items come from failed), each task was recorded once, without an
iteration, upstream-failed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from unipipe.ir.models import Pipeline
from unipipe.outputs import evaluate
from unipipe.result import RunResult, TaskResult, aggregate_elements, aggregate_map
from unipipe.runtime import store, trace
from unipipe_kubeflow import mapping
from unipipe_kubeflow.executor import Execution, PipelineRunRecord

_STATE = {"SUCCEEDED": "success", "CACHED": "success", "FAILED": "failed", "SKIPPED": "skipped",
          "UPSTREAM_FAILED": "upstream_failed"}


def _decode_output(value: Any, kind: str) -> Any:
    """KFP output parameter -> transport value."""
    if kind == "json":
        return json.loads(value)
    if kind == "items":
        return [json.loads(v) for v in value]
    return value


def _log_tail(path: str, limit: int = 400) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip()
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][-limit:] if lines else ""


def _element(ir: Pipeline, exe: Execution, events: list[dict[str, Any]], kind: str,
             map_index: int | None, run_id: str, timeout: float | None) -> TaskResult:
    task_id = exe.display
    state = _STATE[exe.state]
    if exe.state == "CACHED":
        # KFP's cache hit starts no container, so no shim event: write the one the reference
        # runner writes for a hit (an attempt with cache_hit), for the harness's trace view.
        start, end = exe.decided or (time.time(), time.time())
        trace.emit({"kind": "attempt", "run_id": run_id, "pipeline": ir.name, "task": task_id,
                    "map_index": map_index, "attempt": 1, "backend": "kubeflow", "start": start,
                    "end": end, "outcome": "success", "cache_hit": True, "error_type": None,
                    "error": None, "engine": "kfp-cache"})
        out = _decode_output(exe.outputs.get("Output"), kind) if "Output" in exe.outputs else None
        return TaskResult("success", 1, True, out, attempt_times=[(start, end)])
    if state in ("skipped", "upstream_failed"):
        return TaskResult(state)
    mine = [e for e in events if e.get("task") == task_id and e.get("map_index") == map_index]
    attempts_ev = {e["attempt"]: e for e in mine if e.get("kind") == "attempt"}
    short = {e["attempt"] for e in mine if e.get("kind") == "short-circuit"}
    launches = [lc for lc in exe.launches if lc.attempt not in short]
    for lc in launches:
        if lc.attempt in attempts_ev or lc.exit_code == 0:
            continue
        # The container died without the shim reporting: killed at its deadline (TaskTimeout)
        # or killed / exited by itself (ProcessKilled), named as the reference runner names them.
        if lc.timed_out:
            etype = "TaskTimeout"
            emsg = f"task exceeded its timeout of {timeout:g}s" if timeout else "pod deadline exceeded"
        else:
            etype = "ProcessKilled"
            emsg = f"task process ended without a result (exit code {lc.exit_code})"
        event = {"kind": "attempt", "run_id": run_id, "pipeline": ir.name, "task": task_id,
                 "map_index": map_index, "attempt": lc.attempt, "backend": "kubeflow",
                 "start": lc.start, "end": lc.end, "outcome": "failed", "cache_hit": False,
                 "error_type": etype, "error": emsg, "retryable": True}
        trace.emit(event)
        attempts_ev[lc.attempt] = event
    # An attempt's time is the shim's (it starts after a wait the shim emulates inside the
    # container), else the container's.
    times = []
    for lc in launches:
        ev = attempts_ev.get(lc.attempt)
        if ev is not None and ev.get("start") is not None and ev.get("end") is not None:
            times.append((float(ev["start"]), float(ev["end"])))
        else:
            times.append((lc.start, lc.end))
    if state == "success":
        last = attempts_ev.get(launches[-1].attempt) if launches else None
        out = _decode_output(exe.outputs.get("Output"), kind) if "Output" in exe.outputs else None
        return TaskResult("success", len(launches), bool(last and last.get("cache_hit")), out,
                          attempt_times=times)
    failed_ev = [attempts_ev[a] for a in sorted(attempts_ev) if attempts_ev[a].get("outcome") == "failed"]
    if failed_ev:
        etype, emsg = failed_ev[-1].get("error_type"), failed_ev[-1].get("error")
    else:
        etype = "TaskFailed"
        emsg = _log_tail(exe.launches[-1].log) if exe.launches else (exe.reason or "failed")
    return TaskResult("failed", len(launches), False, None, error=f"{etype}: {emsg}",
                      error_type=etype, attempt_times=times)


def build_result(ir: Pipeline, record: PipelineRunRecord, values: dict[str, Any], *,
                 trace_dir: str) -> RunResult:
    events = trace.read(trace_dir, record.run_id)
    sources = mapping.mapped_sources(ir)
    by_task: dict[str, list[Execution]] = {}
    for exe in record.executions:
        by_task.setdefault(exe.display, []).append(exe)
    results: dict[str, TaskResult] = {}
    elements: dict[str, TaskResult] = {}
    outputs: dict[str, Any] = {}
    for tid in ir.topo_order():
        task = ir.task(tid)
        kind = mapping.output_kind(ir, task, sources)
        timeout = ir.effective(task).timeout
        exes = by_task.get(tid, [])
        if not exes:
            results[tid] = TaskResult("skipped")
            continue
        copies = mapping.mapped_group(ir, task) is not None
        if (task.map_over is None and not copies) or not exes[0].iterations:
            r = _element(ir, exes[0], events, kind, None, record.run_id, timeout)
        else:
            parts = []
            for exe in sorted(exes, key=lambda e: e.iterations):
                i = exe.iterations[-1]
                part = _element(ir, exe, events, kind, i, record.run_id, timeout)
                elements[f"{tid}[{i}]"] = part
                parts.append(part)
            r = aggregate_elements(parts) if copies else aggregate_map(parts)
        results[tid] = r
        if r.state == "success":
            outputs[tid] = r.output
    failed = [t for t, r in results.items() if r.state in ("failed", "upstream_failed")]
    state = "failed" if failed else "success"
    output = evaluate(ir.output, outputs, values) if state == "success" else None
    first_error = next((results[t].error for t in failed if results[t].error), None)
    results.update(elements)
    for r in results.values():
        if r.output is not None:
            r.output = store.from_transport(r.output)
    alerts = [{k: e.get(k) for k in ("kind", "event", "channel", "task", "run_id", "pipeline",
                                     "ok", "error", "target")}
              for e in trace.read(trace_dir, record.run_id) if e.get("kind") == "alert"]
    return RunResult(pipeline=ir.name, backend="kubeflow", run_id=record.run_id, state=state,
                     output=output, tasks=results, alerts=alerts, params=values, error=first_error)
