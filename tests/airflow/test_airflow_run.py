"""Pipelines run on a real Airflow 3.3 equal the reference runner's runs.

Compared per run: the state, the output, every task's state, attempts and cache hit, and the
alerts delivered to real receivers on 127.0.0.1. Waits are checked against the IR formula from
the shim's trace (each try's start and end), with a tolerance for Airflow's one-second poll.

Most runs go through one batch (``engine.run_batch``: the same ``DAG.test()`` that
``airflow dags test`` calls, many runs in one Airflow process, start-up paid once); a few go
through ``up.run`` (the ``airflow dags test`` command) and one through a real scheduler.
"""

from __future__ import annotations

import os
import tempfile

import ml_training
import pipelines_airflow as pa
import pytest
from pipelines import features
from unipipe_airflow.engine import Planned, run_batch

import unipipe as up
from unipipe.api import search_path
from unipipe.harness.receivers import SmtpReceiver, WebhookReceiver
from unipipe.runtime.retry import base_delay

POLL = 2.5  # seconds of slack: `dags test` looks for runnable tries once a second


def _tasks(result) -> dict:
    return {tid: (t.state, t.attempts, t.cache_hit) for tid, t in result.tasks.items()}


def _alerts(result) -> list:
    return sorted((a["task"] or "", a["event"], a["channel"], a["ok"]) for a in result.alerts)


def assert_same(airflow, local, *, outputs: bool = True) -> None:
    assert airflow.backend == "airflow" and local.backend == "local"
    assert airflow.state == local.state
    assert _tasks(airflow) == _tasks(local)
    assert _alerts(airflow) == _alerts(local)
    if outputs:
        assert airflow.output == local.output
        assert {t: r.output for t, r in airflow.tasks.items()} == {
            t: r.output for t, r in local.tasks.items()}


def local(pipeline, params=None):
    return up.run(pipeline, backend="local", params=params)


def gaps(result, task: str) -> list[float]:
    times = result.tasks[task].attempt_times
    return [times[i + 1][0] - times[i][1] for i in range(len(times) - 1)]


# ---------------------------------------------------------------- the batch


def _receivers():
    return WebhookReceiver(), SmtpReceiver()


PLAN = {
    "fanout": (features.fanout, {}, None),
    "map-sources": (pa.map_sources, {"numbers": [5, 6]}, None),
    "hostile": (pa.hostile, {}, None),
    "ml-training": (ml_training.training, {}, None),
    "gate-passes": (features.quality_gate, {"value": 0.9}, None),
    "gate-fails": (features.quality_gate, {"value": 0.5}, None),
    "retry": (features.retry_then_succeed, {}, None),
    "capped-backoff-3.0": (pa.capped_backoff, {"fail_times": 3}, "3.0"),
    "jitter": (features.jitter, {}, None),
    "non-retryable-3.3": (features.non_retryable, {}, "3.3"),
    "non-retryable-3.0": (features.non_retryable, {}, "3.0"),
    "retries-exhausted": (features.retries_exhausted, {}, None),
    "success-alert": (features.success_alert, {}, None),
    "cached-first": (features.cached, {}, None),
    "cached-second": (features.cached, {}, None),
    "timeout": (features.timeout, {}, None),
    "empty-map": (pa.empty_map, {}, None),
    "killed-once": (pa.killed_once, {}, None),
    "subpipelines": (pa.subpipelines, {}, None),
    "subpipeline-failures": (pa.subpipeline_failures, {}, None),
    "mapped-groups": (pa.mapped_groups, {}, None),
    "mapped-group-edges": (pa.mapped_group_edges, {}, None),
    "mapped-group-empty": (pa.mapped_group_empty, {}, None),
    "one-callable": (features.one_callable, {"start": 10}, None),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Every planned run, once, in one Airflow process; alerts go to real receivers."""
    hook, mail = _receivers()
    work = tmp_path_factory.mktemp("airflow-batch")
    env = {"UNIPIPE_TEST_WEBHOOK": hook.url, "ALERT_WEBHOOK_URL": hook.url,
           "UNIPIPE_SMTP_HOST": "127.0.0.1", "UNIPIPE_SMTP_PORT": str(mail.port),
           "UNIPIPE_CACHE_URL": str(work / "cache"), "UNIPIPE_ARTIFACT_URL": str(work / "art"),
           "UNIPIPE_TRACE_DIR": str(work / "trace")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        planned = [Planned(up.load(p), params, dialect) for p, params, dialect in PLAN.values()]
        search = sorted({s for p, _, _ in PLAN.values() for s in search_path(up.load(p))})
        results = dict(zip(PLAN, run_batch(planned, workdir=work, search_path=search)))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    results["webhook"] = hook.received
    results["smtp"] = mail.messages
    yield results
    hook.close()
    mail.close()


def run_of(batch, key):
    result = batch[key]
    if isinstance(result, Exception):
        raise result
    return result


def delivered(batch, run_id: str) -> list[tuple]:
    return [(r["unipipe"].get("task"), r["unipipe"]["event"]) for r in batch["webhook"]
            if r["unipipe"]["run_id"] == run_id]


def mailed(batch, run_id: str) -> list[str]:
    return [m["text"] for m in batch["smtp"] if run_id in m["text"]]


# ---------------------------------------------------------------- data flow, templating


def test_fanout_and_a_jinja_looking_parameter_reach_the_task_unchanged(batch):
    airflow = run_of(batch, "fanout")
    assert_same(airflow, local(features.fanout))
    assert airflow.output["label"] == "squares {{ ds }}"
    assert airflow.output["squares"] == [1, 4, 9, 16] and airflow.output["total"] == 30
    assert airflow.tasks["square"].attempts == 4 and "square[3]" in airflow.tasks


def test_map_over_literals_parameters_and_key_paths_with_a_negated_gate(batch):
    airflow = run_of(batch, "map-sources")
    assert_same(airflow, local(pa.map_sources, {"numbers": [5, 6]}))
    assert airflow.output == {"literal": ["X {{ DS }}!", "Y!"], "param": [10, 12],
                              "path": ["A {{ DS }}?", "B?"], "branch": "2 rows, not ok"}


def test_hostile_strings_are_data_on_a_real_run(batch):
    airflow = run_of(batch, "hostile")
    assert_same(airflow, local(pa.hostile))
    assert airflow.output == {"text": pa.HOSTILE, "extra": pa.HOSTILE}


def test_ml_training_pipeline_matches_the_reference(batch):
    airflow = run_of(batch, "ml-training")
    assert_same(airflow, local(ml_training.training))
    assert airflow.tasks["register_model"].state == "success"
    assert len(airflow.output["scores"]) == 4
    assert airflow.tasks["compute_features"].cache_hit is False


# ---------------------------------------------------------------- conditions


@pytest.mark.parametrize("key,value,runs", [("gate-passes", 0.9, True), ("gate-fails", 0.5, False)])
def test_quality_gate_runs_or_skips_the_guarded_tasks(batch, key, value, runs):
    airflow = run_of(batch, key)
    assert_same(airflow, local(features.quality_gate, {"value": value}))
    assert airflow.tasks["after_register"].state == ("success" if runs else "skipped")


# ---------------------------------------------------------------- retries


def test_retries_wait_exactly_the_ir_delays_through_the_retry_policy(batch):
    airflow = run_of(batch, "retry")
    assert_same(airflow, local(features.retry_then_succeed))
    retry = up.load(features.retry_then_succeed).task("flaky").policies.retry.model_dump()
    measured = gaps(airflow, "flaky")
    assert len(measured) == 2
    for k, gap in enumerate(measured, start=1):
        assert base_delay(retry, k) <= gap <= base_delay(retry, k) + POLL


def test_capped_backoff_slept_by_the_shim_matches_the_formula_on_the_3_0_dialect(batch):
    """The pre-3.3 path (engine delay 0, the shim sleeps the IR wait) on a real run."""
    airflow = run_of(batch, "capped-backoff-3.0")
    assert_same(airflow, local(pa.capped_backoff, {"fail_times": 3}))
    retry = up.load(pa.capped_backoff).task("slow_to_work").policies.retry.model_dump()
    measured = gaps(airflow, "slow_to_work")
    assert len(measured) == 3
    for k, gap in enumerate(measured, start=1):  # 1s, 2s, then capped at 2.5s
        assert base_delay(retry, k) <= gap <= base_delay(retry, k) + POLL


def test_jitter_lengthens_each_wait_by_at_most_its_share(batch):
    airflow = run_of(batch, "jitter")
    assert_same(airflow, local(features.jitter))
    for gap in gaps(airflow, "jittery"):
        assert 0.5 <= gap <= 0.5 * 1.5 + POLL


@pytest.mark.parametrize("key", ["non-retryable-3.3", "non-retryable-3.0"])
def test_a_non_retryable_error_fails_at_once(batch, key):
    """3.3: the retry policy says FAIL; 3.0: the adapter raises AirflowFailException."""
    airflow = run_of(batch, key)
    assert_same(airflow, local(features.non_retryable))
    assert airflow.tasks["bad_value"].attempts == 1
    assert airflow.tasks["bad_value"].error_type == "ValueError"


# ---------------------------------------------------------------- alerts to real receivers


def test_retries_exhausted_alerts_once_per_retry_and_once_on_failure(batch, webhook, smtp):
    airflow = run_of(batch, "retries-exhausted")
    reference = local(features.retries_exhausted)
    assert_same(airflow, reference)
    expected = [("always_fails", "retry"), ("always_fails", "retry"), ("always_fails", "failure")]
    assert delivered(batch, airflow.run_id) == webhook.events() == expected
    assert len(mailed(batch, airflow.run_id)) == len(smtp.messages) == 1
    assert airflow.tasks["never_runs"].state == "upstream_failed"
    assert airflow.tasks["independent"].state == "success"


def test_success_alerts_for_task_and_pipeline(batch, webhook):
    airflow = run_of(batch, "success-alert")
    assert_same(airflow, local(features.success_alert))
    assert sorted(delivered(batch, airflow.run_id), key=str) == sorted(
        webhook.events(), key=str) == [("announce", "success"), (None, "success")]


# ---------------------------------------------------------------- cache, timeout


def test_second_run_hits_the_cache(batch):
    first, second = run_of(batch, "cached-first"), run_of(batch, "cached-second")
    assert first.tasks["expensive"].cache_hit is False
    assert second.tasks["expensive"].cache_hit is True
    assert second.output == first.output  # the stored value, not a new time stamp
    reference = [local(features.cached), local(features.cached)]
    assert_same(first, reference[0], outputs=False)
    assert_same(second, reference[1], outputs=False)


def test_timeout_stops_each_try_and_is_retried(batch):
    airflow = run_of(batch, "timeout")
    assert_same(airflow, local(features.timeout))
    assert airflow.tasks["hangs"].attempts == 2
    assert airflow.tasks["hangs"].error_type == "TaskTimeout"
    for start, end in airflow.tasks["hangs"].attempt_times:
        assert 1.9 <= end - start <= 2 + POLL


def test_a_try_that_kills_its_own_process_fails_alone_and_is_retried(batch):
    airflow = run_of(batch, "killed-once")
    assert_same(airflow, local(pa.killed_once))
    assert airflow.output == "survived" and airflow.tasks["dies_once"].attempts == 2


# ---------------------------------------------------------------- sub-pipelines (TaskGroups)


def group_alerts_of(batch, run_id: str) -> list[tuple]:
    """(group, event) of the sub-pipeline alerts the webhook receiver got for one run."""
    return [(r["unipipe"]["group"], r["unipipe"]["event"]) for r in batch["webhook"]
            if r["unipipe"]["run_id"] == run_id and r["unipipe"].get("group")]


def test_nested_and_repeated_groups_with_a_map_a_gate_and_a_cleanup_match_the_reference(
        batch, webhook):
    airflow = run_of(batch, "subpipelines")
    assert_same(airflow, local(pa.subpipelines))
    assert airflow.output == {"checked": "big 14", "small": 5}
    assert airflow.tasks["checked_total__sum_squares__square_it"].attempts == 3
    # the group's alerts task delivered success once; the helper tasks are not in the result
    assert delivered(batch, airflow.run_id) == [(None, "success")]  # no task alert besides
    assert group_alerts_of(batch, airflow.run_id) == [("checked_total", "success")]
    assert not {t for t in airflow.tasks if "unipipe" in t or t.startswith("when_")}


def test_a_failed_group_alerts_once_a_group_that_never_ran_does_not_and_the_run_fails(
        batch, webhook):
    """alerted_sink ends the DAG: its alerts task (all_done) succeeds after its failed member,
    and the watcher is what keeps the run failed (airflow/models/dagrun.py ~1217)."""
    airflow = run_of(batch, "subpipeline-failures")
    assert_same(airflow, local(pa.subpipeline_failures))
    assert airflow.state == "failed"
    assert airflow.tasks["alerted_never__big_label"].state == "upstream_failed"
    assert group_alerts_of(batch, airflow.run_id) == [("alerted_sink", "failure")]
    assert len(delivered(batch, airflow.run_id)) == 1


def test_a_mapped_group_runs_one_copy_per_item_reported_as_task_i(batch):
    """Each member has one task instance per item (its map index), the consumer reads the
    copies' outputs as a list in item order, the cleanup after the group and the watcher
    behave as without a map."""
    airflow = run_of(batch, "mapped-groups")
    assert_same(airflow, local(pa.mapped_groups))
    assert airflow.output == {"labels": "0:300,1:301,2:302", "values": [300, 301, 302]}
    assert [airflow.tasks[f"shift_shard__labelled[{i}]"].output for i in range(3)] == [
        "0:300", "1:301", "2:302"]
    assert airflow.tasks["shift_shard__shifted"].attempts == 3


def test_one_copy_still_gives_a_list_and_a_failed_items_task_leaves_every_member_upstream_failed(
        batch):
    """Airflow 3 hands a single XCom over bare (sdk/execution_time/task_runner.py ~555): the
    adapter re-reads a collected member as a list, so one copy gives ["7:107"], not "7:107"."""
    airflow = run_of(batch, "mapped-group-edges")
    assert_same(airflow, local(pa.mapped_group_edges))
    assert airflow.tasks["joined"].output == "7:107"
    assert airflow.tasks["shift_shard__labelled"].output == ["7:107"]
    assert airflow.tasks["shift_shard_2__shifted"].state == "upstream_failed"
    assert not any(t.startswith("shift_shard_2__") and "[" in t for t in airflow.tasks)
    assert airflow.state == "failed"


# ---------------------------------------------------------------- declared differences


def test_a_mapped_group_over_no_items_skips_on_airflow_but_not_in_the_reference(batch):
    """Declared in support()[SUBPIPELINE_MAP]: the group expands to no task instances, so
    Airflow skips its tasks and their consumers; the reference gives each member [] and runs
    the consumer."""
    airflow = run_of(batch, "mapped-group-empty")
    reference = local(pa.mapped_group_empty)
    assert reference.tasks["shift_shard__labelled"].output == []
    assert (reference.tasks["joined"].state, reference.output) == ("success", "")
    assert {t: airflow.tasks[t].state for t in ("shift_shard__shifted", "shift_shard__labelled",
                                                "joined")} == dict.fromkeys(
        ("shift_shard__shifted", "shift_shard__labelled", "joined"), "skipped")
    assert airflow.state == "success" and airflow.output is None



def test_mapping_over_an_empty_list_skips_on_airflow_but_not_in_the_reference(batch):
    """Declared in support()[MAP]: Airflow skips a task expanded over nothing, and its
    consumers with it (all_success); the reference runs it with output [] and goes on."""
    airflow = run_of(batch, "empty-map")
    reference = local(pa.empty_map)
    assert (reference.tasks["double"].state, reference.tasks["double"].output) == ("success", [])
    assert (reference.tasks["count"].state, reference.output) == ("success", 0)
    assert airflow.tasks["double"].state == "skipped"
    assert airflow.tasks["count"].state == "skipped"
    assert airflow.state == "success" and airflow.output is None


# ---------------------------------------------------------------- up.run: the CLI, a scheduler


def test_up_run_goes_through_airflow_dags_test(tmp_path, monkeypatch):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the run makes its home
    airflow = up.run(features.quality_gate, backend="airflow", params={"value": 0.5})
    assert_same(airflow, local(features.quality_gate, {"value": 0.5}))
    assert airflow.run_id.startswith("manual__")
    assert list((tmp_path / "tmp").iterdir()) == []  # its own AIRFLOW_HOME is gone after the run


@pytest.mark.slow
def test_smoke_run_under_a_real_scheduler_triggered_through_the_rest_api():
    airflow = up.run(features.fanout, backend="airflow", mode="scheduler")
    assert_same(airflow, local(features.fanout))
    assert airflow.run_id.startswith("manual__")


@pytest.mark.slow
def test_under_a_real_scheduler_a_try_runs_in_airflows_own_task_process_without_a_fork():
    """Under the scheduler each try is a task-runner process of its own (titled ``airflow worker
    -- <ti id>``, ``sdk/execution_time/task_runner.py`` ~1185), forked by its supervisor in a
    LocalExecutor worker (``airflow worker -- LocalExecutor: <ti id>``,
    ``executors/local_executor.py`` ~105): the shim runs the task right there (with a fork,
    the task's parent would be the task runner). Under ``dags test`` the try runs inside the
    run's process, which runs threads: the shim runs the try in a process forked from the run's
    zygote (unipipe/runtime/zygote.py), spawned by the run (no harness lane here), so the try's
    parent is the zygote and the zygote's parent the run."""
    scheduled = up.run(pa.titles, backend="airflow", mode="scheduler")
    assert scheduled.state == "success", scheduled.tasks
    assert scheduled.output["self"].startswith("airflow worker -- "), scheduled.output
    assert scheduled.output["parent"].startswith("airflow worker -- LocalExecutor: "), \
        scheduled.output
    tested = up.run(pa.titles, backend="airflow")
    assert tested.state == "success", tested.tasks
    assert "from unipipe.runtime.zygote import _spawned" in tested.output["parent"]
    assert tested.output["self"] == tested.output["parent"]  # forked from it
    assert " dags test process-titles " in tested.output["grandparent"] + " "


def test_try_times_come_from_airflow_where_the_shim_could_not_trace_a_try():
    """A killed try writes no trace event: its start and end are Airflow's record of it, so a
    retry's wait is measured from the right try."""
    from unipipe_airflow.results import _try_times

    ti = {"times": {1: (10.0, 11.0), 2: (12.0, 13.5)}}
    traced = [{"attempt": 2, "start": 12.2, "end": 13.4}]
    assert _try_times(ti, traced, 2) == [(10.0, 11.0), (12.2, 13.4)]
    assert _try_times({"times": {}}, traced, 2) == [(12.2, 13.4)]  # try 1 unknown either way
    assert _try_times({"times": {1: (10.0, 11.0)}}, [], 1) == [(10.0, 11.0)]


def test_a_fresh_db_drops_the_write_ahead_log_a_killed_airflow_left(tmp_path):
    """A lane reuses its Airflow home: a run's Airflow stopped by a signal leaves ``airflow.db-wal``
    behind, which SQLite would replay onto the next run's fresh copy of the template."""
    import shutil
    import sqlite3

    from unipipe_airflow.engine import fresh_db, template_db

    db = tmp_path / "airflow.db"
    shutil.copyfile(template_db(), db)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE stale_run (x)")
    con.commit()
    # what a SIGKILL leaves: the log as it was while the connection was open
    left = {s: (tmp_path / f"airflow.db{s}").read_bytes() for s in ("-wal", "-shm")}
    con.close()
    for suffix, data in left.items():
        (tmp_path / f"airflow.db{suffix}").write_bytes(data)
    shutil.copyfile(template_db(), db)
    stale = sqlite3.connect(db)  # the bug: the old run's table comes back
    assert stale.execute("SELECT count(*) FROM sqlite_master WHERE name='stale_run'"
                         ).fetchone() == (1,)
    stale.close()
    for suffix, data in left.items():
        (tmp_path / f"airflow.db{suffix}").write_bytes(data)

    fresh_db(db)

    assert not (tmp_path / "airflow.db-wal").exists()
    fresh = sqlite3.connect(db)
    assert fresh.execute("SELECT count(*) FROM sqlite_master WHERE name='stale_run'"
                         ).fetchone() == (0,)
    assert fresh.execute("SELECT count(*) FROM sqlite_master WHERE name='dag_bundle'"
                         ).fetchone() == (1,)
    fresh.close()


def test_tasks_sharing_one_task_function_run_as_their_own_tasks(batch):
    """add_one, add_one_2 (their own definitions: a parameter, an upstream) and add_one_3..5
    (``add_one_2.override(task_id=...)``) are five task instances with their own ids."""
    airflow = batch["one-callable"]
    assert_same(airflow, local(features.one_callable, {"start": 10}))
    assert airflow.output == 15
    assert set(airflow.tasks) == {"add_one", *(f"add_one_{i}" for i in range(2, 6))}
