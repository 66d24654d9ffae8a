"""Which task runs make the RunResult when groups' subflow runs were tried more than once
(results._current_task_runs over the records the driver reads from the server)."""

from __future__ import annotations

from unipipe_prefect.results import _current_task_runs


def _run(name: str, flow_run: str, try_: int) -> dict:
    return {"name": name, "flow_run_id": flow_run, "flow_run_run_count": try_}


def test_the_last_try_of_each_subflow_run_counts_and_a_stale_one_not():
    report = {
        "flow_run_id": "top", "run_count": 2, "run_started": 100.0,
        "flow_runs": [
            {"id": "top", "name": "pipe", "parent": None, "run_count": 2, "run_started": 100.0},
            # group g retried in place in the pipeline's second try (its body ran twice there)
            {"id": "g", "name": "g", "parent": "top", "run_count": 3, "run_started": 120.0},
            # group h failed in the first try (a new subflow run in the second) ...
            {"id": "h1", "name": "h", "parent": "top", "run_count": 1, "run_started": 50.0},
            {"id": "h2", "name": "h", "parent": "top", "run_count": 1, "run_started": 130.0},
            # ... and its inner group: only the one below the subflow run that counts
            {"id": "i1", "name": "h__i", "parent": "h1", "run_count": 1, "run_started": 55.0},
            {"id": "i2", "name": "h__i", "parent": "h2", "run_count": 1, "run_started": 131.0},
        ],
        "task_runs": [
            _run("a", "top", 1), _run("a", "top", 2),
            _run("g__x", "g", 2), _run("g__x", "g", 3),
            _run("h__y", "h1", 1), _run("h__y", "h2", 1),
            _run("h__i__z", "i1", 1), _run("h__i__z", "i2", 1),
        ],
    }
    kept, started = _current_task_runs(report)
    assert [(r["name"], r["flow_run_id"], r["flow_run_run_count"]) for r in kept] == [
        ("a", "top", 2), ("g__x", "g", 3), ("h__y", "h2", 1), ("h__i__z", "i2", 1)]
    # the trace's attempts of each task are read from the start of the try that holds it
    # (by task run: task and copy or element index, as the trace keys its attempts)
    assert started == {("a", None): 100.0, ("g__x", None): 120.0, ("h__y", None): 130.0,
                       ("h__i__z", None): 131.0}


def test_a_run_tried_once_keeps_every_task_run_and_filters_no_attempts():
    report = {"flow_run_id": "top", "run_count": 1, "run_started": 10.0,
              "flow_runs": [{"id": "top", "name": "p", "parent": None, "run_count": 1,
                             "run_started": 10.0},
                            {"id": "g", "name": "g", "parent": "top", "run_count": 1,
                             "run_started": 11.0}],
              "task_runs": [_run("a", "top", 1), _run("g__b[0]", "g", 1)]}
    kept, started = _current_task_runs(report)
    assert len(kept) == 2 and started == {}


def test_copies_of_a_mapped_group_each_keep_their_subflow_runs_start():
    """Each copy is its own subflow run (<group>[i]): when the run was tried again, copy i's
    attempts are read from its own subflow run's start, not from the last copy's."""
    report = {"flow_run_id": "top", "run_count": 2, "run_started": 100.0,
              "flow_runs": [{"id": "top", "name": "p", "parent": None, "run_count": 2,
                             "run_started": 100.0},
                            {"id": "c0", "name": "g[0]", "parent": "top", "run_count": 1,
                             "run_started": 101.0},
                            {"id": "c1", "name": "g[1]", "parent": "top", "run_count": 1,
                             "run_started": 105.0}],
              "task_runs": [_run("g__a[0]", "c0", 1), _run("g__a[1]", "c1", 1)]}
    kept, started = _current_task_runs(report)
    assert len(kept) == 2
    assert started == {("g__a", 0): 101.0, ("g__a", 1): 105.0}
