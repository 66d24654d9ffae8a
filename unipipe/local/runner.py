"""The reference runner: the IR's exact semantics, in-process. Every backend is compared to it.

Rules (each is implemented, and commented, where it happens below):

1. Order. Tasks run one at a time in ``Pipeline.topo_order()`` (authoring order among ready
   tasks). Mapped elements run in list order. Results are therefore deterministic. A mapped
   task is reported per element (``task[i]``) and as one result
   (:func:`unipipe.result.aggregate_map`, which every backend uses too).
2. Attempts. A task has ``max_retries + 1`` attempts. Every attempt runs in a forked child process
   (``isolation="process"``), so a timeout really stops a hanging task (the child is killed) and a
   task that kills its own process fails only that attempt.
3. Waits. Before retry k the runner sleeps :func:`unipipe.runtime.retry.retry_delay` (delay *
   backoff**(k-1), capped by max_delay, lengthened by up to ``jitter`` times itself).
4. Retryable. ``fail_on`` errors and, when ``retry_on`` is set, errors it does not list, end the
   task at once. Timeouts (TaskTimeout) and killed processes (ProcessKilled) are ordinary errors.
5. Cache. Looked up before each attempt; a hit is a successful attempt with ``cache_hit`` and the
   function is not called. Key and expiry: :mod:`unipipe.runtime.cache`.
6. Skips. A task whose condition is false is ``skipped``; a task that consumes (data, condition
   or ``after``) a skipped task is skipped too; a task downstream of a failure is
   ``upstream_failed`` and never attempted. Independent branches still run after a failure.
   ``up.otherwise()`` after ``up.when(g)`` is the same test negated: its tasks run exactly when
   the gate is False (and not at all when the gate task failed). A task downstream of both
   branches consumes a skipped task either way, so it is skipped (no join; continue inside
   each branch). ``run_if`` changes what the upstream states decide
   (:func:`unipipe.result.upstream_verdict`): ``all_done`` runs after its upstream tasks
   whatever they ended as (success, failed, skipped, upstream_failed), ``one_failed`` runs
   only if one of them failed or was upstream_failed and is skipped otherwise. Such a task
   takes no task outputs as inputs and sits in no ``up.when`` block (validation refuses both),
   so nothing it needs can be missing.
7. Alerts. Task alerts: ``retry`` after each failed attempt that will be retried, ``failure``
   once after the last failed attempt, ``success`` once when the task succeeds (a cache hit
   counts). Pipeline alerts: ``failure`` or ``success`` once at the end of the run.
8. Outcome. The run fails if any task failed or was upstream_failed, whatever ran after it:
   a cleanup (``run_if``) task that succeeds after a failure does not make the run succeed,
   and a failed cleanup fails it too. Its output is the pipeline's
   return expression with skipped outputs as None.
9. Commands. A command task (``up.command``) is a task whose attempt runs its argv, not a
   function: :mod:`unipipe.runtime.command` fills the ``{input}`` placeholders (one argv item
   each, no shell), takes the last line of stdout (JSON, else text) as the output, and fails the
   attempt on an exit code other than 0. Everything else (attempts, waits, the filter, cache,
   alerts, the timeout, which kills the command's whole process group) is rules 1-8 unchanged.
10. Whole-run retries and timeout (``@up.pipeline(retries=N, retry_delay=, timeout=)``). A try
   of the run is rules 1-9. A failed try is run again, after ``retry_delay``, while retries
   remain, with the same run id: every task starts again from its first attempt, cached tasks
   hit the entries the earlier try wrote, checkpoints in ``scratch_url()`` are still there. The
   result is the last try's, with ``run_attempts``; task alerts go out in every try, the
   pipeline alert once, after the last. ``timeout`` bounds each try: at the deadline the running
   attempt is stopped (its process killed) and its task fails without a further attempt; the
   tasks not started are ``upstream_failed`` below a failure and ``failed`` otherwise (0
   attempts); the try has failed, so it is retried while retries remain.
11. Sub-pipelines. A ``@up.pipeline`` called inside another is a group (``Pipeline.groups``):
   one unit to the tasks around it (:func:`unipipe.ir.groups.children` orders each level with
   every inner group as one node), its tasks under rules 1-9 among themselves. The group ran
   if one of its tasks was attempted; it failed if one of them failed or was
   upstream_failed. A failed group is tried again as a whole, after ``retry_delay``, while
   its ``retries`` remain: its tasks (inner groups' too) start again from their first attempt,
   cached ones hit, and the result holds the last try's. Its alerts (``failure`` or
   ``success``) go out once, when it ends, if it ran; the payload names the group
   (``group``). A task outside it reads its tasks' outputs as any other task's; the run's
   outcome is rule 8 over all tasks (a group retried into success leaves no failure behind).
12. Mapped sub-pipelines (``sub.map(x=items, max_parallel=N)``). The group's tasks run once
   per item, item after item (here; engines run copies side by side, at most N at once): in
   copy i a task reads the item (``ElementInput``), tasks outside the group, and the copy-i
   outputs of the group's other tasks, and is reported as ``task[i]``; a failure in copy i
   leaves the other copies alone (its downstream tasks in copy i are upstream_failed). Each
   task's result is :func:`unipipe.result.aggregate_elements` of its copies: failed if one
   failed, else upstream_failed if one was, else success with the outputs in item order,
   which is what a task outside the group reads. If the task the items come from failed (or
   was skipped) every task of the group is upstream_failed (skipped). A mapped group holds
   tasks only, with no group retries or alerts (validation).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import signal
import time
import traceback
import uuid
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from unipipe.compiler.spec import group_alerts_spec, pipeline_alerts_spec, task_spec
from unipipe.ir.groups import children, members
from unipipe.ir.models import ElementInput, Group, OutputInput, ParamInput, Pipeline, Task
from unipipe.outputs import evaluate
from unipipe.params import resolve_params
from unipipe.result import (
    RunResult,
    TaskResult,
    add_record,
    aggregate_elements,
    aggregate_map,
    upstream_verdict,
)
from unipipe.runtime import alerts as alert_delivery
from unipipe.runtime import retry as retry_rules
from unipipe.runtime import store, trace
from unipipe.runtime.context import TaskContext
from unipipe.runtime.forking import frozen
from unipipe.runtime.invoke import (
    PipelineTimeout,
    TaskTimeout,
    max_attempts,
    payload,
    run_attempt,
)


class ProcessKilled(RuntimeError):
    """The attempt's process died without reporting (killed by a signal, or exited)."""


@dataclass
class _Outcome:
    ok: bool
    value: Any = None
    error_type: str | None = None
    error: str | None = None
    retryable: bool = True
    cache_hit: bool = False


def _child(conn: Any, spec: dict[str, Any], inputs: dict[str, Any], run_id: str, attempt: int,
           map_index: int | None, logical_date: str | None = None) -> None:
    """Body of the forked attempt process: run ``invoke`` and send back one message."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.environ["UNIPIPE_RUN_ID"] = run_id
    try:
        value, hit = _invoke_in_process(spec, inputs, run_id, attempt, map_index,
                                        logical_date=logical_date)
        conn.send(("ok", value, hit))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        retryable = getattr(exc, "__unipipe_retryable__", True) is not False
        detail = f"{exc}"
        try:
            conn.send(("err", type(exc).__name__, detail, retryable, traceback.format_exc()))
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.close()
        os._exit(0)


def _invoke_in_process(spec: dict[str, Any], inputs: dict[str, Any], run_id: str, attempt: int,
                       map_index: int | None, *, inline: bool = False,
                       logical_date: str | None = None) -> tuple[Any, bool]:
    # Inline attempts cannot be killed, so the shim enforces the timeout (SIGALRM) there.
    emulate = {"cache", "timeout"} if inline else {"cache"}
    return run_attempt(spec, inputs, run_id=run_id, attempt=attempt, backend="local",
                       map_index=map_index, emulate=emulate, logical_date=logical_date)


def _add_records(ir: Pipeline, result: RunResult) -> None:
    """The artifacts, metrics and reports the successful tasks recorded in the store."""
    recording = [t for t in ir.tasks if (t.artifacts or t.logs)
                 and result.tasks.get(t.id) is not None and result.tasks[t.id].state == "success"]
    if not recording:
        return
    from unipipe.runtime import artifacts

    store.use(ir.store)
    for t in recording:
        add_record(result, t.id, artifacts.read_record(result.run_id, t.id, None))


class LocalRunner:
    def __init__(self, *, isolation: str = "process", sleep: Callable[[float], None] = time.sleep,
                 seed: int | None = None):
        if isolation not in ("process", "inline"):
            raise ValueError("isolation is 'process' or 'inline'")
        self.isolation = isolation
        self.sleep = sleep
        self.seed = seed
        self._deadline: float | None = None  # the running try's end (rule 10), None: no timeout
        self._logical_date: str | None = None  # the run's, ISO 8601 (up.current().logical_date)
        self._run_timeout: float | None = None

    # ------------------------------------------------------------ one attempt

    def _attempt(self, spec: dict[str, Any], inputs: dict[str, Any], run_id: str, attempt: int,
                 map_index: int | None) -> _Outcome:
        if self.isolation == "inline":
            try:
                value, hit = _invoke_in_process(spec, inputs, run_id, attempt, map_index,
                                                inline=True, logical_date=self._logical_date)
                return _Outcome(True, value, cache_hit=hit)
            except BaseException as exc:  # noqa: BLE001
                return _Outcome(False, error_type=type(exc).__name__, error=str(exc),
                                retryable=getattr(exc, "__unipipe_retryable__", True) is not False)
        ctx = multiprocessing.get_context("fork")
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(send, spec, inputs, run_id, attempt, map_index,
                                                self._logical_date),
                           daemon=True)
        start = time.time()
        with frozen():  # the child must not copy this process's heap (unipipe.runtime.forking)
            proc.start()
        send.close()
        timeout = spec.get("timeout")
        message = None
        # Rule 2: the runner, not the task, enforces the timeout: wait, then kill the child.
        # Rule 10: never past the run's deadline.
        wait = timeout if timeout else None
        run_left = None if self._deadline is None else max(self._deadline - time.time(), 0.0)
        if run_left is not None and (wait is None or run_left < wait):
            wait = run_left
        ready = recv.poll(wait)
        if ready:
            try:
                message = recv.recv()
            except (EOFError, OSError):  # the child died before it could report
                message = None
        timed_out = not ready
        if timed_out:
            proc.kill()
        proc.join()
        recv.close()
        if message is not None and message[0] == "ok":
            return _Outcome(True, message[1], cache_hit=message[2])
        if message is not None:
            _, etype, detail, retryable, _tb = message
            return _Outcome(False, error_type=etype, error=detail, retryable=retryable)
        exc: BaseException
        if timed_out and self._deadline is not None and time.time() >= self._deadline:
            exc = PipelineTimeout(f"the run exceeded its timeout of {self._run_timeout:g}s")
        elif timed_out:
            exc = TaskTimeout(f"task exceeded its timeout of {timeout:g}s")
        else:
            exc = ProcessKilled(f"task process ended without a result (exit code {proc.exitcode})")
        retryable = retry_rules.is_retryable(exc, spec.get("retry"))
        trace.emit({"kind": "attempt", "run_id": run_id, "pipeline": spec["pipeline"],
                    "task": spec["id"], "map_index": map_index, "attempt": attempt,
                    "backend": "local", "start": start, "end": time.time(), "outcome": "failed",
                    "cache_hit": False, "error_type": type(exc).__name__, "error": str(exc),
                    "retryable": retryable})
        return _Outcome(False, error_type=type(exc).__name__, error=str(exc), retryable=retryable)

    # ------------------------------------------------------------ one task (or one map element)

    def _run_task(self, ir: Pipeline, task: Task, spec: dict[str, Any], inputs: dict[str, Any],
                  run_id: str, map_index: int | None, delivered: list[dict[str, Any]]) -> TaskResult:
        retry = spec.get("retry") or {}
        total = max_attempts(spec)
        times: list[tuple[float, float]] = []
        label = task.id if map_index is None else f"{task.id}[{map_index}]"
        rng = random.Random(self._seed_for(run_id, label))
        alerts = spec.get("alerts") or []
        for attempt in range(1, total + 1):
            if attempt > 1:
                # Rule 3: one formula for every wait.
                self.sleep(retry_rules.retry_delay(retry, attempt - 1, rng))
            start = time.time()
            out = self._attempt(spec, inputs, run_id, attempt, map_index)
            times.append((start, time.time()))
            ctx = TaskContext(run_id=run_id, pipeline=ir.name, task_id=task.id, attempt=attempt,
                              max_attempts=total, map_index=map_index, backend="local")
            if out.ok:
                delivered += alert_delivery.deliver(alerts, "success", payload(spec, ctx))
                return TaskResult("success", attempt, out.cache_hit, out.value,
                                  attempt_times=times)
            # Rule 4 (the child already applied the filter) and rule 7 (alerts).
            final = not out.retryable or attempt == total
            err = _Err(out.error_type or "Error", out.error or "")
            delivered += alert_delivery.deliver(alerts, "failure" if final else "retry",
                                                payload(spec, ctx, err))
            if final:
                return TaskResult("failed", attempt, False, None,
                                  error=f"{out.error_type}: {out.error}", error_type=out.error_type,
                                  attempt_times=times)
        raise AssertionError("unreachable")  # pragma: no cover

    def _seed_for(self, run_id: str, label: str) -> int:
        material = f"{self.seed if self.seed is not None else run_id}#{label}"
        return int(hashlib.sha256(material.encode()).hexdigest()[:16], 16)

    # ------------------------------------------------------------ the run

    def run(self, ir: Pipeline, params: dict[str, Any] | None = None, *,
            run_id: str | None = None, logical_date: str | None = None) -> RunResult:
        """Run ``ir`` once. ``logical_date`` (ISO 8601): the time the run stands for (a
        schedule's fire time, a backfilled date); a manual run's is when it starts (UTC), as
        ``airflow dags test`` and a Prefect run created now have."""
        values = resolve_params(ir, params)
        run_id = run_id or f"local-{uuid.uuid4().hex[:12]}"
        self._logical_date = logical_date or datetime.now(UTC).isoformat()
        delivered: list[dict[str, Any]] = []
        # Rule 10: the whole run again while it failed and retries remain, same run id.
        for run_try in range(1, ir.retries + 2):
            if run_try > 1 and ir.retry_delay:
                self.sleep(ir.retry_delay)
            run_started = time.time()
            results, outputs, failed = self._try(ir, values, run_id, delivered)
            if not failed:
                break
        state = "failed" if failed else "success"
        output = evaluate(ir.output, outputs, values) if state == "success" else None
        # Rule 7: pipeline alerts once per run.
        first_error = next((results[t].error for t in failed if results[t].error), None)
        delivered += alert_delivery.deliver_pipeline(
            pipeline_alerts_spec(ir), "failure" if failed else "success", pipeline=ir.name,
            run_id=run_id, backend="local", error=first_error, failed_tasks=failed)
        for r in results.values():
            if r.output is not None:
                r.output = store.from_transport(r.output)
        result = RunResult(pipeline=ir.name, backend="local", run_id=run_id, state=state,
                           output=output, tasks=results, alerts=delivered, params=values,
                           error=first_error, run_attempts=run_try,
                           run_started=run_started if run_try > 1 else None)
        _add_records(ir, result)
        return result

    def _try(self, ir: Pipeline, values: dict[str, Any], run_id: str,
             delivered: list[dict[str, Any]]
             ) -> tuple[dict[str, TaskResult], dict[str, Any], list[str]]:
        """One try of the run (rules 1-9 and 11, bounded by rule 10's timeout): results
        (elements included), outputs of the tasks that succeeded, and the failed tasks."""
        state = _TryState(values, run_id, delivered)
        self._run_timeout = ir.timeout
        self._deadline = None if ir.timeout is None else time.time() + ir.timeout
        try:
            self._run_children(ir, None, state)
        finally:
            self._deadline = self._run_timeout = None
        results = state.results
        failed = [t for t, r in results.items() if r.state in ("failed", "upstream_failed")]
        results.update(state.elements)
        return results, state.outputs, failed

    def _run_children(self, ir: Pipeline, group_id: str | None, st: _TryState) -> None:
        """Rule 11: a sub-pipeline is one unit among the tasks around it."""
        for node in children(ir, group_id):
            if node.kind == "group" and ir.group(node.id).map_over is not None:
                self._run_mapped_group(ir, ir.group(node.id), st)
            elif node.kind == "group":
                self._run_group(ir, ir.group(node.id), st)
            else:
                self._run_one(ir, ir.task(node.id), st)

    def _run_one(self, ir: Pipeline, task: Task, st: _TryState) -> None:
        tid = task.id
        st.results[tid] = self._past_deadline(ir, task, st.results) or self._step(
            ir, task, st.values, st.results, st.outputs, st.run_id, st.delivered, st.elements)
        if st.results[tid].state == "success":
            st.outputs[tid] = st.results[tid].output

    def _past_deadline(self, ir: Pipeline, task: Task,
                       results: Mapping[str, TaskResult]) -> TaskResult | None:
        """Rule 10: nothing starts after the deadline (None: it may start)."""
        if self._deadline is None or time.time() < self._deadline:
            return None
        verdict = upstream_verdict(task.run_if, [results[d] for d in task.upstream()])
        return TaskResult(verdict) if verdict is not None else TaskResult(
            "failed", 0, error="PipelineTimeout: not started before the run's "
            f"timeout of {ir.timeout:g}s", error_type="PipelineTimeout")

    def _run_mapped_group(self, ir: Pipeline, group: Group, st: _TryState) -> None:
        """Rule 12: the group's tasks once per item, in item order; each element's tasks see
        one another's element outputs, and every task's result is its elements' aggregate."""
        inside = [n.id for n in children(ir, group.id)]  # tasks only (validation)
        items, verdict = self._group_items(group, st)
        if verdict is not None:
            for tid in inside:
                st.results[tid] = verdict
            return
        parts: dict[str, list[TaskResult]] = {tid: [] for tid in inside}
        for i, item in enumerate(items):
            results: ChainMap[str, TaskResult] = ChainMap({}, st.results)
            outputs: ChainMap[str, Any] = ChainMap({}, st.outputs)
            for tid in inside:
                task = ir.task(tid)
                r = self._past_deadline(ir, task, results) or self._step(
                    ir, task, st.values, results, outputs, st.run_id, st.delivered,
                    st.elements, element=(i, item))
                results[tid] = r
                if r.state == "success":
                    outputs[tid] = r.output
                st.elements[f"{tid}[{i}]"] = r
                parts[tid].append(r)
        for tid in inside:
            st.results[tid] = aggregate_elements(parts[tid])
            if st.results[tid].state == "success":
                st.outputs[tid] = st.results[tid].output

    @staticmethod
    def _group_items(group: Group, st: _TryState) -> tuple[list[Any], TaskResult | None]:
        """The items of a mapped group, or the result all its tasks get instead: the verdict of
        the task the items come from (rule 6), or a failure if they are not a list."""
        src = group.items
        if isinstance(src, OutputInput):
            verdict = upstream_verdict("all_success", [st.results[src.task]])
            if verdict is not None:
                return [], TaskResult(verdict)
            items = store.select(store.from_transport(st.outputs[src.task]), src.path)
        elif isinstance(src, ParamInput):
            items = store.select(st.values.get(src.name), src.path)
        else:
            items = src.value if src is not None else None
        if not isinstance(items, list):
            return [], TaskResult("failed", 0, error=f"TypeError: map() over "
                                  f"{type(items).__name__}", error_type="TypeError")
        return items, None

    def _run_group(self, ir: Pipeline, group: Group, st: _TryState) -> None:
        """Rule 11: the group's tasks, tried again as a whole while it failed and its retries
        remain; its alerts once, at its end, if it ran at all."""
        inside = members(ir, group.id)
        for group_try in range(1, group.retries + 2):
            if group_try > 1:
                if group.retry_delay:
                    self.sleep(group.retry_delay)
                for tid in inside:
                    st.results.pop(tid, None)
                    st.outputs.pop(tid, None)
                for label in [k for k in st.elements if k.split("[", 1)[0] in inside]:
                    del st.elements[label]
            self._run_children(ir, group.id, st)
            ran = any(st.results[t].attempts or st.results[t].state == "success" for t in inside)
            failed = [t for t in inside if st.results[t].state in ("failed", "upstream_failed")]
            timed_out = self._deadline is not None and time.time() >= self._deadline
            if not ran or not failed or timed_out:
                break
        if ran:
            first_error = next((st.results[t].error for t in failed if st.results[t].error),
                               None)
            st.delivered += alert_delivery.deliver_pipeline(
                group_alerts_spec(group), "failure" if failed else "success",
                pipeline=ir.name, run_id=st.run_id, backend="local", error=first_error,
                failed_tasks=failed, group=group.id)

    def _step(self, ir: Pipeline, task: Task, params: dict[str, Any],
              results: Mapping[str, TaskResult], outputs: Mapping[str, Any], run_id: str,
              delivered: list[dict[str, Any]], elements: dict[str, TaskResult],
              element: tuple[int, Any] | None = None) -> TaskResult:
        # Rule 6: failures and skips propagate before conditions are looked at.
        verdict = upstream_verdict(task.run_if, [results[d] for d in task.upstream()])
        if verdict is not None:
            return TaskResult(verdict)
        for cond in task.when:
            value = store.select(store.from_transport(outputs[cond.task]), cond.path)
            if not isinstance(value, bool):
                return TaskResult("failed", 0, error=f"TypeError: condition on {cond.task!r} "
                                  f"is {type(value).__name__}, not bool", error_type="TypeError")
            if value is not cond.expect:
                return TaskResult("skipped")
        spec = task_spec(ir, task)
        inputs: dict[str, Any] = {}
        for name, inp in task.inputs.items():
            if isinstance(inp, OutputInput):
                inputs[name] = outputs[inp.task]
            elif isinstance(inp, ParamInput):
                inputs[name] = params[inp.name]
            elif isinstance(inp, ElementInput) and element is not None:
                inputs[name] = element[1]  # rule 12: the item this copy of the group runs for
        if element is not None:
            return self._run_task(ir, task, spec, inputs, run_id, element[0], delivered)
        if task.map_over is None:
            return self._run_task(ir, task, spec, inputs, run_id, None, delivered)
        # Rule 1: fan-out elements in list order; the task's output is the list of outputs.
        # Each element is also reported as "<task>[i]"; every element runs (as Airflow's expand,
        # Prefect's map and KFP's ParallelFor do), and the task fails if any element failed.
        raw = inputs.get(task.map_over, spec.get("literals", {}).get(task.map_over))
        items = store.select(store.from_transport(raw), spec.get("paths", {}).get(task.map_over))
        if not isinstance(items, list):
            return TaskResult("failed", 0, error=f"TypeError: map() over {type(items).__name__}",
                              error_type="TypeError")
        elem_spec = dict(spec)
        elem_spec["paths"] = {k: v for k, v in spec.get("paths", {}).items() if k != task.map_over}
        parts = []
        for i, item in enumerate(items):
            r = self._run_task(ir, task, elem_spec, {**inputs, task.map_over: item}, run_id, i,
                               delivered)
            parts.append(r)
            elements[f"{task.id}[{i}]"] = r
        return aggregate_map(parts)


@dataclass
class _TryState:
    """What one try of the run has so far (rule 10): the tasks' results and outputs."""

    values: dict[str, Any]
    run_id: str
    delivered: list[dict[str, Any]]
    results: dict[str, TaskResult] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    elements: dict[str, TaskResult] = field(default_factory=dict)


class _Err(Exception):
    """Stands in for an error raised in a child process, for alert payloads."""

    def __init__(self, type_name: str, message: str):
        super().__init__(message)
        self.type_name = type_name


__all__ = ["LocalRunner", "PipelineTimeout", "ProcessKilled"]
