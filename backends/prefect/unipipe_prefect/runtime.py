"""The adapter generated Prefect flows import inside their bodies (cheap: no pydantic, no libcst).

Prefect does most of the work natively (retries with a precomputed delay list, the exception
filter through ``retry_condition_fn``, caching with ``INPUTS + TASK_SOURCE``, timeouts, hooks);
this module only connects Prefect's run context to :mod:`unipipe.runtime`:

- :func:`invoke` runs one attempt through :func:`unipipe.runtime.invoke.run_attempt`, with the
  attempt number read from Prefect's task run (``run_count``) and ``emulate`` naming only what
  Prefect 3.7 cannot do (``retry.jitter``: ``retry_jitter_factor`` has no effect on task retries;
  ``cache`` for a task with artifacts or logs, whose key must cover the input files and whose
  hit must bring back what the task recorded). What the attempt recorded (its output
  artifacts' store URIs and digests, its metrics, its report) becomes Prefect artifacts of the
  task run (:func:`publish_record`), which is where the runner reads them back.
- :func:`should_retry` is the body of the generated ``retry_condition_fn``. It is also where the
  task's ``retry`` alerts are delivered: Prefect has no retry hook that sees the error, and this
  function runs exactly once per failed attempt that still has retries left.
- :func:`task_alerts` and :func:`pipeline_alerts` are the bodies of the generated
  ``on_failure`` / ``on_completion`` hooks (each runs once, after the retry loop).
- :func:`ready`, :func:`value`, :func:`items` and :func:`raise_for_failures` let the generated
  flow follow the IR's rules for failures and skips while reading like plain Python.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

BACKEND = "prefect"


class PipelineFailed(RuntimeError):
    """Raised at the end of a flow whose tasks failed, so Prefect marks the flow run Failed."""

    def __init__(self, failed: list[str], first_error: str | None):
        self.failed_tasks = failed
        self.first_error = first_error
        super().__init__(f"tasks failed: {', '.join(failed)}"
                         + (f" (first error: {first_error})" if first_error else ""))


class GroupFailed(RuntimeError):
    """Raised at the end of a group's subflow when one of its tasks failed (or is
    upstream_failed) and one of them ran: Prefect marks the subflow run Failed, retries it
    while its ``retries`` remain, and fires its ``on_failure`` hook for the final try only.

    It carries the member states to the caller (``group_states``): the exception object
    itself reaches the parent flow, in the same process (prefect/states.py ~290
    ``exception_to_failed_state``: "Attach the exception for local usage"). When Prefect
    persists it (a flow's failed state is always written, prefect/flow_engine.py ~820
    ``write_result=True``), the states are left out (``__reduce__``)."""

    def __init__(self, group: str, failed: list[str], first_error: str | None,
                 states: Mapping[str, Any] | None = None):
        self.group = group
        self.failed_tasks = failed
        self.first_error = first_error
        self.states = dict(states or {})
        super().__init__(f"sub-pipeline {group}: tasks failed: {', '.join(failed)}"
                         + (f" (first error: {first_error})" if first_error else ""))

    def __reduce__(self) -> Any:
        return (GroupFailed, (self.group, self.failed_tasks, self.first_error))


# ---------------------------------------------------------------- run context


def run_id() -> str:
    """The unipipe run id: ``UNIPIPE_RUN_ID`` when a runner set one, else the flow-run id."""
    explicit = os.environ.get("UNIPIPE_RUN_ID")
    if explicit:
        return explicit
    from prefect.context import FlowRunContext, TaskRunContext

    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        if flow_ctx.flow_run.parent_task_run_id is not None:
            return _root_flow_run_id(str(flow_ctx.flow_run.id))  # inside a group's subflow
        return str(flow_ctx.flow_run.id)
    task_ctx = TaskRunContext.get()
    if task_ctx is not None and task_ctx.task_run.flow_run_id is not None:
        return str(task_ctx.task_run.flow_run_id)
    return "prefect-no-flow-run"


_ROOTS: dict[str, str] = {}


def _root_flow_run_id(flow_run_id: str) -> str:
    """The pipeline's flow run for a subflow run (a group): one run id for all its tasks, as
    ``prefect.runtime.flow_run.root_flow_run_id`` finds it (through the API, so asked once per
    subflow run and process)."""
    if flow_run_id not in _ROOTS:
        from prefect.runtime import flow_run

        _ROOTS[flow_run_id] = str(flow_run.root_flow_run_id)
    return _ROOTS[flow_run_id]


def logical_date() -> str:
    """The run's logical date, ISO 8601: the flow run's scheduled start time
    (``prefect.runtime.flow_run.scheduled_start_time``, prefect/runtime/flow_run.py
    ``get_scheduled_start_time``: the flow run's ``expected_start_time``). A run created
    ``Scheduled(scheduled_time=d)`` (a backfill, a deployment schedule) has ``d``; a manual or
    triggered run has its creation time; outside a flow run, now (UTC). Inside a group's subflow
    it is the pipeline's (root) flow run's, as every task of one run shares one logical date."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        if ctx.flow_run.parent_task_run_id is not None:
            key = str(ctx.flow_run.id)
            if key not in _LOGICAL:
                from prefect import get_client

                root = _root_flow_run_id(key)
                with get_client(sync_client=True) as client:
                    when = client.read_flow_run(root).expected_start_time
                _LOGICAL[key] = when.isoformat() if when is not None else _now()
            return _LOGICAL[key]
        when = ctx.flow_run.expected_start_time
        return when.isoformat() if when is not None else _now()
    from prefect.runtime import flow_run

    return flow_run.scheduled_start_time.isoformat()


_LOGICAL: dict[str, str] = {}


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


#: the event a successful attempt of a task with ``produces=[...]`` emits, once per asset
ASSET_EVENT = "unipipe.asset.updated"


def asset_resource_id(uri: str) -> str:
    """The Prefect event resource id of an asset: ``unipipe.asset.<normalised uri>``."""
    return f"unipipe.asset.{uri}"


def emit_asset_events(spec: Mapping[str, Any], map_index: int | None = None, *,
                      cache_hit: bool = False) -> None:
    """Tell the server that the task's assets were updated: one event per asset, POSTed to
    ``/api/events`` (prefect/server/api/events.py ``create_events``: a JSON list, 204) before the
    task run ends, so the event exists once its task run is Completed (``emit_event`` would queue
    it on the EventsWorker's websocket instead). Its ``related`` resources name the flow run,
    the task run and the deployment, as Prefect's own events do. Only called after an attempt
    that succeeded (a failed attempt raises before it): a failed task updates nothing. Each
    event's id also goes to the run's trace (``UNIPIPE_TRACE_DIR``, when set), as an
    ``asset-event`` line."""
    from uuid import uuid4

    from prefect import get_client
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.types._datetime import now

    related: list[dict[str, str]] = []
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        fr = flow_ctx.flow_run
        related.append({"prefect.resource.id": f"prefect.flow-run.{fr.id}",
                        "prefect.resource.role": "flow-run", "prefect.resource.name": fr.name})
        if fr.deployment_id is not None:
            related.append({"prefect.resource.id": f"prefect.deployment.{fr.deployment_id}",
                            "prefect.resource.role": "deployment"})
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        related.append({"prefect.resource.id": f"prefect.task-run.{task_ctx.task_run.id}",
                        "prefect.resource.role": "task-run",
                        "prefect.resource.name": task_ctx.task_run.name})
    events = [{
        "id": str(uuid4()), "occurred": now("UTC").isoformat(), "event": ASSET_EVENT,
        "resource": {"prefect.resource.id": asset_resource_id(uri),
                     "prefect.resource.name": uri, "unipipe.asset.uri": uri},
        "related": related,
        "payload": {"uri": uri, "pipeline": spec["pipeline"], "task": spec["id"],
                    "map_index": map_index, "run_id": run_id(), "cache_hit": cache_hit},
    } for uri in spec["produces"]]
    with get_client(sync_client=True) as client:
        client.request("POST", "/events", json=events)
    from unipipe.runtime import trace

    for event in events:  # what a chain's probe follows (unipipe_prefect.chain.Probe)
        trace.emit({"kind": "asset-event", "run_id": event["payload"]["run_id"],
                    "pipeline": spec["pipeline"], "task": spec["id"], "map_index": map_index,
                    "uri": event["payload"]["uri"], "event_id": event["id"]})


def _attempt() -> int:
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    if ctx is None:
        return 1
    return max(1, int(ctx.task_run.run_count))


# ---------------------------------------------------------------- task bodies


def invoke(spec: Mapping[str, Any], inputs: Mapping[str, Any], *, map_index: int | None = None,
           emulate: Iterable[str] = ()) -> Any:
    """Run one attempt of a unipipe task inside a Prefect task run; return the transported value.

    The attempt runs in a forked child process, as on the reference runner: a task that kills
    its own process (or segfaults) fails only that attempt, and a timeout (Prefect's own
    ``timeout_seconds``, raised while this process waits) really stops the user's code, also
    for map elements that Prefect runs in worker threads. ``UNIPIPE_PREFECT_ISOLATION=inline``
    runs the attempt in the flow process instead.
    """
    kwargs = {"run_id": run_id(), "attempt": _attempt(), "backend": BACKEND,
              "map_index": map_index, "emulate": tuple(emulate),
              "logical_date": logical_date()}
    if os.environ.get("UNIPIPE_PREFECT_ISOLATION", "process") == "inline":
        shim = _shim()
        value, hit = shim.run_attempt(spec, inputs, **kwargs)
        record = shim.LAST_RECORD
    else:
        value, hit, record = _invoke_in_child(spec, inputs, kwargs)
    if record is not None:
        publish_record(spec, record, map_index)
    if spec.get("produces"):
        emit_asset_events(spec, map_index, cache_hit=bool(hit))
    if hit and "cache" in kwargs["emulate"]:
        # the shim's cache answered: the task run ends as Prefect's own hits do, Completed
        # named "Cached". A state the task returns, made by hand (no run ids), becomes its
        # final state as it is (prefect/states.py ~345 return_value_to_state; the task
        # engine's handle_success, prefect/task_engine.py ~636).
        from prefect.states import Completed

        return Completed(name="Cached", data=value)
    return value


# ---------------------------------------------------------------- the engine's record

#: the ``description`` of every artifact this adapter creates ends with this and, after it, the
#: JSON the runner reads back (results.records_from_artifacts)
ARTIFACT_TAG = "unipipe:"


def artifact_key(*parts: Any) -> str:
    """A Prefect artifact key from names: lowercase letters, digits and dashes only (Prefect
    rejects anything else: prefect/types/names.py ~116 ``ArtifactKey``, pattern
    ``^[a-z0-9-]*$``), e.g. ``train-model``, ``score-3-metrics``."""
    import re

    text = "-".join(str(p) for p in parts if p is not None and str(p) != "")
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-")


def _description(text: str, fields: Mapping[str, Any]) -> str:
    import json

    return f"{text}\n\n{ARTIFACT_TAG}{json.dumps(fields, sort_keys=True)}"


def publish_record(spec: Mapping[str, Any], record: Mapping[str, Any],
                   map_index: int | None = None) -> None:
    """Show what a successful attempt recorded as Prefect artifacts of its task run: a link
    artifact per output artifact (its store URI; type, sha256 and size in the description),
    key ``<task>-<output>``; a table artifact for the metrics, ``<task>-metrics``; a markdown
    artifact for the report, ``<task>-report`` (an output named ``metrics`` or ``report`` is
    ``<task>-metrics-file``; a map element's keys have its index after the task).

    Called inside the Prefect task run, so each artifact carries the task run and flow run ids
    (prefect/artifacts.py ~101 ``Artifact.create``: ``get_task_and_flow_run_ids()``): the runner
    finds them with ``read_artifacts`` filtered on the flow run. A link artifact is stored
    with type ``markdown`` (prefect/artifacts.py ~256 ``LinkArtifact``), a table as a JSON
    string (``TableArtifact.format``)."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    task_id = spec["id"]
    where = f"{task_id}[{map_index}]" if map_index is not None else task_id
    base = {"task": task_id, "map_index": map_index}
    for name, entry in sorted((record.get("artifacts") or {}).items()):
        key = artifact_key(task_id, map_index, name)
        if artifact_key(name) in ("metrics", "report"):  # not the task's metrics table/report
            key += "-file"
        fields = {**base, "kind": "output", "name": name, "type": entry.get("type"),
                  "uri": entry["uri"], "sha256": entry.get("sha256"), "size": entry.get("size"),
                  "folder": bool(entry.get("folder"))}
        create_link_artifact(
            link=entry["uri"], link_text=f"{where}: {name}", key=key,
            description=_description(f"Output `{name}` ({entry.get('type')}) of task "
                                     f"`{where}`, sha256 `{entry.get('sha256')}`", fields))
    metrics = record.get("metrics") or {}
    if metrics:
        create_table_artifact(
            table=[{"metric": k, "value": v} for k, v in sorted(metrics.items())],
            key=artifact_key(task_id, map_index, "metrics"),
            description=_description(f"Metrics of task `{where}`",
                                     {**base, "kind": "metrics"}))
    if record.get("report") is not None:
        create_markdown_artifact(
            markdown=record["report"], key=artifact_key(task_id, map_index, "report"),
            description=_description(f"Report of task `{where}`", {**base, "kind": "report"}))


def _shim() -> Any:
    """The module unipipe.runtime.invoke (the package's ``invoke`` attribute is the function);
    its LAST_RECORD is what the last attempt in this process recorded."""
    import importlib

    return importlib.import_module("unipipe.runtime.invoke")


class RemoteTaskError(Exception):
    """An error raised in the attempt's process that could not be sent back as itself."""

    def __init__(self, type_name: str, message: str):
        super().__init__(message)
        self.type_name = type_name


def _child_attempt(write_fd: int, spec: Mapping[str, Any], inputs: Mapping[str, Any],
                   kwargs: dict[str, Any]) -> None:
    import pickle
    import signal

    shim = _shim()
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        # the value, whether the shim's cache answered, and what the attempt recorded
        # (invoke.LAST_RECORD is set in this process only, so it travels back with the value)
        value, hit = shim.run_attempt(spec, inputs, **kwargs)
        message: tuple[Any, ...] = ("ok", value, hit, shim.LAST_RECORD)
    except BaseException as exc:  # noqa: BLE001 - sent to the parent
        retryable = getattr(exc, "__unipipe_retryable__", True) is not False
        try:
            data: bytes | None = pickle.dumps(exc)
            pickle.loads(data)
        except Exception:  # noqa: BLE001 - unpicklable errors travel by name and message
            data = None
        message = ("err", type(exc).__name__, str(exc)[:2000], retryable, data)
    payload = pickle.dumps(message)
    view = memoryview(len(payload).to_bytes(8, "big") + payload)
    while view:
        written = os.write(write_fd, view)
        view = view[written:]


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or type(exc).__name__ == "CancelledError"


def _complete(buffer: bytes) -> bool:
    return len(buffer) >= 8 and len(buffer) - 8 >= int.from_bytes(buffer[:8], "big")


#: what a spawned zygote imports before its first attempt (a forked one has them already)
ZYGOTE_PRELOAD = ("unipipe.runtime.invoke", "unipipe.runtime.store", "unipipe_prefect.runtime")


def _invoke_in_child(spec: Mapping[str, Any], inputs: Mapping[str, Any],
                     kwargs: dict[str, Any]) -> tuple[Any, bool, dict[str, Any] | None]:
    """(value, cache hit, record) of one attempt run in a process of its own.

    The process is forked from this flow run's zygote (:mod:`unipipe.runtime.zygote`), a
    process with one thread, not from this one: a flow run's process runs Prefect's threads,
    and a fork copies any lock one of them holds, held for ever (a CI run hung an attempt in
    OpenSSL that way). The attempt's process group is killed if this process dies or gives
    up on it (Prefect's timeout)."""
    import pickle
    import time

    from unipipe.runtime import retry as retry_rules
    from unipipe.runtime import trace
    from unipipe.runtime.zygote import start as zygote

    start = time.time()
    try:
        code, buffer = zygote(ZYGOTE_PRELOAD).run(
            "unipipe_prefect.runtime:_child_attempt", (spec, inputs, kwargs), preload=spec["fn"])
    except BaseException as exc:
        if _is_timeout(exc):
            from unipipe.runtime.invoke import PipelineTimeout, TaskTimeout

            timeout = spec.get("timeout")
            stand_in: BaseException
            if timeout and time.time() - start >= 0.99 * timeout:
                stand_in = TaskTimeout(f"task exceeded its timeout of {timeout:g}s")
                retryable = retry_rules.is_retryable(stand_in, spec.get("retry"))
            else:  # the flow's timeout_seconds interrupted it (flow_engine.py ~1281)
                stand_in = PipelineTimeout("the run exceeded its timeout")
                retryable = False
            _emit_failed(spec, kwargs, start, stand_in, retryable, trace)
        raise
    if not _complete(buffer):
        from unipipe.local.runner import ProcessKilled  # the reference runner's own error

        killed = ProcessKilled(f"task process ended without a result (exit code {code})")
        retryable = retry_rules.is_retryable(killed, spec.get("retry"))
        _emit_failed(spec, kwargs, start, killed, retryable, trace)
        if not retryable:
            killed.__unipipe_retryable__ = False  # type: ignore[attr-defined]
        raise killed
    message = pickle.loads(bytes(buffer[8:]))
    if message[0] == "ok":
        return message[1], message[2], message[3]
    _, type_name, text, retryable, data = message
    error: BaseException = pickle.loads(data) if data is not None else RemoteTaskError(type_name, text)
    try:
        error.__unipipe_retryable__ = retryable  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass
    raise error


def _emit_failed(spec: Mapping[str, Any], kwargs: dict[str, Any], start: float,
                 exc: BaseException, retryable: bool, trace: Any) -> None:
    """The trace event of an attempt whose process could not write its own."""
    import time

    trace.emit({"kind": "attempt", "run_id": kwargs["run_id"], "pipeline": spec["pipeline"],
                "task": spec["id"], "map_index": kwargs["map_index"],
                "attempt": kwargs["attempt"], "backend": BACKEND, "start": start,
                "end": time.time(), "outcome": "failed", "cache_hit": False,
                "error_type": type(exc).__name__, "error": str(exc), "retryable": retryable})


def _exception(state: Any) -> BaseException | None:
    try:
        data = state.result(raise_on_failure=False)
    except BaseException as exc:  # noqa: BLE001 - a state that cannot give its data
        return exc
    return data if isinstance(data, BaseException) else None


def _as_ir_error(exc: BaseException | None) -> BaseException | None:
    """Prefect's own timeout error stands for unipipe's TaskTimeout (same filter, same name)."""
    if exc is None:
        return None
    if isinstance(exc, TimeoutError) and type(exc).__name__ == "TaskRunTimeoutError":
        from unipipe.runtime.invoke import TaskTimeout

        return TaskTimeout(str(exc))
    return exc


def should_retry(spec: Mapping[str, Any], task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: False fails the task at once (fail_on, retry_on, NonRetryable)."""
    from unipipe.runtime import retry as retry_rules

    exc = _as_ir_error(_exception(state))
    flag = getattr(exc, "__unipipe_retryable__", None)  # the attempt's own verdict, when sent
    if isinstance(flag, bool):
        retryable = flag
    else:
        retryable = exc is None or retry_rules.is_retryable(exc, spec.get("retry"))
    if retryable and spec.get("alerts"):
        # Prefect calls this only while retries are left, so True means a retry will follow.
        _deliver_task(spec, "retry", task_run, exc, attempt=int(task_run.run_count),
                      map_index=map_index_of(task_run))
    return retryable


def _deliver_task(spec: Mapping[str, Any], event: str, task_run: Any, exc: BaseException | None,
                  *, attempt: int, map_index: int | None) -> None:
    from unipipe.runtime import alerts
    from unipipe.runtime.context import TaskContext
    from unipipe.runtime.invoke import max_attempts, payload

    ctx = TaskContext(run_id=run_id(), pipeline=spec["pipeline"], task_id=spec["id"],
                      attempt=attempt, max_attempts=max_attempts(spec), map_index=map_index,
                      backend=BACKEND)
    alerts.deliver(spec.get("alerts") or [], event, payload(spec, ctx, exc))


def cache_key(spec: Mapping[str, Any], parameters: Mapping[str, Any]) -> str:
    """``cache_key_fn`` for a user key function: the unipipe key over the loaded inputs."""
    from unipipe.runtime import cache
    from unipipe.runtime.invoke import load_inputs

    inputs = {k: v for k, v in parameters.items() if k != "map_index"}
    return cache.cache_key(spec, load_inputs(spec, inputs))


def map_index_of(task_run: Any) -> int | None:
    """The element index a mapped task run carries in its name (``task[i]``)."""
    name = str(getattr(task_run, "name", ""))
    if name.endswith("]") and "[" in name:
        try:
            return int(name[name.rindex("[") + 1:-1])
        except ValueError:
            return None
    return None


def task_alerts(spec: Mapping[str, Any], task_run: Any, state: Any) -> None:
    """``on_failure`` / ``on_completion`` hook: the task's final alert, exactly once."""
    if state.is_failed():
        exc = _as_ir_error(_exception(state))
        _deliver_task(spec, "failure", task_run, exc, attempt=max(1, int(task_run.run_count)),
                      map_index=map_index_of(task_run))
    elif state.is_completed():
        _deliver_task(spec, "success", task_run, None, attempt=max(1, int(task_run.run_count)),
                      map_index=map_index_of(task_run))


def pipeline_alerts(alerts: Sequence[Mapping[str, Any]], pipeline: str, flow_run: Any,
                    state: Any) -> None:
    """Flow ``on_failure`` / ``on_completion`` hook: the pipeline alert, once per run."""
    from unipipe.runtime import alerts as delivery

    if state.is_failed():
        exc = _exception(state)
        failed = list(getattr(exc, "failed_tasks", []) or [])
        error = getattr(exc, "first_error", None) or (str(exc) if exc else state.message)
        delivery.deliver_pipeline(list(alerts), "failure", pipeline=pipeline, run_id=run_id(),
                                  backend=BACKEND, error=error, failed_tasks=failed)
    elif state.is_completed():
        delivery.deliver_pipeline(list(alerts), "success", pipeline=pipeline, run_id=run_id(),
                                  backend=BACKEND)


def group_alerts(alerts: Sequence[Mapping[str, Any]], pipeline: str, flow_run: Any,
                 state: Any) -> None:
    """Subflow ``on_failure`` / ``on_completion`` hook: the group's alert, once, when it ends
    (Prefect calls a flow's hooks for its final state only: an AwaitingRetry between tries is
    Scheduled, prefect/flow_engine.py ~999 ``call_hooks``), and only if one of its tasks ran
    (runner rule 11): a group whose members were all kept from running ends Completed with no
    member state, and sends nothing."""
    from unipipe.runtime import alerts as delivery

    group = str(flow_run.name)  # the subflow run is named after its group (codegen)
    states = _member_states(state)
    if states is not None and not any(s is not None for s in states.values()):
        return  # nothing of the group ran
    if state.is_failed():
        exc = _exception(state)
        failed = list(getattr(exc, "failed_tasks", []) or [])
        error = getattr(exc, "first_error", None) or (str(exc) if exc else state.message)
        delivery.deliver_pipeline(list(alerts), "failure", pipeline=pipeline, run_id=run_id(),
                                  backend=BACKEND, error=error, failed_tasks=failed,
                                  group=group)
    elif state.is_completed():
        delivery.deliver_pipeline(list(alerts), "success", pipeline=pipeline, run_id=run_id(),
                                  backend=BACKEND, group=group)


def _member_states(state: Any) -> dict[str, Any] | None:
    """The member states a group's subflow gave back in ``state`` (its final state): its
    return value, or the GroupFailed it raised; None if it ended another way."""
    if state.is_completed():
        data = state.result(raise_on_failure=False)
        return data if isinstance(data, dict) else None
    exc = _exception(state)
    return exc.states if isinstance(exc, GroupFailed) else None


def group_states(state: Any) -> dict[str, Any]:
    """The states of a group's tasks, from the final state of its subflow run (called with
    ``return_state=True``), for the caller's guards, values and ``raise_for_failures``.
    A subflow that ended any other way (a crash, the run's timeout) fails the caller with its
    error."""
    states = _member_states(state)
    if states is None:
        state.result()  # raises the subflow's own error
        raise RuntimeError(f"a sub-pipeline's subflow gave back no task states ({state.name})")
    return states


def end_group(states: Mapping[str, Any], *, members: Sequence[str],
              upstream: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The end of a group's subflow: the members' states (``states`` also holds the outside
    ones they wait on, first, so an unrun member below an outside failure counts as
    upstream_failed). Raises GroupFailed if a member failed or is upstream_failed and one of
    them ran (rule 11: a group that did not run is not tried again and sends no alert)."""
    failed, first_error = _failures(states, upstream or {})
    inside = {t: states.get(t) for t in members}
    failed = [t for t in failed if t in inside]
    if failed and any(s is not None for s in inside.values()):
        from prefect.runtime import flow_run

        raise GroupFailed(str(flow_run.name), failed, first_error, inside)
    return inside


def copy_states(copies: Sequence[Any] | None, *, members: Sequence[str]) -> dict[str, Any]:
    """The states of a mapped group's tasks, from the final states of its copies' subflow runs
    in item order: each task's list of copy states (None where that copy did not run it), read
    like a mapped task's list of element states (``ready``, ``value``, ``_failures``). ``None``
    (no copy ran: the task the items come from did not complete) gives None for every task."""
    if copies is None:
        return dict.fromkeys(members)
    per_copy = [group_states(state) for state in copies]
    return {m: [states.get(m) for states in per_copy] for m in members}


# ---------------------------------------------------------------- flow helpers


def _states(state: Any) -> list[Any]:
    if state is None:
        return [None]
    if isinstance(state, (list, tuple)):
        return list(state)
    return [state]


def ready(*states: Any) -> bool:
    """True when every upstream task ran and completed (mapped tasks: every element)."""
    return all(s is not None and s.is_completed() for st in states for s in _states(st))


def result(state: Any) -> Any:
    """The transported value of a completed task (a list for mapped tasks), None if it did not run."""
    if state is None:
        return None
    if isinstance(state, (list, tuple)):
        return [result(s) for s in state]
    return state.result()


def value(state_or_value: Any, path: Sequence[Any] = (), *, is_state: bool = True) -> Any:
    """A task's output (artifacts loaded, key path applied); None for a task that did not run."""
    from unipipe.runtime import store

    raw = result(state_or_value) if is_state else state_or_value
    if is_state and state_or_value is None:
        return None
    return store.select(store.from_transport(raw), path)


def items(state_or_value: Any, path: Sequence[Any] = (), *, is_state: bool = True) -> list[Any]:
    """The list a mapped task fans out over; anything else fails the task as the IR says."""
    values = value(state_or_value, path, is_state=is_state)
    if not isinstance(values, list):
        raise TypeError(f"map() over {type(values).__name__}")
    return values


def wait(futures: Any) -> list[Any]:
    """Final states of mapped task runs, in element order."""
    futures.wait()
    return [f.state for f in futures]


def map_limited(task: Any, limit: int, /, **kwargs: Any) -> list[Any]:
    """``task.map(**kwargs)`` with at most ``limit`` of its task runs at once (``task.map(...,
    max_parallel=N)``): element i is submitted, with ``unmapped`` inputs as they are, once
    fewer than ``limit`` are running. Prefect has no per-map limit: a task runner's
    ``max_workers`` bounds every task of the flow, a concurrency limit every flow run
    (``prefect.futures.as_completed`` waits for the first to finish). Final states, in
    element order."""
    from prefect.futures import as_completed
    from prefect.utilities.annotations import unmapped

    fixed = {k: v.unwrap() for k, v in kwargs.items() if isinstance(v, unmapped)}
    lists = {k: list(v) for k, v in kwargs.items() if not isinstance(v, unmapped)}
    count = min((len(v) for v in lists.values()), default=0)
    futures: list[Any] = []
    running: set[Any] = set()
    for i in range(count):
        while len(running) >= limit:
            running.discard(next(as_completed(list(running))))
        future = task.submit(**fixed, **{k: v[i] for k, v in lists.items()})
        futures.append(future)
        running.add(future)
    for future in futures:
        future.wait()
    return [f.state for f in futures]


#: final task states of the last flow run in this process, by task-run id (read by the driver)
FINAL_STATES: dict[str, Any] = {}


def _record(states: Mapping[str, Any]) -> None:
    FINAL_STATES.clear()
    for st in states.values():
        for s in _states(st):
            if s is not None and s.state_details.task_run_id is not None:
                FINAL_STATES[str(s.state_details.task_run_id)] = s
    if os.environ.get(VALUES_URL_ENV):
        _publish_values()


#: set for a deployment's flow run on a worker (isolated runs): where the flow process leaves
#: the values of its completed task runs, which Prefect persists only for cached tasks
VALUES_URL_ENV = "UNIPIPE_PREFECT_VALUES_URL"


def _publish_values() -> None:
    import pickle

    import fsspec
    from prefect.runtime import flow_run

    values = {tid: s.result() for tid, s in FINAL_STATES.items() if s.is_completed()}
    # the pipeline's flow run (this runs in its body), not a group's subflow run that a member
    # state names
    flow_run_id = str(flow_run.id)
    url = f"{os.environ[VALUES_URL_ENV].rstrip('/')}/{flow_run_id}.pickle"
    with fsspec.open(url, "wb") as fh:
        pickle.dump(values, fh)


def _failures(states: Mapping[str, Any],
              upstream: Mapping[str, Sequence[str]]) -> tuple[list[str], str | None]:
    """Tasks that failed or are upstream_failed, and the first error.

    ``states`` is in topological order; a task that did not run is counted as failed when it
    sits downstream of a failure (``upstream_failed``), as the reference runner reports it.
    (A run_if task never stays unrun after a failure it waits on: ``all_done`` always runs,
    ``one_failed`` runs exactly then.)
    """
    failed: list[str] = []
    first_error: str | None = None
    for task_id, st in states.items():
        if st is None:
            if any(u in failed for u in upstream.get(task_id, ())):
                failed.append(task_id)
            continue
        bad = [s for s in _states(st) if s is None or not s.is_completed()]
        if bad:
            failed.append(task_id)
            if first_error is None and bad[0] is not None:
                exc = _as_ir_error(_exception(bad[0]))
                first_error = f"{type(exc).__name__}: {exc}" if exc else bad[0].message
    return failed, first_error


def one_failed(tasks: Sequence[str], states: Mapping[str, Any],
               upstream: Mapping[str, Sequence[str]] | None = None) -> bool:
    """The guard of a ``run_if="one_failed"`` task: one of ``tasks`` (its upstream) failed or
    is upstream_failed. ``states`` holds the task's ancestors in topological order, so a task
    that did not run can be told apart: skipped, or downstream of a failure."""
    failed, _ = _failures(states, upstream or {})
    return any(t in failed for t in tasks)


def raise_for_failures(states: Mapping[str, Any],
                       upstream: Mapping[str, Sequence[str]] | None = None) -> None:
    """End the flow Failed (and so fire its on_failure hook) if any task failed or is
    upstream_failed, even when a cleanup task ran after it and succeeded.

    Prefect 3.7 would not: a flow that returns data ends Completed whatever its task runs did
    (``prefect/states.py`` ~319 ``return_value_to_state``: only returned states are
    aggregated), while an exception raised by the flow function ends it Failed
    (``prefect/flow_engine.py`` ~809 ``handle_exception``).
    """
    _record(states)
    failed, first_error = _failures(states, upstream or {})
    if failed:
        raise PipelineFailed(failed, first_error)
