"""Pipelines run on a real Airflow 2.11 (``backend="airflow@2.11"``) equal the reference runner's.

Airflow 2.11 lives in a virtual environment of its own, built by the backend on first use in
the repository's git-ignored ``.cache/airflow-2.11`` (the ``airflow2_python`` fixture; a fresh
clone builds it here). Each run is that environment's own ``airflow dags test`` on the 2.11
dialect, and the RunResult comes from its task instances and XCom, cross-checked with the shim's
trace. 2.x has no ``retry_policy``: waits are slept by the shim at the start of the next try and
errors the IR does not retry become ``AirflowFailException`` in the adapter.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pipelines_airflow as pa
import pytest
from pipelines import features

import unipipe as up
from unipipe.runtime.retry import base_delay

POLL = 2.5  # seconds of slack: `dags test` looks for runnable tries once a second

#: Airflow 2.11.0's schema head (``airflow/utils/db.py`` ``_REVISION_HEADS_MAP["2.11.0"]`` in the
#: 2.11 environment): the metadata DB of a run is Airflow 2.11's, not the workspace's Airflow 3.
HEAD_2_11 = "5f2621c13b39"


@pytest.fixture(scope="module", autouse=True)
def airflow2(airflow2_python):
    """The 2.11 environment exists before the first run (made once, kept in .cache/)."""
    return airflow2_python


def on_2_11(pipeline, params=None, **kw):
    result = up.run(pipeline, backend="airflow@2.11", params=params, **kw)
    assert result.backend == "airflow@2.11"
    return result


def _tasks(result) -> dict:
    return {tid: (t.state, t.attempts, t.cache_hit, t.error_type) for tid, t in result.tasks.items()}


def _alerts(result) -> list:
    return sorted((a["task"] or "", a["event"], a["channel"], a["ok"]) for a in result.alerts)


def assert_same(airflow, local, *, outputs: bool = True) -> None:
    """State, output, every task's state, attempts, cache hit, error type and output, and the
    alerts delivered, as the reference runner has them."""
    assert local.backend == "local"
    assert airflow.state == local.state
    assert _tasks(airflow) == _tasks(local)
    assert _alerts(airflow) == _alerts(local)
    if not outputs:
        return
    assert airflow.output == local.output
    assert {t: r.output for t, r in airflow.tasks.items()} == {
        t: r.output for t, r in local.tasks.items()}


def gaps(result, task: str) -> list[float]:
    times = result.tasks[task].attempt_times
    return [times[i + 1][0] - times[i][1] for i in range(len(times) - 1)]


def local(pipeline, params=None):
    return up.run(pipeline, backend="local", params=params)


def test_a_run_happens_on_airflow_2_11_with_the_2_11_dialect(tmp_path):
    result = on_2_11(features.retry_then_succeed, {"fail_times": 0}, workdir=tmp_path)
    assert result.state == "success" and result.output == "ok after 1"
    home = tmp_path / "airflow"
    dag = (home / "dags" / "retry_then_succeed_dag.py").read_text()
    assert "for airflow 2.11" in dag and "from airflow.decorators import dag, task" in dag
    with sqlite3.connect(home / "airflow.db") as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD_2_11,)
        # 2.x names a run by its execution_date (3.x: logical_date)
        assert con.execute("SELECT count(*) FROM dag_run WHERE execution_date IS NOT NULL"
                           ).fetchone() == (1,)
    # the tasks imported unipipe from this checkout, through the engine's PYTHONPATH
    assert (home / "pythonpath" / "unipipe").resolve() == Path(up.__file__).resolve().parent


def test_retries_wait_the_ir_delays_slept_by_the_shim():
    airflow = on_2_11(features.retry_then_succeed)
    assert_same(airflow, local(features.retry_then_succeed))
    assert airflow.output == "ok after 3" and airflow.tasks["flaky"].attempts == 3
    retry = up.load(features.retry_then_succeed).tasks[0].policies.retry
    for k, gap in enumerate(gaps(airflow, "flaky"), start=1):
        wait = base_delay(retry.model_dump(), k)  # 1 s, then 2 s
        assert wait - 0.1 <= gap <= wait + POLL, (k, gap, wait)


def test_a_non_retryable_error_fails_at_once():
    airflow = on_2_11(features.non_retryable)
    assert_same(airflow, local(features.non_retryable))
    task = airflow.tasks["bad_value"]
    assert (airflow.state, task.attempts, task.error_type) == ("failed", 1, "ValueError")


def test_a_timeout_ends_each_try_and_is_retried():
    airflow = on_2_11(features.timeout)
    assert_same(airflow, local(features.timeout))
    task = airflow.tasks["hangs"]
    assert (task.state, task.attempts, task.error_type) == ("failed", 2, "TaskTimeout")
    assert all(end - start < 10 for start, end in task.attempt_times)  # not the 30 s sleep


def test_a_second_run_is_served_from_the_cache(monkeypatch, tmp_path):
    first, second = on_2_11(features.cached), on_2_11(features.cached)
    monkeypatch.setenv("UNIPIPE_CACHE_URL", str(tmp_path / "reference-cache"))
    ref_first, ref_second = local(features.cached), local(features.cached)
    # the output holds the time it was computed: equal within a backend's two runs only
    assert_same(first, ref_first, outputs=False)
    assert_same(second, ref_second, outputs=False)
    assert (first.tasks["expensive"].cache_hit, second.tasks["expensive"].cache_hit) == (False, True)
    assert second.output == first.output and ref_second.output == ref_first.output
    assert first.output["x"] == ref_first.output["x"] == 3


def test_retry_and_failure_alerts_are_delivered_once_each(webhook, smtp):
    airflow = on_2_11(features.retries_exhausted)
    assert_same(airflow, local(features.retries_exhausted))
    events = sorted(r["unipipe"]["event"] for r in webhook.received
                    if r["unipipe"]["run_id"] == airflow.run_id)
    assert events == ["failure", "retry", "retry"]
    assert len([m for m in smtp.messages if airflow.run_id in m["text"]]) == 1  # the pipeline's


def test_sub_pipelines_are_task_groups_whose_alerts_go_out_once(webhook):
    """Nested and repeated TaskGroups, a map, a gate and a cleanup in a group, group alerts
    from the ORM task instances (2.x has no execution API)."""
    airflow = on_2_11(pa.subpipelines)
    assert_same(airflow, local(pa.subpipelines))
    failures = on_2_11(pa.subpipeline_failures)
    assert_same(failures, local(pa.subpipeline_failures))
    assert failures.state == "failed"
    on_airflow = sorted((r["unipipe"].get("group"), r["unipipe"]["event"]) for r in webhook.received
                        if r["unipipe"]["run_id"] in (airflow.run_id, failures.run_id))
    assert on_airflow == [("alerted_sink", "failure"), ("checked_total", "success")]


def test_mapped_sub_pipelines_are_mapped_task_groups_with_one_copy_per_item():
    """@task_group(...).partial().expand() on 2.11: copies as map indexes, the consumer's list
    (one copy too), and a failed items task leaving every member upstream_failed."""
    for pipeline in (pa.mapped_groups, pa.mapped_group_edges):
        airflow = on_2_11(pipeline)
        assert_same(airflow, local(pipeline))
    assert airflow.tasks["shift_shard__labelled"].output == ["7:107"]


def test_an_unknown_airflow_version_is_exit_2_naming_the_versions():
    proc = subprocess.run([sys.executable, "-m", "unipipe.cli", "run",
                           "pipelines.features:cached", "--backend", "airflow@2.9"],
                          capture_output=True, text=True, timeout=120,
                          cwd=str(Path(features.__file__).parents[1]))
    assert proc.returncode == 2
    assert "cannot run version '2.9'" in proc.stderr and "3.3, 2.11" in proc.stderr


def test_the_2_11_pythonpath_holds_the_unipipe_sources_and_never_this_site_packages(tmp_path):
    import sysconfig

    import unipipe_airflow
    from unipipe_airflow.engine import Engine, engine_pythonpath

    site = sysconfig.get_paths()["purelib"]  # holds Airflow 3: must not shadow 2.11
    own = Engine("2.11.0", "/nowhere/python", own_env=True)
    path = engine_pythonpath(own, tmp_path, ["/user/modules", site], "/inherited").split(":")
    assert path == [str(tmp_path / "pythonpath"), "/user/modules", "/inherited"]
    links = sorted(p.name for p in (tmp_path / "pythonpath").iterdir())
    assert links == ["unipipe", "unipipe_airflow"]
    assert (tmp_path / "pythonpath" / "unipipe_airflow").resolve() == \
        Path(unipipe_airflow.__file__).resolve().parent
    installed = Engine("3.3.2", sys.executable)
    assert engine_pythonpath(installed, tmp_path, ["/user/modules", site], None).split(":") == [
        "/user/modules", site]


def test_tasks_sharing_one_task_function_are_overridden_task_ids_on_2_11():
    """``add_one_2.override(task_id=...)`` (2.11 decorators/base.py ``_TaskDecorator.override``)."""
    airflow = on_2_11(features.one_callable, {"start": 10})
    assert_same(airflow, local(features.one_callable, {"start": 10}))
    assert airflow.output == 15 and len(airflow.tasks) == 5
