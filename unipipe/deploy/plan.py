"""A deploy plan: the ordered objects and calls a deploy makes, computed before anything changes.

Each step knows whether it would create, update or leave alone what it targets (found by reading
the remote state first), so the same plan serves ``--dry-run`` (print it), idempotence (unchanged
steps are never applied) and ordering (steps run in list order: dependencies first, the file an
engine loads last).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Change = Literal["create", "update", "unchanged", "unknown", "call"]

#: what a line of the printed plan starts with
MARKS: dict[str, str] = {"create": "+", "update": "~", "unchanged": "=", "unknown": "?", "call": ">"}


@dataclass
class Step:
    """One object written or one API call made.

    ``change`` is ``call`` for actions that are not idempotent by nature (submitting a run) and
    ``unknown`` when a dry run could not read the remote state.
    """

    verb: str  # upload | create | update | call
    target: str  # s3://bucket/dags/x.py, "work pool 'p'", "POST /apis/v2beta1/pipelines/upload"
    change: Change
    detail: str = ""
    apply: Callable[[], str | None] | None = None
    result: str | None = None

    @property
    def changes_something(self) -> bool:
        return self.change in ("create", "update", "call", "unknown")

    def line(self) -> str:
        if self.change == "unchanged":
            text = f"= {self.target} (unchanged)"
        else:
            verb = "update" if self.change == "update" and self.verb == "create" else self.verb
            text = f"{MARKS[self.change]} {verb} {self.target}"
        if self.change == "unknown":
            text += " (remote state not read)"
        if self.detail:
            text += f"  [{self.detail}]"
        if self.result:
            text += f"  -> {self.result}"
        return text


@dataclass
class Plan:
    target: str
    pipeline: str
    destination: str
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: facts to report after applying (e.g. the S3 object versions to put in the environment)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    @property
    def changed(self) -> bool:
        return any(s.changes_something for s in self.steps)

    def apply(self) -> None:
        """Run every changing step in order; a failure stops before later (dependent) steps."""
        for step in self.steps:
            if step.changes_something and step.apply is not None:
                step.result = step.apply()

    def lines(self) -> list[str]:
        return [s.line() for s in self.steps]
