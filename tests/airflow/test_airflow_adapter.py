"""The adapter's pieces that need no running Airflow: retry decisions, pod verdicts, gates."""

from __future__ import annotations

import json
import os

import pytest
from unipipe_airflow.runtime import condition, retry_decision, run_task

from unipipe.runtime.retry import base_delay

RETRY = {"max_retries": 3, "delay": 1.0, "backoff": 2.0, "max_delay": 3.0,
         "retry_on": ["builtins:ConnectionError"]}


class _TI:
    dag_id = "pods"
    task_id = "bad_value"
    map_index = -1


def test_retry_policy_returns_the_exact_ir_wait_for_each_retry():
    for k in (1, 2, 3):
        decision = retry_decision(RETRY, ConnectionError("down"), k)
        assert decision.action.value == "retry"
        assert decision.retry_delay.total_seconds() == base_delay(RETRY, k) == [1, 2, 3][k - 1]


def test_retry_policy_fails_what_the_filter_does_not_retry():
    assert retry_decision(RETRY, ValueError("bad"), 1).action.value == "fail"
    # Airflow's own timeout is judged as the IR's TaskTimeout, a TimeoutError
    timeout_retry = dict(RETRY, retry_on=["builtins:TimeoutError"])
    from airflow.sdk.exceptions import AirflowTaskTimeout

    assert retry_decision(timeout_retry, AirflowTaskTimeout(), 1).action.value == "retry"


def test_filter_only_policy_leaves_the_wait_to_airflow():
    decision = retry_decision(RETRY, ConnectionError("down"), 1, delays=False)
    assert decision.action.value == "default"


def test_a_pod_tasks_verdict_reaches_the_workers_retry_policy(isolated_stores):
    spec = {"fn": "pipelines.features:bad_value",
            "retry": {"max_retries": 3, "fail_on": ["builtins:ValueError"]}, "retry_policy": True}
    context = json.dumps({"run_id": "r1", "dag_id": "pods", "task_id": "bad_value",
                          "try_number": 1, "map_index": -1, "params": {}})
    with pytest.raises(ValueError):
        run_task(spec, context=context)  # what the pod runs
    worker = {"ti": _TI(), "run_id": "r1"}
    pod_failed = RuntimeError("Pod bad-value-x returned a failure")  # all the worker sees
    assert retry_decision(spec["retry"], pod_failed, 1, pod=True,
                          context=worker).action.value == "fail"
    # no verdict for try 2 (say the pod was evicted): the policy retries
    assert retry_decision(spec["retry"], pod_failed, 2, pod=True,
                          context=worker).action.value == "retry"


def test_with_a_shared_store_the_pod_verdict_is_read_from_the_store(isolated_stores, tmp_path,
                                                                   monkeypatch):
    """The pod writes its verdict under <store>/scratch; the worker's policy (another process,
    outside any task body) finds it there because the compiled policy names the store."""
    from unipipe.runtime import store

    for name in ("UNIPIPE_CACHE_URL", "UNIPIPE_ARTIFACT_URL"):
        monkeypatch.delenv(name, raising=False)
    shared = (tmp_path / "shared").as_uri()
    retry = {"max_retries": 3, "fail_on": ["builtins:ValueError"]}
    spec = {"fn": "pipelines.features:bad_value", "retry": retry, "retry_policy": True,
            "store": shared}
    context = json.dumps({"run_id": "r2", "dag_id": "pods", "task_id": "bad_value",
                          "try_number": 1, "map_index": -1, "params": {}})
    try:
        with pytest.raises(ValueError):
            run_task(spec, context=context)
        assert list((tmp_path / "shared" / "scratch").rglob("unipipe-not-retried-1.json"))
        store.use(None)  # the worker's process: nothing ran a task body there
        worker = {"ti": _TI(), "run_id": "r2"}
        pod_failed = RuntimeError("Pod bad-value-x returned a failure")
        assert retry_decision({**retry, "store": shared}, pod_failed, 1, pod=True,
                              context=worker).action.value == "fail"
        store.use(None)
        assert retry_decision(retry, pod_failed, 1, pod=True,  # another store: no verdict
                              context=worker).action.value == "retry"
    finally:
        store.use(None)


def test_gate_compares_a_bool_and_refuses_anything_else():
    assert condition(True) is True
    assert condition({"ok": False}, path=["ok"], expect=False) is True
    assert condition({"ok": True}, path=["ok"], expect=False) is False
    with pytest.raises(TypeError, match="needs a bool"):
        condition("yes")


def test_a_try_runs_in_a_process_of_its_own_that_may_die_alone():
    """Under ``airflow dags test`` a try runs in a process forked from the run's zygote (one
    thread), not from the test process (which runs threads): its value, its error as itself,
    its death by a signal, and the run's deadline come back as the shim's own outcomes."""
    import threading
    import time

    from unipipe_airflow.runtime import ProcessKilled, _in_child, _Try

    from unipipe.runtime.invoke import PipelineTimeout

    now = _Try(json.dumps({"run_id": "r", "try_number": 1}))

    def spec(fn: str) -> dict:
        return {"pipeline": "p", "id": "t", "fn": f"airflow_attempt_fns:{fn}"}

    stop = threading.Event()
    busy = threading.Thread(target=stop.wait, args=(30,))
    busy.start()
    try:
        value, record = _in_child(spec("value"), {}, now)
    finally:
        stop.set()
        busy.join()
    assert (value["v"], record) == (1, None)
    assert value["pid"] != os.getpid() and value["threads"] == 1
    with pytest.raises(ProcessKilled, match="signal 9"):
        _in_child(spec("kill_self"), {}, now)
    with pytest.raises(KeyError, match="no"):  # errors keep their type
        _in_child(spec("missing"), {}, now)
    started = time.monotonic()
    with pytest.raises(PipelineTimeout, match="timeout of 1s"):
        _in_child({**spec("hang"), "run_timeout": 1}, {}, now, deadline=time.time() + 1)
    assert time.monotonic() - started < 10
