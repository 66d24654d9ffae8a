"""``invoke``: one attempt of one task, as generated code runs it.

A backend calls ``invoke(spec, inputs, run_id=..., attempt=..., backend=..., emulate=...)`` from
inside its own task. ``spec`` is the plain-dict task spec the compiler embeds
(:func:`unipipe.compiler.spec.task_spec`); ``inputs`` are the values the engine passed (upstream
outputs and parameters, still in transport form). ``emulate`` names what the engine does not do
natively for this task, so the shim does it here:

- ``cache``: look up and store results (key and expiry as in :mod:`unipipe.runtime.cache`).
- ``timeout``: stop the user function after ``spec["timeout"]`` seconds (SIGALRM in the main
  thread; elsewhere a watchdog thread that abandons the call).
- ``retry.delay``: sleep the whole IR wait before a retry (engine retries with no delay).
- ``retry.jitter``: sleep only the jitter part (engine already waited the jitter-free delay).
- ``alerts``: deliver the task's alerts (retry, final failure, success) exactly once each.

The exception filter is always evaluated: a non-retryable error is re-raised with
``__unipipe_retryable__ = False`` so the backend's adapter can turn it into its engine's
"fail now" signal (AirflowFailException, a False retry_condition_fn, ...).
"""

from __future__ import annotations

import signal
import threading
import time

from unipipe.runtime import retry as retry_rules
from unipipe.runtime import store, timing, trace
from unipipe.runtime.context import TaskContext, reset_current, set_current

TYPE_CHECKING = False  # keeps `typing` off the shim's import path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any


class TaskTimeout(TimeoutError):
    """The task ran past its timeout. Retried like any failure unless the filter says no."""


class PipelineTimeout(RuntimeError):
    """The run passed ``@up.pipeline(timeout=...)``: the running try is stopped and its task
    fails at once (no further attempt; the whole run is what retries)."""

    __unipipe_retryable__ = False


class NonRetryable(Exception):
    """Raise from a task to fail it at once, whatever its retry policy."""

    __unipipe_retryable__ = False


_FN_CACHE: dict[str, Callable[..., Any]] = {}


def resolve_callable(path: str) -> Callable[..., Any]:
    fn = _FN_CACHE.get(path)
    if fn is None:
        from unipipe.runtime.loading import import_object

        started = time.perf_counter()
        obj = import_object(path)
        timing.add("module", time.perf_counter() - started)  # no-op unless timing is on
        fn = getattr(obj, "fn", obj)  # an @up.task object wraps the plain function
        _FN_CACHE[path] = fn
    return fn


def task_callable(spec: Mapping[str, Any]) -> Callable[..., Any]:
    """What one attempt calls with the inputs: a command task's argv runner, or the function."""
    if spec.get("command") is not None:
        from unipipe.runtime import command

        return command.bind(spec)
    return resolve_callable(spec["fn"])


def load_inputs(spec: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Literals from the spec plus engine-passed values, loaded from artifacts, key paths applied."""
    args = dict(spec.get("literals") or {})
    paths = spec.get("paths") or {}
    for name, value in inputs.items():
        args[name] = store.select(store.from_transport(value), paths.get(name))
    return args


def max_attempts(spec: Mapping[str, Any]) -> int:
    retry = spec.get("retry") or {}
    return int(retry.get("max_retries", 0)) + 1


def _call_with_timeout(fn: Callable[..., Any], args: dict[str, Any], timeout: float | None) -> Any:
    fn = timing.timed(fn)  # fn itself unless UNIPIPE_SHIM_TIMING is set (comparisons/perf)
    if not timeout:
        return fn(**args)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def on_alarm(signum: int, frame: Any) -> None:
            raise TaskTimeout(f"task exceeded its timeout of {timeout:g}s")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return fn(**args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(**args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True, name="unipipe-task")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TaskTimeout(f"task exceeded its timeout of {timeout:g}s (the call was abandoned)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _event(spec: Mapping[str, Any], ctx: TaskContext, **fields: Any) -> dict[str, Any]:
    return {"kind": "attempt", "run_id": ctx.run_id, "pipeline": ctx.pipeline, "task": ctx.task_id,
            "map_index": ctx.map_index, "attempt": ctx.attempt, "backend": ctx.backend, **fields}


def payload(spec: Mapping[str, Any], ctx: TaskContext, exc: BaseException | None = None) -> dict[str, Any]:
    return {"pipeline": ctx.pipeline, "run_id": ctx.run_id, "task": ctx.task_id,
            "map_index": ctx.map_index, "attempt": ctx.attempt,
            "max_attempts": ctx.max_attempts, "backend": ctx.backend,
            "error_type": getattr(exc, "type_name", type(exc).__name__) if exc else None,
            "error": str(exc)[:2000] if exc else None}


def invoke(spec: Mapping[str, Any], inputs: Mapping[str, Any], *, run_id: str, attempt: int,
           backend: str, map_index: int | None = None, emulate: Iterable[str] = (),
           fn: Callable[..., Any] | None = None, native: Mapping[str, Any] | None = None,
           logical_date: str | None = None) -> Any:
    """Run one attempt; return the output in transport form, or raise the task's error."""
    return run_attempt(spec, inputs, run_id=run_id, attempt=attempt, backend=backend,
                       map_index=map_index, emulate=emulate, fn=fn, native=native,
                       logical_date=logical_date)[0]


#: what the last successful attempt in this process recorded besides its value (artifact URIs,
#: metrics, report; unipipe.runtime.artifacts), for the adapter to show in its engine; None
#: when the task records nothing
LAST_RECORD: dict[str, Any] | None = None


def _check_packages(spec: Mapping[str, Any], backend: str) -> None:
    """A task's ``packages`` must be installed where it runs; KFP installs them itself
    (packages_to_install), the deploy puts them into the Airflow/Prefect workers' environment.
    The local runner refuses nothing: it says which are missing and runs the task."""
    from unipipe.runtime import artifacts

    unmet = artifacts.unmet_packages(list(spec.get("packages") or ()))
    if not unmet:
        return
    if backend == "local":
        import sys

        print(f"unipipe: task {spec['id']!r}: packages not installed here (the local runner "
              f"installs nothing): {', '.join(unmet)}", file=sys.stderr)
        return
    raise artifacts.PackagesMissing(
        f"task {spec['id']!r} needs {', '.join(unmet)} in this {backend} worker's environment "
        f"(unipipe deploy installs a task's packages into the workers' requirements)")


def run_attempt(spec: Mapping[str, Any], inputs: Mapping[str, Any], *, run_id: str,
                attempt: int, backend: str, map_index: int | None = None,
                emulate: Iterable[str] = (), fn: Callable[..., Any] | None = None,
                native: Mapping[str, Any] | None = None,
                logical_date: str | None = None) -> tuple[Any, bool]:
    """As :func:`invoke`, and also say whether the attempt was a cache hit.

    ``native``: the artifact objects the engine made for the task's declared artifacts (KFP),
    by parameter name; without it the artifacts move through the store."""
    emulate = set(emulate)
    store.use(spec.get("store"))
    ctx = TaskContext(run_id=run_id, pipeline=spec["pipeline"], task_id=spec["id"],
                      attempt=attempt, max_attempts=max_attempts(spec), map_index=map_index,
                      backend=backend, logical_date=logical_date)
    retry = spec.get("retry") or {}
    if attempt > 1 and retry:
        if "retry.delay" in emulate:
            time.sleep(retry_rules.retry_delay(retry, attempt - 1))
        elif "retry.jitter" in emulate:
            time.sleep(retry_rules.jitter_extra(retry, attempt - 1))
    start = time.time()
    token = set_current(ctx)
    global LAST_RECORD
    LAST_RECORD = None
    extras = spec.get("artifacts") or spec.get("logs") or spec.get("packages")
    try:
        args = load_inputs(spec, inputs)
        try:
            handles: dict[str, Any] = {}
            if extras:
                from unipipe.runtime import artifacts

                _check_packages(spec, backend)
                handles = (artifacts.bind_native(spec, native) if native is not None
                           else artifacts.prepare(spec, run_id, map_index))
            key = None
            if "cache" in emulate and spec.get("cache"):
                from unipipe.runtime import cache

                key_args = dict(args)
                if handles:
                    key_args.update(artifacts.input_digests(handles, spec))
                key = cache.cache_key(spec, key_args)
                hit, value = cache.lookup(spec, key)
                if hit and extras and native is None:
                    record = cache.lookup_record(key)
                    if record is None:  # an entry from before the task recorded: run it again
                        hit = False
                    else:
                        LAST_RECORD = record
                        artifacts.write_record(run_id, spec["id"], map_index, record)
                elif hit and extras:  # KFP: the cached outputs go into the engine's own paths
                    record = cache.lookup_record(key)
                    hit = record is not None and artifacts.restore_native(spec, record, native)
                    if hit:
                        LAST_RECORD = record
                if hit:
                    trace.emit(_event(spec, ctx, start=start, end=time.time(), outcome="success",
                                      cache_hit=True, error_type=None, error=None))
                    if "alerts" in emulate:
                        from unipipe.runtime import alerts

                        alerts.deliver(spec.get("alerts") or [], "success", payload(spec, ctx))
                    return value, True
            func = fn or task_callable(spec)
            if extras:
                records = artifacts.begin()
                try:
                    value = _call_with_timeout(func, {**args, **handles},
                                               spec.get("timeout") if "timeout" in emulate else None)
                    if native is not None:
                        LAST_RECORD = artifacts.finish_native(spec, handles, records, native)
                    else:
                        LAST_RECORD = artifacts.finish(spec, handles, records)
                finally:
                    artifacts.end()
            else:
                value = _call_with_timeout(func, args, spec.get("timeout") if "timeout" in emulate else None)
        except BaseException as exc:
            retryable = retry_rules.is_retryable(exc, retry) and not isinstance(
                exc, (KeyboardInterrupt, SystemExit))
            final = not retryable or attempt >= ctx.max_attempts
            trace.emit(_event(spec, ctx, start=start, end=time.time(), outcome="failed",
                              cache_hit=False, error_type=type(exc).__name__,
                              error=str(exc)[:2000], retryable=retryable))
            if "alerts" in emulate:
                from unipipe.runtime import alerts

                alerts.deliver(spec.get("alerts") or [], "failure" if final else "retry",
                               payload(spec, ctx, exc))
            if not retryable:
                try:
                    exc.__unipipe_retryable__ = False  # type: ignore[attr-defined]
                except (AttributeError, TypeError):
                    pass
            raise
        out = store.to_transport(value)
        if LAST_RECORD is not None and native is None:
            artifacts.write_record(run_id, spec["id"], map_index, LAST_RECORD)
        if key is not None:
            from unipipe.runtime import cache

            if extras and native is not None and LAST_RECORD is not None:
                LAST_RECORD = artifacts.stash_native(spec, LAST_RECORD, native)
            cache.save(key, out, record=LAST_RECORD if extras else None)
        trace.emit(_event(spec, ctx, start=start, end=time.time(), outcome="success",
                          cache_hit=False, error_type=None, error=None))
        if "alerts" in emulate:
            from unipipe.runtime import alerts

            alerts.deliver(spec.get("alerts") or [], "success", payload(spec, ctx))
        return out, False
    finally:
        reset_current(token)
