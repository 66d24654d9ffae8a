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
from unipipe_kubeflow.executor import Execution, PipelineRunRecord, is_artifact

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


def _pip_error(path: str) -> str | None:
    """pip's last error line in a launch's log (None: pip reported none)."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [ln.strip() for ln in lines if ln.startswith("ERROR: ")]
    return errors[-1][len("ERROR: "):][:400] if errors else None


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
        pip_error = _pip_error(lc.log) if lc.installs and not lc.timed_out else None
        if lc.timed_out:
            etype = "TaskTimeout"
            emsg = f"task exceeded its timeout of {timeout:g}s" if timeout else "pod deadline exceeded"
        elif pip_error:
            # KFP's packages_to_install prelude failed: the function never started
            # (kfp/dsl/component_factory.py: `pip install ... && "$0" "$@"`), named as the
            # shim names an unmet requirement on the other engines
            etype = "PackagesMissing"
            emsg = f"packages_to_install failed: {pip_error}"
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


def _metric(value: Any) -> Any:
    """A metric as KFP's executor output holds it: metadata is a protobuf Struct, where every
    number is a double; an integral one is given back as the int the task logged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def engine_records(exe: Execution) -> tuple[dict[str, Any], dict[str, dict[str, Any]], str | None]:
    """(metrics, artifacts, report) of one successful execution, from what KFP's executor
    recorded: the output artifacts of its executor_output.json (kfp/dsl/executor.py ~318-348:
    name, uri, metadata per output), the files at their URIs (local paths here), and for a
    cache hit the outputs of the execution it reused.

    Metrics: every system.Metrics output's metadata (a declared Output[Metrics] and the hidden
    unipipe_metrics). Artifacts: the declared outputs, each with the sha256 and size of the
    file (or folder) at its path; the hidden outputs are reported as metrics and the report."""
    from unipipe.runtime.artifacts import METRICS_SLOT, REPORT_SLOT, content_digest

    metrics: dict[str, Any] = {}
    arts: dict[str, dict[str, Any]] = {}
    report = None
    for name, rec in exe.outputs.items():
        if not is_artifact(rec):
            continue
        kind = str(rec.get("schemaTitle", "system.Artifact")).split(".", 1)[-1]
        path = rec.get("uri", "")
        if kind == "Metrics":
            metrics.update({k: _metric(v) for k, v in (rec.get("metadata") or {}).items()})
        if name == REPORT_SLOT:
            try:
                report = Path(path).read_text(encoding="utf-8")
            except OSError:
                report = None
            continue
        if name == METRICS_SLOT:
            continue
        entry: dict[str, Any] = {"type": kind, "uri": rec.get("uri")}
        if path and Path(path).exists():
            entry["sha256"], entry["size"] = content_digest(path)
        arts[name] = entry
    return metrics, arts, report


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
    metrics: dict[str, dict[str, Any]] = {}
    artifacts: dict[str, dict[str, dict[str, Any]]] = {}
    reports: dict[str, str] = {}
    for exe in record.executions:
        # as the reference runner reports them: tasks that ran once (not a fan-out's elements)
        if exe.state not in ("SUCCEEDED", "CACHED") or exe.iterations:
            continue
        label = exe.display
        m, a, rep = engine_records(exe)
        if m:
            metrics[label] = m
        if a:
            artifacts[label] = a
        if rep:
            reports[label] = rep
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
    known = {t.id for t in ir.tasks}
    return RunResult(pipeline=ir.name, backend="kubeflow", run_id=record.run_id, state=state,
                     output=output, tasks=results, alerts=alerts, params=values, error=first_error,
                     metrics={k: v for k, v in metrics.items() if k in known},
                     artifacts={k: v for k, v in artifacts.items() if k in known},
                     reports={k: v for k, v in reports.items() if k in known})
