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
