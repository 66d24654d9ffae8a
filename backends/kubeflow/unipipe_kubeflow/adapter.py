"""Runs inside a KFP component (the generated body calls it): IR task -> unipipe runtime.

Imports nothing but the unipipe runtime shim. What KFP cannot tell a component, and how it is
found out here:

- Run id: ``UNIPIPE_RUN_ID`` (set by the local executor; on a cluster set it via the pipeline's
  environment, else ``KFP_RUN_ID`` / ``ARGO_WORKFLOW_NAME``, else "kfp-run").
- Attempt number: Argo knows ``{{retries}}`` but KFP does not pass it to the container. The local
  executor sets ``UNIPIPE_KFP_ATTEMPT``; elsewhere the adapter counts attempts in the artifact
  store (``scratch/<run>/<task>/attempts``), which must then be shared storage (s3://, gs://).
- ParallelFor iteration index: ``UNIPIPE_KFP_ITERATION`` (local executor only).
- Non-retryable errors: KFP has no "fail now" signal, Argo will start the remaining attempts.
  The first non-retryable failure leaves a marker in the scratch folder; later attempts of the
  task find it and fail at once without calling the user's function (and without a trace event,
  so the task's attempts are those that ran).
"""

from __future__ import annotations

import time as _time

_IMPORT_STARTED = _time.perf_counter()  # unipipe.runtime.timing: the shim's own time per try

import json  # noqa: E402 - after the clock starts
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterable, Mapping  # noqa: E402
from typing import Any  # noqa: E402

BACKEND = "kubeflow"


def run_id() -> str:
    return (os.environ.get("UNIPIPE_RUN_ID") or os.environ.get("KFP_RUN_ID")
            or os.environ.get("ARGO_WORKFLOW_NAME") or "kfp-run")


def _scratch(rid: str, task_id: str, map_index: int | None) -> str:
    from unipipe.runtime.store import scratch_root

    suffix = f"-{map_index}" if map_index is not None else ""
    return f"{scratch_root()}/{rid}/{task_id}{suffix}"


def _attempt(rid: str, task_id: str, map_index: int | None) -> int:
    env = os.environ.get("UNIPIPE_KFP_ATTEMPT")
    if env:
        return int(env)
    from unipipe.runtime import store

    url = f"{_scratch(rid, task_id, map_index)}/attempts"
    previous = store.read_bytes(url)
    attempt = (int(previous) if previous else 0) + 1
    store.write_bytes(url, str(attempt).encode())
    return attempt


def decode(value: Any, codec: str) -> Any:
    if codec == "json":
        return json.loads(value)
    if codec == "json-list":
        return [json.loads(v) for v in value]
    return value


def encode(value: Any, kind: str) -> Any:
    """Transport value -> the component's KFP output (see mapping.output_kind)."""
    from unipipe.runtime import store

    if kind == "items":
        value = store.from_transport(value)  # ParallelFor needs the list itself, inline
        if not isinstance(value, list):
            raise TypeError(f"a task that is mapped over must return a list, got {type(value).__name__}")
        return [json.dumps(v, allow_nan=False) for v in value]
    if kind == "json":
        return json.dumps(value, allow_nan=False)
    return value


def run_component(spec: Mapping[str, Any], inputs: Mapping[str, Any], codecs: Mapping[str, str],
                  output: str, emulate: Iterable[str] = (), task_id: str | None = None,
                  element: bool = False, artifacts: Mapping[str, Any] | None = None,
                  logical_date: str | None = None) -> Any:
    """One attempt of one IR task; ``task_id`` is given when the component serves several;
    ``element``: the task runs once per item of a mapped sub-pipeline, in one iteration of its
    ParallelFor, so it is that iteration's ``task[i]`` (as a task's own fan-out element is).
    ``artifacts``: KFP's artifact objects of the component's Input[...]/Output[...] parameters
    (declared and the hidden unipipe_metrics/unipipe_report), by name; the shim reads and
    writes their ``.path`` and ``.metadata`` and KFP's executor records them.
    ``logical_date``: the run's (see :func:`resolve_logical_date`)."""
    entered = _time.perf_counter()
    try:
        return _run_component(spec, inputs, codecs, output, emulate, task_id, element, artifacts,
                              logical_date)
    finally:  # a no-op unless UNIPIPE_SHIM_TIMING is set (comparisons/perf/shim_engines.py)
        from unipipe.runtime import timing

        timing.finish(entered, backend=BACKEND, task=str(task_id or spec.get("id", "")),
                      imported=(_IMPORT_STARTED, _IMPORT_DONE))


def _run_component(spec: Mapping[str, Any], inputs: Mapping[str, Any], codecs: Mapping[str, str],
                   output: str, emulate: Iterable[str], task_id: str | None, element: bool,
                   artifacts: Mapping[str, Any] | None, logical_date: str | None) -> Any:
    from unipipe.runtime import store
    from unipipe.runtime.invoke import NonRetryable, run_attempt

    if task_id is not None:
        spec = {**spec, "id": task_id}
    store.use(spec.get("store"))  # the attempt counter and marker live in the shared store

    rid = run_id()
    iteration = os.environ.get("UNIPIPE_KFP_ITERATION")
    map_index = (int(iteration) if iteration not in (None, "")
                 and (spec.get("map_over") or element) else None)
    attempt = _attempt(rid, spec["id"], map_index)
    marker = f"{_scratch(rid, spec['id'], map_index)}/non-retryable"
    if attempt > 1:
        seen = store.read_bytes(marker)
        if seen is not None:
            from unipipe.runtime import trace

            trace.emit({"kind": "short-circuit", "run_id": rid, "pipeline": spec["pipeline"],
                        "task": spec["id"], "map_index": map_index, "attempt": attempt,
                        "backend": BACKEND})
            raise NonRetryable(f"attempt {attempt} not run: {seen.decode()}")
    args = {name: decode(value, codecs.get(name, "raw")) for name, value in inputs.items()}
    spec = dict(spec)
    if map_index is not None or spec.get("map_over"):
        # the item is this iteration's element, never a path into it
        spec["paths"] = {k: v for k, v in (spec.get("paths") or {}).items() if k != spec.get("map_over")}
    try:
        value, _hit = run_attempt(spec, args, run_id=rid, attempt=attempt, backend=BACKEND,
                                  map_index=map_index, emulate=emulate,
                                  logical_date=resolve_logical_date(logical_date),
                                  native=_local_paths(artifacts) if artifacts is not None else None)
    except BaseException as exc:
        if getattr(exc, "__unipipe_retryable__", True) is False:
            store.write_bytes(marker, f"{type(exc).__name__}: {exc}"[:500].encode())
        raise
    return encode(value, output)


def resolve_logical_date(value: str | None) -> str | None:
    """The run's logical date for ``up.current().logical_date``. A scheduled pipeline's
    components receive ``unipipe_logical_date or unipipe_schedule_time``: the hidden pipeline
    parameter a backfilled run sets, else KFP's ``PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER``
    (a recurring run's fire time; a one-off run's creation time). A placeholder left unfilled
    (kfp.local does not fill it) is no date. Otherwise ``UNIPIPE_LOGICAL_DATE``, which the
    local executor sets for a pipeline without a schedule; on a cluster such a pipeline's
    tasks get None."""
    if value and not value.startswith("{{$"):
        return value
    return os.environ.get("UNIPIPE_LOGICAL_DATE") or None


class _Local:
    """An input artifact at a ``file://`` URI (a dsl.importer of a local file): KFP maps only
    gs://, s3://, minio:// and oci:// URIs to local paths (kfp/dsl/types/artifact_types.py,
    Artifact._get_path), so its ``.path`` would be the URI itself."""

    def __init__(self, art: Any) -> None:
        self.uri = art.uri
        self.path = art.uri[len("file://"):]
        self.metadata = art.metadata


def _local_paths(artifacts: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _Local(art) if str(getattr(art, "uri", "")).startswith("file://") else art
            for name, art in artifacts.items()}


def pipeline_alerts(alerts: list[Mapping[str, Any]], pipeline: str, status: Any) -> None:
    """Exit handler body: ``status`` is KFP's PipelineTaskFinalStatus of the wrapped group."""
    from unipipe.runtime.alerts import deliver_pipeline

    state = getattr(status, "state", None)
    event = "success" if state in ("SUCCEEDED", "SKIPPED") else "failure"
    error = getattr(status, "error_message", None) or None
    deliver_pipeline(alerts, event, pipeline=pipeline, run_id=run_id(), backend=BACKEND,
                     error=error if event == "failure" else None)
    print(f"unipipe: pipeline {pipeline} finished {state}; alerts: {event}", file=sys.stderr)


#: PipelineTaskFinalStatus states. The local executor passes SUCCEEDED / FAILED; a KFP
#: backend passes the producer's state as it records it: the MLMD execution state (COMPLETE,
#: CACHED, FAILED, CANCELED) in older drivers, the task state (SUCCEEDED, SKIPPED, ...) in
#: newer ones (kubeflow/pipelines backend/src/v2/driver/resolve.go, TaskFinalStatus).
_GROUP_SUCCEEDED = {"SUCCEEDED", "COMPLETE", "CACHED"}
_GROUP_FAILED = {"FAILED", "CANCELED", "CANCELLED", "ERROR"}


def group_alerts(alerts: list[Mapping[str, Any]], pipeline: str, group: str, status: Any) -> None:
    """A sub-pipeline's alerts task: ``status`` is the PipelineTaskFinalStatus of its task.

    Once, when it has ended (reference rule 11), and only if it ran: a group skipped whole
    gets no alert (a state that is neither a success nor a failure is logged, not alerted)."""
    from unipipe.runtime.alerts import deliver_pipeline

    state = getattr(status, "state", None)
    if state in _GROUP_SUCCEEDED:
        event = "success"
    elif state in _GROUP_FAILED:
        event = "failure"
    else:
        print(f"unipipe: sub-pipeline {group} of {pipeline} ended {state}: not run, no alerts",
              file=sys.stderr)
        return
    error = getattr(status, "error_message", None) or None
    deliver_pipeline(alerts, event, pipeline=pipeline, run_id=run_id(), backend=BACKEND,
                     error=error if event == "failure" else None, group=group)
    print(f"unipipe: sub-pipeline {group} of {pipeline} finished {state}; alerts: {event}",
          file=sys.stderr)


_IMPORT_DONE = _time.perf_counter()
