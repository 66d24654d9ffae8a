"""``task.map(..., max_parallel=N)`` on a real Prefect run: the flow submits an element only
when a slot is free (runtime.map_limited), and without the limit Prefect runs them side by
side, so the case ``map_max_parallel`` measures something."""

from __future__ import annotations

import time

import pytest

import unipipe as up

pytestmark = [pytest.mark.prefect]


@up.task
def numbers(n: int) -> list:
    return list(range(n))


@up.task
def nap(x: int) -> int:
    time.sleep(0.6)
    return x


@up.pipeline(name="limited")
def limited(n: int = 6):
    return nap.map(x=numbers(n), max_parallel=2)


@up.pipeline(name="unlimited")
def unlimited(n: int = 6):
    return nap.map(x=numbers(n))


def peak(result, task: str) -> int:
    """Most attempts of ``task``'s elements overlapping in time (the RunResult's attempt_times)."""
    edges = sorted((t, step) for label, r in result.tasks.items() if label.startswith(f"{task}[")
                   for s, e in r.attempt_times for t, step in ((s, 1), (e, -1)))
    top = running = 0
    for _, step in edges:
        running += step
        top = max(top, running)
    return top


def test_max_parallel_holds_prefect_to_two_elements_and_without_it_they_overlap(tmp_path):
    capped = up.run(limited, backend="prefect")
    assert (capped.state, capped.output) == ("success", [0, 1, 2, 3, 4, 5])
    assert [capped.tasks[f"nap[{i}]"].attempts for i in range(6)] == [1] * 6
    assert peak(capped, "nap") == 2  # two at a time: never more, and the slots were used
    free = up.run(unlimited, backend="prefect")
    assert free.output == [0, 1, 2, 3, 4, 5]
    assert peak(free, "nap") > 2  # the limit is what held the first run to two
    # six elements of 0.6 s two at a time take three rounds
    starts = sorted(s for i in range(6) for s, _ in capped.tasks[f"nap[{i}]"].attempt_times)
    assert starts[-1] - starts[0] >= 2 * 0.6 - 0.05
