"""The adapter generated DAG files call from inside their tasks and callbacks.

It is imported lazily (inside task bodies), imports Airflow only through the functions that
need it, and works on Airflow 3 (``airflow.sdk``) and 2.x (``airflow.operators.python``,
``airflow.exceptions``) alike. What it does:

- :func:`run_task`: read the run id (``dag_run.run_id``), the attempt (``ti.try_number``), the
  map index and the parameters from Airflow's current context -- parameters never pass through
  templated arguments -- then call :func:`unipipe.runtime.invoke.invoke` with the emulations the
  compiler chose, and turn an error the IR does not retry into ``AirflowFailException`` (unless
  the task's ``retry_policy`` decides that natively).
- :func:`map_items`, :func:`condition`: the bodies of the helper tasks the IR implies.
- :func:`retry_decision`: the body of the generated ``UnipipeRetry`` policy (Airflow 3.3+).
- :func:`deliver_alerts`: the body of the generated alert callbacks.
- :func:`group_alerts`: the body of a sub-pipeline's alerts task (a TaskGroup takes no
  callbacks).
"""

from __future__ import annotations

import time as _time

_IMPORT_STARTED = _time.perf_counter()  # unipipe.runtime.timing: the shim's own time per try

import json  # noqa: E402 - after the clock starts
from collections.abc import Mapping, Sequence  # noqa: E402
from typing import Any  # noqa: E402

BACKEND = "airflow"


# ---------------------------------------------------------------- Airflow, imported late


def _current_context() -> Mapping[str, Any]:
    try:
        from airflow.sdk import get_current_context  # Airflow 3
    except ImportError:  # Airflow 2
        from airflow.operators.python import get_current_context  # type: ignore[no-redef]
    return get_current_context()


def _fail_exception() -> type[BaseException]:
    try:
        from airflow.sdk.exceptions import AirflowFailException  # Airflow 3
    except ImportError:  # Airflow 2
        from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]
    return AirflowFailException


def _is_airflow_timeout(exc: BaseException) -> bool:
    return any(c.__name__ == "AirflowTaskTimeout" for c in type(exc).__mro__)


# ---------------------------------------------------------------- what a try needs to know


def _plain(value: Any) -> Any:
    """XCom collections of mapped tasks are lazy sequences; the shim and users want lists."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray, list, tuple)):
        return list(value)
    return value


class _Try:
    """Run id, attempt, map index and parameters of the running try."""

    def __init__(self, context: str | Mapping[str, Any] | None = None):
        if isinstance(context, str):  # a pod: the values were rendered into a JSON string
            data = json.loads(context)
            self.run_id = str(data["run_id"])
            self.attempt = int(data["try_number"])
            index = int(data.get("map_index", -1))
            self.params: Mapping[str, Any] = data.get("params") or {}
            self.task_id = str(data.get("task_id", ""))
            self.dag_id = str(data.get("dag_id", ""))
            self.retries = int(data.get("retries") or 0)
            found = data.get("logical_date")  # rendered by Jinja: "None" when it had none
            self.logical_date: str | None = None if found in (None, "", "None") else str(found)
        else:
            ctx = context if context is not None else _current_context()
            ti = ctx["ti"]
            dag_run = ctx.get("dag_run")
            self.run_id = str(getattr(dag_run, "run_id", None) or ctx["run_id"])
            self.attempt = int(ti.try_number)
            index = getattr(ti, "map_index", -1)
            index = -1 if index is None else int(index)
            self.params = ctx.get("params") or {}
            self.task_id = str(ti.task_id)
            self.dag_id = str(ti.dag_id)
            self.retries = int(getattr(ctx.get("task"), "retries", 0) or 0)
            self.ti = ti
            self.logical_date = logical_date(ctx)
        self.map_index = index if index >= 0 else None


def logical_date(ctx: Mapping[str, Any]) -> str | None:
    """The run's logical date as ISO 8601 (``up.current().logical_date``).

    Airflow 3 gives a run no logical date when it was triggered by assets or through the REST
    API with ``logical_date: null``: the time it stands for is then ``dag_run.run_after``
    (3.3 jobs/scheduler_job_runner.py ~2645-2656 creates asset-triggered runs with
    ``logical_date=None, run_after=<newest queued event>``). 2.11 always has one
    (``context["logical_date"]``; api/common/trigger_dag.py ~63 defaults it to now)."""
    when = ctx.get("logical_date")
    if when is None:
        when = getattr(ctx.get("dag_run"), "run_after", None)
    if when is None:
        return None
    # in the schedule's timezone (the DAG's: its start_date's), as the reference's dates are
    tz = getattr(ctx.get("dag"), "timezone", None)
    if tz is not None and hasattr(when, "astimezone"):
        try:
            when = when.astimezone(tz)
        except (TypeError, ValueError):
            pass
    return when.isoformat() if hasattr(when, "isoformat") else str(when)


def _run_deadline(spec: Mapping[str, Any], context: Any) -> float | None:
    """Epoch seconds the run must end by (``@up.pipeline(timeout=)``): the DAG run's start plus
    the timeout. Airflow enforces dagrun_timeout only in the scheduler, never under ``airflow
    dags test``, and then marks running tasks skipped; the shim stops the try itself."""
    timeout = spec.get("run_timeout")
    if not timeout or isinstance(context, str):
        return None
    ctx = context if context is not None else _current_context()
    started = getattr(ctx.get("dag_run"), "start_date", None)
    return None if started is None else started.timestamp() + float(timeout)


class ProcessKilled(RuntimeError):
    """The try's process died without reporting (killed by a signal, or exited), as the
    reference runner names it."""


def _own_process(spec: Mapping[str, Any]) -> bool:
    """Whether the try may run the task in this very process, with no child of its own.

    Under a real executor Airflow 3 runs each try in a task-runner process of its own, which
    talks to its supervisor over a socket (``task_runner.SUPERVISOR_COMMS`` a ``CommsDecoder``:
    ``airflow/sdk/execution_time/task_runner.py`` ~2400, ~2483); when that process dies, the
    supervisor fails the try and Airflow retries it, as the reference runner does. Only under
    ``airflow dags test`` does the try run inside the process of the whole run
    (``InProcessSupervisorComms``, ``airflow/sdk/execution_time/supervisor.py`` ~2042, set at
    ~2282): there, and on Airflow 2.11 (whose ``dags test`` also runs tries in-process), the
    child stays. So does a run with a timeout: the shim stops the try at the run's deadline
    from the child's parent. Saves a fork per attempt (about 21 ms with Airflow imported)."""
    if spec.get("run_timeout"):
        return False
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:  # Airflow 2.11
        return False
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return comms is not None and type(comms).__name__ != "InProcessSupervisorComms"


def _last_record() -> dict[str, Any] | None:
    """What the last attempt in this process recorded (artifacts, metrics, report): the module
    unipipe.runtime.invoke's, not the function unipipe.runtime re-exports under that name."""
    import sys

    return sys.modules["unipipe.runtime.invoke"].LAST_RECORD


#: what a spawned zygote imports before its first attempt (a forked one has them already)
ZYGOTE_PRELOAD = ("unipipe.runtime.invoke", "unipipe.runtime.store", "unipipe_airflow.runtime")


def _try_here(spec: Mapping[str, Any], values: Mapping[str, Any],
              now: Mapping[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """The try in this process: its value and its record (artifacts, metrics, report).
    ``now``: the try's run id, attempt, map index and logical date (:func:`_fields`)."""
    from unipipe.runtime.invoke import invoke

    value = invoke(spec, values, run_id=now["run_id"], attempt=now["attempt"], backend=BACKEND,
                   map_index=now["map_index"], emulate=spec.get("emulate") or (),
                   fn=_user_function(spec), logical_date=now["logical_date"])
    return value, _last_record()


def _fields(now: _Try) -> dict[str, Any]:
    return {"run_id": now.run_id, "attempt": now.attempt, "map_index": now.map_index,
            "logical_date": now.logical_date}


def _attempt_process(write_fd: int, spec: Mapping[str, Any], values: Mapping[str, Any],
                     now: Mapping[str, Any]) -> None:
    """The try in its own process: ("ok", (value, record)) or ("err", error), pickled to
    ``write_fd``. ``invoke.LAST_RECORD`` is set in this process only, so it goes back with the
    value."""
    import os
    import pickle

    try:
        result: tuple[str, Any] = ("ok", _try_here(spec, values, now))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent
        result = ("err", exc)
    try:
        data = pickle.dumps(result)
    except Exception:  # noqa: BLE001 - an unpicklable error: keep its type name and text
        err = result[1] if result[0] == "err" else None
        data = pickle.dumps(("err", RuntimeError(f"{type(err).__name__}: {err}")))
    with os.fdopen(write_fd, "wb") as fh:
        fh.write(data)


def _in_child(spec: Mapping[str, Any], values: Mapping[str, Any], now: _Try,
              deadline: float | None = None) -> Any:
    """The try in a process of its own (:func:`_attempt_process`): its (value, record), or its
    error raised here.

    Under ``airflow dags test`` tasks run inside the test process itself, so a task that kills
    its own process would end the whole run; in a process of its own, only the try dies (as
    with the reference runner and a real scheduler's task processes), and Airflow retries it.
    That process is forked from the run's zygote (:mod:`unipipe.runtime.zygote`), never from
    this one: ``dags test`` runs threads of its own (the in-process Execution API's event loop,
    its socket comms), and a fork copies any lock one of them holds, held for ever.
    """
    import pickle

    from unipipe.runtime import zygote
    from unipipe.runtime.invoke import PipelineTimeout

    try:
        code, data = zygote.start(ZYGOTE_PRELOAD).run(
            "unipipe_airflow.runtime:_attempt_process", (spec, values, _fields(now)),
            preload=spec["fn"], deadline=deadline)
    except zygote.DeadlinePassed:  # the run's timeout: the try was stopped at the deadline
        timeout = spec.get("run_timeout") or 0
        raise PipelineTimeout(f"the run exceeded its timeout of {timeout:g}s") from None
    if not data:
        why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        raise ProcessKilled(f"task process ended without a result ({why})")
    kind, value = pickle.loads(data)
    if kind == "err":
        raise value
    return value


def _trace_lost_try(spec: Mapping[str, Any], now: _Try, start: float, exc: BaseException) -> None:
    """The child could not write its own trace event (killed, or stopped by the timeout)."""
    import time

    from unipipe.runtime import retry as rules
    from unipipe.runtime import trace

    trace.emit({"kind": "attempt", "run_id": now.run_id, "pipeline": spec["pipeline"],
                "task": spec["id"], "map_index": now.map_index, "attempt": now.attempt,
                "backend": BACKEND, "start": start, "end": time.time(), "outcome": "failed",
                "cache_hit": False, "error_type": type(exc).__name__, "error": str(exc),
                "retryable": rules.is_retryable(exc, spec.get("retry"))})


def _user_function(spec: Mapping[str, Any]) -> Any:
    """The user's function, with Airflow's timeout reported as the IR's TaskTimeout (a
    TimeoutError): the exception filter and the retry policy then see what the reference
    runner sees."""
    from unipipe.runtime.invoke import TaskTimeout, task_callable

    def call(**kwargs: Any) -> Any:
        fn = task_callable(spec)  # a command task's argv runner, or the user's function
        try:
            return fn(**kwargs)
        except BaseException as exc:
            if _is_airflow_timeout(exc):
                raise TaskTimeout(f"task exceeded its timeout of {spec.get('timeout', 0):g}s") from exc
            raise

    return call


# ---------------------------------------------------------------- many machines on one


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the isolated lane: the worker's name, recorded by Airflow
    as the task instance's ``hostname`` (:mod:`unipipe_airflow.isolated`)."""
    import os
    import socket

    return os.environ.get("UNIPIPE_WORKER_NAME") or socket.getfqdn()


def enter_attempt_folder() -> None:
    """Under ``UNIPIPE_ATTEMPT_ROOT`` (a worker of the isolated lane), give this try's process a
    HOME, TMPDIR and working folder of its own, as a fresh pod would: Airflow's supervisor forks
    one process per try (``airflow/sdk/execution_time/supervisor.py``), so nothing set here
    outlives the try."""
    import os
    import tempfile

    root = os.environ.get("UNIPIPE_ATTEMPT_ROOT")
    if not root:
        return
    os.makedirs(root, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="attempt-", dir=root)
    for sub in ("home", "tmp", "work"):
        os.mkdir(os.path.join(folder, sub))
    home, tmp = os.path.join(folder, "home"), os.path.join(folder, "tmp")
    os.environ.update({"HOME": home, "TMPDIR": tmp, "TMP": tmp, "TEMP": tmp,
                       "XDG_CACHE_HOME": os.path.join(home, ".cache"),
                       "XDG_CONFIG_HOME": os.path.join(home, ".config"),
                       "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
                       "UNIPIPE_ATTEMPT_FOLDER": folder})
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    os.chdir(os.path.join(folder, "work"))
    os.environ["PWD"] = os.getcwd()


# ---------------------------------------------------------------- task bodies


def run_task(spec: Mapping[str, Any], inputs: Mapping[str, Any] | None = None, *,
             context: str | Mapping[str, Any] | None = None) -> Any:
    """One try of one unipipe task inside an Airflow task; returns the XCom value."""
    entered = _time.perf_counter()
    try:
        return _run_task(spec, inputs, context)
    finally:  # a no-op unless UNIPIPE_SHIM_TIMING is set (comparisons/perf/shim_engines.py)
        from unipipe.runtime import timing

        timing.finish(entered, backend=BACKEND, task=str(spec.get("id", "")),
                      imported=(_IMPORT_STARTED, _IMPORT_DONE))


def _run_task(spec: Mapping[str, Any], inputs: Mapping[str, Any] | None,
              context: str | Mapping[str, Any] | None) -> Any:
    from unipipe.runtime import store
    from unipipe.runtime.invoke import PipelineTimeout

    store.use(spec.get("store"))  # a fan-out's items below are written to the same store
    enter_attempt_folder()
    now = _Try(context)
    # the generated spec leaves out what the context says: the pipeline (DAG id) and task id
    spec = {"pipeline": now.dag_id, "id": now.task_id, **spec}
    if "retry" not in spec and now.retries:  # native retries: the shim only needs the count
        spec["retry"] = {"max_retries": now.retries}
    values = {name: _plain(v) for name, v in (inputs or {}).items()}
    for name, member in (spec.get("collect") or {}).items():
        if not isinstance(context, str):  # a pod gets what Airflow resolved
            values[name] = _collected(now.ti, member)
    for name, param in (spec.get("params") or {}).items():
        values[name] = now.params[param]
    import time

    start = time.time()
    try:
        if isinstance(context, str) or _own_process(spec):  # the try's own process already
            out, record = _try_here(spec, values, _fields(now))
        else:
            try:
                deadline = _run_deadline(spec, context)
                if deadline is not None and time.time() >= deadline:
                    raise PipelineTimeout("not started before the run's timeout of "
                                          f"{spec['run_timeout']:g}s")
                out, record = _in_child(spec, values, now, deadline)
            except PipelineTimeout as exc:
                _trace_lost_try(spec, now, start, exc)
                exc.__unipipe_retryable__ = False  # type: ignore[attr-defined]
                raise
            except ProcessKilled as exc:
                _trace_lost_try(spec, now, start, exc)
                if getattr(exc, "__unipipe_retryable__", True) and not spec.get("retry_policy"):
                    from unipipe.runtime import retry as rules

                    if not rules.is_retryable(exc, spec.get("retry")):
                        exc.__unipipe_retryable__ = False  # type: ignore[attr-defined]
                raise
            except BaseException as exc:
                if not _is_airflow_timeout(exc):
                    raise
                from unipipe.runtime.invoke import TaskTimeout

                timeout = TaskTimeout(f"task exceeded its timeout of {spec.get('timeout', 0):g}s")
                _trace_lost_try(spec, now, start, timeout)
                from unipipe.runtime import retry as rules

                if not rules.is_retryable(timeout, spec.get("retry")):
                    timeout.__unipipe_retryable__ = False  # type: ignore[attr-defined]
                raise timeout from exc
    except Exception as exc:
        if getattr(exc, "__unipipe_retryable__", True) is False:
            if isinstance(context, str):
                # In a pod: the worker's retry policy reads this verdict (it sees no exception).
                _write_verdict(spec, now, exc)
            elif not spec.get("retry_policy"):
                raise _fail_exception()(f"{type(exc).__name__}: {exc}") from exc
        raise
    if record and not isinstance(context, str):
        push_record(now.ti, record)
    if spec.get("fan_out"):
        # A task mapped over this output expands over a real list: Airflow counts its items.
        items = store.from_transport(out)
        if not isinstance(items, list):
            raise TypeError(f"a task maps over the output of {spec['id']!r}, which returned "
                            f"{type(items).__name__}, not a list")
        if out is not items:
            out = [store.to_transport(v) for v in items]
    return out


#: the XCom keys a successful try records its artifacts, metrics and report under
XCOM_ARTIFACTS, XCOM_METRICS, XCOM_REPORT = "unipipe_artifacts", "unipipe_metrics", "unipipe_report"


def record_xcoms(record: Mapping[str, Any]) -> dict[str, Any]:
    """The XComs (key -> JSON value) that show one try's record in Airflow: each artifact's
    type, URI, digest and size; the metrics; the Markdown report. Only what the try recorded."""
    out: dict[str, Any] = {}
    arts = {name: {k: entry[k] for k in ("type", "uri", "sha256", "size") if k in entry}
            for name, entry in (record.get("artifacts") or {}).items()}
    if arts:
        out[XCOM_ARTIFACTS] = arts
    if record.get("metrics"):
        out[XCOM_METRICS] = dict(record["metrics"])
    if record.get("report") is not None:
        out[XCOM_REPORT] = record["report"]
    return out


def push_record(ti: Any, record: Mapping[str, Any]) -> None:
    """Push a successful try's record as XComs of its task instance (map index included), where
    the UI's XCom tab and the REST API (``xcomEntries/{key}``) show it. Airflow 3:
    ``RuntimeTaskInstance.xcom_push(key, value)`` sends it to the execution API
    (``sdk/execution_time/task_runner.py`` ~625); 2.11: ``TaskInstance.xcom_push`` writes the
    xcom table (``models/taskinstance.py`` ~3641). Pushed from the task's own process, after the
    try's child (if any) returned: XCom is written by the process Airflow ran the try in."""
    for key, value in record_xcoms(record).items():
        ti.xcom_push(key=key, value=value)


def _collected(ti: Any, member: str) -> list[Any]:
    """Every copy's output of ``member`` (a task of a mapped task group), in copy order.

    Airflow resolves such an XComArg outside the group by pulling all its map indexes, but on
    Airflow 3 a single value comes back bare, not as a list of one
    (``sdk/execution_time/task_runner.py`` ~544-556: ``single_task_requested and
    len(xcoms) == 1``). A list of task ids always gives a list, ordered by map index (3.x:
    ``XCom.get_all``, ``api_fastapi/execution_api/routes/xcoms.py`` ~228; 2.11
    ``models/taskinstance.py`` ~648-670).
    """
    return list(_plain(ti.xcom_pull(task_ids=[member], key="return_value")) or [])


def map_items(how: Mapping[str, Any], value: Any = None) -> list[Any]:
    """The list a mapped task fans out over: a literal, a parameter or a key path of an output.

    Items go through XCom, which Airflow never renders as a template.
    """
    from unipipe.runtime import store

    store.use(how.get("store"))
    now = _Try()
    if "literal" in how:
        items = how["literal"]
    elif "param" in how:
        items = store.select(now.params[how["param"]], how.get("path"))
    else:
        items = store.select(store.from_transport(_plain(value)), how.get("path"))
    if not isinstance(items, list):
        raise TypeError(f"map() needs a list, got {type(items).__name__}")
    return [store.to_transport(v) for v in items]


def condition(value: Any, path: Sequence[str | int] = (), expect: bool = True) -> bool:
    """A short-circuit gate: True lets the guarded tasks run."""
    from unipipe.runtime import store

    got = store.select(store.from_transport(_plain(value)), path)
    if not isinstance(got, bool):
        raise TypeError(f"a condition needs a bool, got {type(got).__name__}")
    return got is expect


# ---------------------------------------------------------------- retry policy (Airflow 3.3+)


def _verdict_url(pipeline: str, run_id: str, task_id: str, map_index: int | None,
                 attempt: int) -> str:
    from unipipe.runtime.context import TaskContext

    ctx = TaskContext(run_id=run_id, pipeline=pipeline, task_id=task_id, attempt=attempt,
                      max_attempts=0, map_index=map_index, backend=BACKEND)
    return f"{ctx.scratch_url()}/unipipe-not-retried-{attempt}.json"


def _write_verdict(spec: Mapping[str, Any], now: _Try, exc: BaseException) -> None:
    from unipipe.runtime import store

    url = _verdict_url(spec["pipeline"], now.run_id, spec["id"], now.map_index, now.attempt)
    store.write_bytes(url, json.dumps({"error_type": type(exc).__name__,
                                       "error": str(exc)[:2000]}).encode())


def _pod_verdict(context: Mapping[str, Any] | None, try_number: int) -> dict[str, Any] | None:
    """The pod's shim said its error is not retried (read from the shared artifact store)."""
    from unipipe.runtime import store

    if not context:
        return None
    ti = context["ti"]
    index = getattr(ti, "map_index", -1)
    url = _verdict_url(ti.dag_id, str(getattr(context.get("dag_run"), "run_id", None)
                                      or context["run_id"]), ti.task_id,
                       index if index is not None and index >= 0 else None, try_number)
    data = store.read_bytes(url)
    return json.loads(data) if data else None


def retry_decision(retry: Mapping[str, Any], exception: BaseException, try_number: int, *,
                   delays: bool = True, pod: bool = False,
                   context: Mapping[str, Any] | None = None) -> Any:
    """What ``UnipipeRetry.evaluate`` returns: fail now, or retry after the IR's exact wait.

    For a pod task the exception is only "the pod failed": the verdict is the one the shim in
    the pod wrote next to the try's scratch folder.
    """
    from datetime import timedelta

    from airflow.sdk import RetryDecision

    from unipipe.runtime import retry as rules
    from unipipe.runtime.invoke import TaskTimeout

    exc = TaskTimeout(str(exception)) if _is_airflow_timeout(exception) else exception
    if pod:
        from unipipe.runtime import store

        store.use(retry.get("store"))  # where the pod's shim wrote its verdict
        verdict = _pod_verdict(context, try_number)
        if verdict is not None:
            return RetryDecision.fail(reason=f"unipipe: {verdict['error_type']} is not retried")
    elif not rules.is_retryable(exc, retry):
        return RetryDecision.fail(reason=f"unipipe: {type(exc).__name__} is not retried")
    if not delays:
        return RetryDecision.default()
    wait = rules.retry_delay(retry, try_number)
    return RetryDecision.retry(delay=timedelta(seconds=wait),
                               reason=f"unipipe: retry {try_number} after {wait:.3f}s")


# ---------------------------------------------------------------- alert callbacks


def _cause(exc: BaseException | None) -> BaseException | None:
    """The user's error behind the AirflowFailException the adapter raised."""
    if exc is not None and type(exc).__name__ == "AirflowFailException" and exc.__cause__:
        return exc.__cause__
    return exc


#: task id of the watcher the DAG gets when it has run_if tasks (codegen.DagWriter.watcher_def)
WATCHER_ID = "unipipe_watcher"


def fail_run() -> None:
    """The watcher's body: a task failed upstream, so the run must fail even if every leaf
    (a cleanup task) succeeded. Airflow lets the leaves decide the run's state
    (``airflow/models/dagrun.py`` ~1066 ``_tis_for_dagrun_state``, ~1217 ``update_state``)."""
    raise _fail_exception()("a task of this run failed; the run fails although the tasks "
                            "after it (run_if) ran")


def _failed_tasks(context: Mapping[str, Any]) -> list[str]:
    dag_run = context.get("dag_run")
    try:
        tis = dag_run.get_task_instances()  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - not every callback context carries the ORM run
        return []
    order = list(getattr(context.get("dag"), "task_ids", []) or [])
    failed = {ti.task_id for ti in tis if str(ti.state).split(".")[-1].lower()
              in ("failed", "upstream_failed") and ti.task_id != WATCHER_ID}
    return [t for t in order if t in failed] or sorted(failed)


def deliver_alerts(context: Mapping[str, Any], event: str, alerts: list[Mapping[str, Any]], *,
                   pipeline: bool = False) -> list[dict[str, Any]]:
    """Deliver unipipe alerts for an Airflow callback (task or DAG level)."""
    from unipipe.runtime import alerts as delivery

    dag_run = context.get("dag_run")
    run_id = str(getattr(dag_run, "run_id", None) or context.get("run_id"))
    dag = context.get("dag")
    ti = context.get("ti")
    dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None) or ""
    if pipeline:
        return delivery.deliver_pipeline(alerts, event, pipeline=dag_id, run_id=run_id,
                                         backend=BACKEND, failed_tasks=_failed_tasks(context))
    exc = _cause(context.get("exception"))
    index = getattr(ti, "map_index", -1)
    task = context.get("task")
    payload = {
        "pipeline": dag_id, "run_id": run_id, "task": getattr(ti, "task_id", None),
        "map_index": index if index is not None and index >= 0 else None,
        "attempt": getattr(ti, "try_number", None),
        "max_attempts": int(getattr(task, "retries", 0) or 0) + 1, "backend": BACKEND,
        "error_type": type(exc).__name__ if exc is not None else None,
        "error": str(exc)[:2000] if exc is not None else None,
    }
    return delivery.deliver(alerts, event, payload)


# ---------------------------------------------------------------- sub-pipeline alerts


#: a sub-pipeline's alerts task is ``<group id>__unipipe_alerts`` (codegen.group_alerts_def)
GROUP_ALERTS_TASK = "unipipe_alerts"


def _state_name(state: Any) -> str:
    return str(getattr(state, "value", state)).split(".")[-1].lower()


def _member_states(context: Mapping[str, Any], task_ids: Sequence[str]) -> dict[str, list[str]]:
    """The states of these tasks' instances in this DAG run (a mapped task: one per element).

    Airflow 3: a task has no database session; it asks the execution API through
    ``RuntimeTaskInstance.get_task_states`` (``sdk/execution_time/task_runner.py`` ~787), whose
    answer is ``{run_id: {task_id or f"{task_id}_{map_index}": state}}``
    (``api_fastapi/execution_api/routes/task_instances.py`` ~1228-1271). Airflow 2: the context's
    ``dag_run`` is the ORM DagRun and ``get_task_instances`` reads them
    (``airflow/models/dagrun.py`` ~617 on 2.11).
    """
    ti = context["ti"]
    dag_run = context.get("dag_run")
    run_id = str(getattr(dag_run, "run_id", None) or context["run_id"])
    wanted = set(task_ids)
    out: dict[str, list[str]] = {t: [] for t in task_ids}
    get_states = getattr(ti, "get_task_states", None)
    if get_states is not None:  # Airflow 3
        found = get_states(dag_id=ti.dag_id, task_ids=list(task_ids), run_ids=[run_id])
        for key, state in (found.get(run_id) or {}).items():
            tid = key
            if key not in wanted:  # a mapped task's element: "<task id>_<map index>"
                base, _, index = key.rpartition("_")
                if base not in wanted or not index.isdigit():
                    continue
                tid = base
            out[tid].append(_state_name(state))
        return out
    for other in dag_run.get_task_instances():  # type: ignore[union-attr]  # Airflow 2
        if other.task_id in wanted:
            out[other.task_id].append(_state_name(other.state))
    return out


def group_alerts(group: str, task_ids: Sequence[str], alerts: list[Mapping[str, Any]],
                 context: Mapping[str, Any] | None = None) -> None:
    """A sub-pipeline's alerts, once it ended (runner rule 11): it ran if one of its tasks was
    tried (success or failed); it failed if one of them failed or was upstream_failed. The
    payload names the group; like a DAG callback's, it carries no error text."""
    from unipipe.runtime import alerts as delivery

    ctx = context if context is not None else _current_context()
    states = _member_states(ctx, task_ids)
    ran = any(s in ("success", "failed") for found in states.values() for s in found)
    if not ran:
        return
    failed = [t for t in task_ids if any(s in ("failed", "upstream_failed") for s in states[t])]
    dag_run = ctx.get("dag_run")
    delivery.deliver_pipeline(
        alerts, "failure" if failed else "success", pipeline=str(ctx["ti"].dag_id),
        run_id=str(getattr(dag_run, "run_id", None) or ctx["run_id"]), backend=BACKEND,
        failed_tasks=failed, group=group)


_IMPORT_DONE = _time.perf_counter()
