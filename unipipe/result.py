"""RunResult: what ``up.run`` returns on every backend, and what ``run --json`` prints."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TaskState = Literal["success", "failed", "skipped", "upstream_failed"]


@dataclass
class TaskResult:
    state: TaskState
    attempts: int = 0
    cache_hit: bool = False
    output: Any = None
    error: str | None = None
    error_type: str | None = None
    attempt_times: list[tuple[float, float]] = field(default_factory=list)


def aggregate_map(parts: list[TaskResult]) -> TaskResult:
    """A mapped task as one result, from its elements' (the reference rule every backend
    follows): attempts summed, failed if any element failed (with the first failure's error),
    a cache hit only if every element hit, the outputs in element order."""
    attempts = sum(p.attempts for p in parts)
    times = [t for p in parts for t in p.attempt_times]
    failed = next((p for p in parts if p.state != "success"), None)
    if failed is not None:
        return TaskResult("failed", attempts, False, None, failed.error, failed.error_type, times)
    return TaskResult("success", attempts, bool(parts) and all(p.cache_hit for p in parts),
                      [p.output for p in parts], attempt_times=times)


def aggregate_elements(parts: list[TaskResult]) -> TaskResult:
    """A task of a mapped sub-pipeline as one result, from its copies' (runner rule 12): like
    :func:`aggregate_map`, except that a copy which never ran because an earlier task of the
    same copy failed makes it upstream_failed rather than failed (when no copy failed)."""
    if all(p.state == "success" for p in parts):
        return aggregate_map(parts)
    attempts = sum(p.attempts for p in parts)
    times = [t for p in parts for t in p.attempt_times]
    failed = next((p for p in parts if p.state == "failed"), None)
    if failed is not None:
        return TaskResult("failed", attempts, False, None, failed.error, failed.error_type, times)
    state = "upstream_failed" if any(p.state == "upstream_failed" for p in parts) else "skipped"
    return TaskResult(state, attempts, False, None, attempt_times=times)  # type: ignore[arg-type]


#: the values of ``@up.task(run_if=...)`` (the IR's ``RunIf``), here so authoring checks them
#: without loading pydantic (a task process imports the user's module)
RUN_IF_VALUES: tuple[str, ...] = ("all_success", "all_done", "one_failed")


def upstream_verdict(run_if: str, upstream: list[TaskResult]) -> TaskState | None:
    """What a task's upstream tasks' final states decide for it, before its conditions are
    looked at: ``None`` (it may run), ``"skipped"`` or ``"upstream_failed"``. The reference
    rule (unipipe.local.runner, rule 6); every backend that replays a task it did not run uses
    it too.

    - ``all_success``: a failed or upstream_failed upstream makes it upstream_failed, else a
      skipped upstream makes it skipped.
    - ``all_done``: it runs once every upstream has finished, whatever the state (the runner
      reaches a task only after all its upstream tasks, so: always).
    - ``one_failed``: it runs if at least one upstream failed or was upstream_failed, else it
      is skipped.
    """
    bad = any(r.state in ("failed", "upstream_failed") for r in upstream)
    if run_if == "all_done":
        return None
    if run_if == "one_failed":
        return None if bad else "skipped"
    if bad:
        return "upstream_failed"
    if any(r.state == "skipped" for r in upstream):
        return "skipped"
    return None


@dataclass
class RunResult:
    pipeline: str
    backend: str
    run_id: str
    state: Literal["success", "failed"]
    output: Any = None
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: how many times the whole run was tried (``@up.pipeline(retries=N)``): 1 unless it was
    #: retried; ``tasks`` are the last try's
    run_attempts: int = 1
    #: when the last try began (epoch seconds), set when there was more than one: the shim's
    #: attempt events before it belong to earlier tries
    run_started: float | None = None
    #: metrics each task recorded (``up.log_metric``, ``up.Output[up.Metrics]``), by task id,
    #: as the engine keeps them (KFP executor output, Prefect table artifacts, Airflow XCom)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    #: output artifacts by task id and name: ``type``, ``uri``, ``sha256``, ``size``
    artifacts: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: Markdown reports (``up.report``) by task id
    reports: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "success"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        tasks = {}
        for k, v in data.get("tasks", {}).items():
            v = dict(v)
            v["attempt_times"] = [tuple(x) for x in v.get("attempt_times", [])]
            tasks[k] = TaskResult(**v)
        return cls(**{**data, "tasks": tasks})


def add_record(result: RunResult, task_id: str, record: dict[str, Any] | None) -> None:
    """Put one task's record (unipipe.runtime.artifacts) into the run's metrics, artifacts and
    reports, as an engine's reader found it."""
    if not record:
        return
    if record.get("metrics"):
        result.metrics[task_id] = dict(record["metrics"])
    arts = {name: {k: entry[k] for k in ("type", "uri", "sha256", "size") if k in entry}
            for name, entry in (record.get("artifacts") or {}).items()}
    if arts:
        result.artifacts[task_id] = arts
    if record.get("report") is not None:
        result.reports[task_id] = record["report"]
