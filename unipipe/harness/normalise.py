"""One trace shape for every backend, built from the engine's records (the backend's RunResult,
which it builds from Airflow task instances, Prefect task runs, KFP executor outputs), the shim's
per-attempt events (``$UNIPIPE_TRACE_DIR``) and what the alert receivers got.

A run trace is plain JSON::

    {"status": "ok" | "refused" | "error" | "notimpl" | "timeout", "error": ...,
     "state": "success" | "failed", "output": ..., "run_id": ..., "startup": s, "wall": s,
     "tasks": {label: {"state", "attempts", "cache_hit", "error_type", "error", "aggregate",
                       "attempt_log": [{"attempt", "start", "end", "outcome", "cache_hit",
                                        "error_type", "source": "shim" | "engine"}]}},
     "alerts": [{"task", "event", "channel"}, ...],          # sorted; what the receivers got
     "notes": [...]}                                         # inconsistencies found

Times are seconds relative to the first attempt's start, so timelines line up across backends.
"""

from __future__ import annotations

import json
import re
from typing import Any

_ELEMENT = re.compile(r"^(?P<task>.+)\[(?P<index>\d+)\]$")


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr, sort_keys=True))


def alert_key(a: dict[str, Any]) -> tuple[str, str, str]:
    return (a.get("task") or "", a.get("event") or "", a.get("channel") or "")


def sort_alerts(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(({"task": a.get("task"), "event": a.get("event"), "channel": a.get("channel")}
                   for a in alerts), key=alert_key)


def _label(task: str, map_index: Any) -> str:
    return task if map_index is None else f"{task}[{map_index}]"


def artifact_digests(artifacts: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """Each output artifact's content digest, by task and name: what must be equal on every
    backend (URIs differ by engine). Metrics outputs are compared as ``metrics`` instead: KFP
    keeps them as metadata, not as the file's bytes."""
    out: dict[str, dict[str, str | None]] = {}
    for task, named in artifacts.items():
        digests = {name: entry.get("sha256") for name, entry in named.items()
                   if entry.get("type") != "Metrics"}
        if digests:
            out[task] = digests
    return out


def normalise_run(report: dict[str, Any], events: list[dict[str, Any]],
                  alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """The trace of one run from the worker's report, the shim events and the receivers."""
    status = report.get("status", "error")
    trace: dict[str, Any] = {"status": status, "error": report.get("error"), "state": None,
                             "output": None, "run_id": None, "run_attempts": None, "tasks": {},
                             "alerts": sort_alerts(alerts), "notes": [],
                             "startup": None, "wall": None}
    if report.get("start") and report.get("end"):
        trace["wall"] = round(report["end"] - report["start"], 3)
    if status != "ok":
        return trace
    result = report["result"]
    trace.update(state=result.get("state"), output=jsonable(result.get("output")),
                 run_id=result.get("run_id"), metrics=jsonable(result.get("metrics") or {}),
                 reports=dict(result.get("reports") or {}),
                 artifacts=artifact_digests(result.get("artifacts") or {}))
    run_id = result.get("run_id")
    attempts = [e for e in events if e.get("kind") == "attempt"]
    if run_id and any(e.get("run_id") == run_id for e in attempts):
        attempts = [e for e in attempts if e.get("run_id") == run_id]
    if result.get("run_started") is not None:  # a retried run: the last try's attempts only
        attempts = [e for e in attempts if float(e.get("start") or 0) >= result["run_started"]]
    trace["run_attempts"] = int(result.get("run_attempts") or 1)
    shim: dict[str, dict[int, dict[str, Any]]] = {}
    for e in attempts:
        shim.setdefault(_label(e["task"], e.get("map_index")), {})[int(e["attempt"])] = e
    tasks = result.get("tasks") or {}
    parents = {m.group("task") for label in tasks if (m := _ELEMENT.match(label))}
    starts: list[float] = []
    for label, tr in tasks.items():
        aggregate = label in parents
        n = int(tr.get("attempts") or 0)
        engine_times = tr.get("attempt_times") or []
        log: list[dict[str, Any]] = []
        if not aggregate:
            seen = shim.get(label, {})
            if seen and max(seen) > n:
                trace["notes"].append(f"{label}: the RunResult reports {n} attempt(s), the shim "
                                      f"recorded attempt {max(seen)}")
            for k in range(1, max([n, *seen.keys()]) + 1):
                e = seen.get(k)
                if e is not None:
                    entry = {"attempt": k, "start": e.get("start"), "end": e.get("end"),
                             "outcome": e.get("outcome"), "cache_hit": bool(e.get("cache_hit")),
                             "error_type": e.get("error_type"), "source": "shim"}
                elif k - 1 < len(engine_times):
                    s, f = engine_times[k - 1]
                    last = k == n
                    outcome = "success" if last and tr.get("state") == "success" else "failed"
                    entry = {"attempt": k, "start": s, "end": f, "outcome": outcome,
                             "cache_hit": bool(tr.get("cache_hit")) and last,
                             "error_type": None if outcome == "success" else
                             (tr.get("error_type") if last else None), "source": "engine"}
                else:
                    entry = {"attempt": k, "start": None, "end": None, "outcome": "unknown",
                             "cache_hit": False, "error_type": None, "source": "none"}
                log.append(entry)
                if entry["start"] is not None:
                    starts.append(float(entry["start"]))
        trace["tasks"][label] = {
            "state": tr.get("state"), "attempts": n, "cache_hit": bool(tr.get("cache_hit")),
            "error_type": tr.get("error_type"), "error": tr.get("error"),
            "output": jsonable(tr.get("output")), "aggregate": aggregate, "attempt_log": log,
        }
    t0 = min(starts) if starts else None
    if t0 is not None:
        for t in trace["tasks"].values():
            for entry in t["attempt_log"]:
                for key in ("start", "end"):
                    if entry[key] is not None:
                        entry[key] = round(float(entry[key]) - t0, 3)
        if report.get("start"):
            trace["startup"] = round(t0 - report["start"], 3)
    return trace


def delays(task_trace: dict[str, Any]) -> list[float | None]:
    """Observed wait before each retry: next attempt's start minus the previous attempt's end."""
    log = task_trace.get("attempt_log") or []
    out: list[float | None] = []
    for prev, nxt in zip(log, log[1:]):
        if prev.get("end") is None or nxt.get("start") is None:
            out.append(None)
        else:
            out.append(round(nxt["start"] - prev["end"], 3))
    return out
