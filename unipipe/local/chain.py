"""The reference meaning of an event chain (issue 14): pipeline A's task updates an asset and
the engine starts pipeline B, whose ``trigger=up.On(...)`` names it.

- an asset is updated by each *successful* task whose ``produces`` names it (a failed task, and
  so a failed A whose producing task failed, updates nothing);
- ``mode="any"``: B runs once per update of any of its assets;
- ``mode="all"``: B runs once every one of its assets was updated since B's last run (updates of
  one asset in between count once).

:func:`run_chain` runs A's runs one after the other on the reference runner and, after each,
the B runs it caused, before the next A run starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unipipe.ir.models import Pipeline
from unipipe.result import RunResult


def updates(producer: Pipeline, result: RunResult) -> list[str]:
    """The assets ``result`` updated, one entry per update, in the order of A's tasks."""
    out: list[str] = []
    for task in producer.tasks:
        tr = result.tasks.get(task.id)
        if task.produces and tr is not None and tr.state == "success":
            out += list(task.produces)
    return out


@dataclass
class TriggerState:
    """What B's trigger has seen since B's last run (``all`` mode's pending updates)."""

    assets: tuple[str, ...]
    mode: str
    seen: set[str] = field(default_factory=set)

    def runs_for(self, updated: list[str]) -> int:
        """How many B runs ``updated`` (one A run's updates, in order) starts."""
        runs = 0
        for uri in updated:
            if uri not in self.assets:
                continue
            if self.mode == "any":
                runs += 1
                continue
            self.seen.add(uri)
            if self.seen >= set(self.assets):
                runs += 1
                self.seen.clear()
        return runs


def run_chain(producer: Pipeline, consumer: Pipeline, runs: list[dict[str, Any]],
              run_one: Any) -> tuple[list[RunResult], list[list[RunResult]]]:
    """A's runs (``run_one(ir, params) -> RunResult``) and, for each, the B runs it started."""
    if consumer.trigger is None:
        raise ValueError(f"pipeline {consumer.name!r} has no trigger=up.On(...): nothing "
                         f"starts it when an asset is updated")
    state = TriggerState(tuple(consumer.trigger.assets), consumer.trigger.mode)
    produced: list[RunResult] = []
    started: list[list[RunResult]] = []
    for params in runs:
        result = run_one(producer, params)
        produced.append(result)
        started.append([run_one(consumer, {}) for _ in range(state.runs_for(
            updates(producer, result)))])
    return produced, started
