"""Pipelines run on a real local Prefect server; each RunResult must equal the reference runner's."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import ml_training
import pipelines_prefect as pp
import pytest
from pipelines import features

import unipipe as up
from unipipe.runtime import trace

pytestmark = [pytest.mark.prefect]


def summary(result):
    """What must agree across backends: state, output, per-task state/attempts/cache hit/output,
    and the alerts delivered (task, event, channel, ok)."""
    tasks = {k: (v.state, v.attempts, v.cache_hit, v.output, v.error_type)
             for k, v in result.tasks.items()}
    alerts = sorted((a["task"] or "", a["event"], a["channel"], a["ok"]) for a in result.alerts)
    return {"state": result.state, "output": result.output, "tasks": tasks, "alerts": alerts}


def run_both(pipeline, params=None):
    prefect = up.run(pipeline, backend="prefect", params=params)
    local = up.run(pipeline, backend="local", params=params)
    return prefect, local


@pytest.mark.parametrize("name", ["fanout", "retry_then_succeed", "non_retryable", "quality_gate"])
def test_feature_pipeline_matches_reference(name, prefect_env):
    prefect, local = run_both(getattr(features, name))
    assert prefect.backend == "prefect"
    assert summary(prefect) == summary(local)


def test_quality_gate_closed_skips_both_tasks(prefect_env):
    prefect, local = run_both(features.quality_gate, {"value": 0.5})
    assert summary(prefect) == summary(local)
    assert prefect.tasks["register"].state == "skipped"
    assert prefect.tasks["after_register"].state == "skipped"
    assert prefect.output == {"metrics": {"value": 0.5}, "registered": None, "shout": None}


def test_retry_waits_follow_the_precomputed_delay_list(prefect_env):
    result = up.run(features.retry_then_succeed, backend="prefect", params={"fail_times": 3})
    assert result.state == "success" and result.tasks["flaky"].attempts == 4
    times = result.tasks["flaky"].attempt_times
    gaps = [b[0] - a[1] for a, b in zip(times, times[1:])]
    # delay 1s, backoff 2, max_delay 3s: waits 1, 2, 3 (not 4): the cap is exact
    for gap, expected in zip(gaps, [1.0, 2.0, 3.0]):
        assert expected <= gap < expected + 1.5  # + engine overhead on a loaded machine


def test_retries_exhausted_alerts_reach_webhook_and_smtp(prefect_env, webhook, smtp):
    prefect = up.run(features.retries_exhausted, backend="prefect")
    prefect_hooks, prefect_mail = list(webhook.events()), len(smtp.messages)
    webhook.received.clear()
    smtp.messages.clear()
    local = up.run(features.retries_exhausted, backend="local")
    assert summary(prefect) == summary(local)
    assert prefect.state == "failed"
    assert prefect.tasks["always_fails"].attempts == 3
    assert prefect.tasks["never_runs"].state == "upstream_failed"
    assert prefect.tasks["independent"].state == "success"
    # delivered to the real receivers: 2 retry alerts and 1 failure alert, 1 pipeline email
    assert prefect_hooks == webhook.events() == [("always_fails", "retry")] * 2 + [
        ("always_fails", "failure")]
    assert prefect_mail == len(smtp.messages) == 1
    assert "retries-exhausted" in smtp.messages[0]["text"]


def test_success_alerts_task_and_pipeline(prefect_env, webhook):
    prefect = up.run(features.success_alert, backend="prefect")
    got = sorted(webhook.events(), key=str)
    webhook.received.clear()
    local = up.run(features.success_alert, backend="local")
    assert summary(prefect) == summary(local)
    assert got == sorted(webhook.events(), key=str) == sorted(
        [("announce", "success"), (None, "success")], key=str)


def test_timeout_is_enforced_and_retried(prefect_env):
    prefect, local = run_both(features.timeout, {"seconds": 30.0})
    assert summary(prefect) == summary(local)
    hangs = prefect.tasks["hangs"]
    assert (hangs.state, hangs.attempts, hangs.error_type) == ("failed", 2, "TaskTimeout")
    assert all(end - start < 10 for start, end in hangs.attempt_times)


def test_cache_hits_on_second_run_like_the_reference(prefect_env, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    first = up.run(features.cached, backend="prefect")
    second = up.run(features.cached, backend="prefect")
    assert (first.tasks["expensive"].cache_hit, second.tasks["expensive"].cache_hit) == (False, True)
    assert second.output == first.output  # the stored value, not a new timestamp
    assert second.tasks["expensive"].attempts == 1
    other = up.run(features.cached, backend="prefect", params={"x": 4})
    assert other.tasks["expensive"].cache_hit is False
    local = [up.run(features.cached, backend="local").tasks["expensive"].cache_hit for _ in range(2)]
    assert local == [False, True]
    # Prefect's results (its cache) live where the runner put them, never in ~/.prefect
    results = Path(os.environ["UNIPIPE_CACHE_URL"]) / "prefect-results"
    assert any(results.iterdir())
    assert not (tmp_path / "home" / ".prefect").exists()
    # each run's own folder is removed after it; at most one fork server home, made only to
    # start the server (it is reused by later runs)
    left = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "tmp").iterdir())
    assert left in ([], ["unipipe-prefect-forkserver"])


def test_cache_key_changes_with_cache_version_and_task_source(prefect_env):
    ir = up.load(pp.cache_version)
    task = ir.tasks[0]
    cache = task.policies.cache
    bumped = ir.model_copy(update={"tasks": (task.model_copy(update={"policies": task.policies.model_copy(
        update={"cache": cache.model_copy(update={"version": "2"})})}),)})
    edited = ir.model_copy(update={"tasks": (task.model_copy(update={"source_hash": "f" * 64}),)})
    hits = [up.run(p, backend="prefect").tasks["stamp"].cache_hit
            for p in (ir, ir, bumped, bumped, edited)]
    assert hits == [False, True, False, True, False]


def test_user_cache_key_fn(prefect_env):
    prefect = [up.run(pp.cache_key_fn, backend="prefect", params={"shard": s}).tasks["slow_len"]
               for s in ([1, 2, 3], [7, 8, 9], [1])]
    local = [up.run(pp.cache_key_fn, backend="local", params={"shard": s}).tasks["slow_len"]
             for s in ([1, 2, 3], [7, 8, 9], [1])]
    assert [r.cache_hit for r in prefect] == [r.cache_hit for r in local] == [False, True, False]
    assert prefect[1].output == prefect[0].output


def test_jitter_is_emulated_within_the_ir_bounds(prefect_env):
    """Prefect 3.7 ignores retry_jitter_factor; the runtime sleeps the jitter part itself."""
    result = up.run(pp.wide_jitter, backend="prefect")
    assert result.state == "success" and result.output == 3
    times = result.tasks["wobbly"].attempt_times
    gaps = [b[0] - a[1] for a, b in zip(times, times[1:])]
    assert len(gaps) == 2
    for gap in gaps:  # base 1s, jitter 1.0: each wait in [1s, 2s] (+ engine overhead)
        assert 1.0 <= gap <= 2.0 + 1.0  # + engine overhead on a loaded machine
    # without emulation both waits would be ~1s: uniform jitter makes that (P < 0.3%) unlikely
    assert max(gaps) > 1.05


def test_literal_map_negated_gate_and_email_alerts(prefect_env, smtp):
    prefect = up.run(pp.literal_map, backend="prefect")
    mails = [m["text"] for m in smtp.messages]
    smtp.messages.clear()
    local = up.run(pp.literal_map, backend="local")
    assert summary(prefect) == summary(local)
    assert prefect.output == {"doubled": [2, 4, 6], "text": "big: [2, 4, 6]", "prefix": "big: "}
    assert [prefect.tasks[f"double[{i}]"].output for i in range(3)] == [2, 4, 6]
    assert len(mails) == len(smtp.messages) == 2  # task success + pipeline success


def test_nasty_strings_survive_the_round_trip(prefect_env):
    prefect, local = run_both(pp.nasty)
    assert summary(prefect) == summary(local)
    assert prefect.output["label"].startswith('""" ) ; import os')


def test_ml_pipeline_matches_reference_and_hits_cache_on_second_run(prefect_env):
    first, local_first = run_both(ml_training.training)
    assert summary(first) == summary(local_first)
    assert first.state == "success" and first.output["registered"].startswith("model-a")
    assert len(first.output["scores"]) == 4
    second, local_second = run_both(ml_training.training)
    assert summary(second) == summary(local_second)
    assert second.tasks["compute_features"].cache_hit is True


def test_ml_pipeline_failure_alert_reaches_webhook(prefect_env, webhook):
    prefect = up.run(ml_training.training, backend="prefect", params={"n_rows": 5})
    got = list(webhook.events())
    webhook.received.clear()
    local = up.run(ml_training.training, backend="local", params={"n_rows": 5})
    assert summary(prefect) == summary(local)
    assert prefect.state == "failed"
    assert prefect.tasks["validate_data"].attempts == 2
    assert prefect.tasks["register_model"].state == "upstream_failed"
    assert got == webhook.events() == [(None, "failure")]
    body = webhook.received[0]["unipipe"]
    assert body["error"].startswith("ValueError: need at least 10 rows")


def test_run_result_is_cross_checked_with_the_trace(prefect_env):
    result = up.run(features.retry_then_succeed, backend="prefect")
    events = [e for e in trace.read(os.environ["UNIPIPE_TRACE_DIR"], result.run_id)
              if e["kind"] == "attempt"]
    assert [(e["task"], e["attempt"], e["outcome"], e["backend"]) for e in events] == [
        ("flaky", 1, "failed", "prefect"), ("flaky", 2, "failed", "prefect"),
        ("flaky", 3, "success", "prefect")]
    assert result.tasks["flaky"].attempts == 3


def test_cli_run_uses_the_server_in_prefect_api_url(prefect_local_server, tmp_path):
    """``unipipe run --backend prefect`` with a user's PREFECT_API_URL runs on that server."""
    import json
    import subprocess
    import sys

    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=prefect_local_server.api_url, PREFECT_HOME=str(tmp_path / "home"))

    def flow_runs() -> int:
        with temporary_settings(updates={PREFECT_API_URL: prefect_local_server.api_url}):
            with get_client(sync_client=True) as client:
                return len(client.read_flow_runs(flow_filter=FlowFilter(
                    name=FlowFilterName(any_=["ml-training"]))))

    before = flow_runs()
    proc = subprocess.run([str(Path(sys.executable).with_name("unipipe")), "run",
                           str(root / "examples" / "ml_training.py:training"), "--backend",
                           "prefect", "--param", "n_rows=60", "--json"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    local = up.run(ml_training.training, backend="local", params={"n_rows": 60})
    assert result["backend"] == "prefect" and result["state"] == "success"
    assert result["output"] == local.output
    assert flow_runs() == before + 1


def test_killed_attempt_process_is_an_ordinary_failed_attempt(prefect_env):
    """Each attempt runs in its own process (as on the reference runner): SIGKILL fails only it."""
    prefect, local = run_both(pp.sigkill)
    assert summary(prefect) == summary(local)
    assert (prefect.state, prefect.output, prefect.tasks["fragile"].attempts) == ("success", 42, 2)
    events = [e for e in trace.read(os.environ["UNIPIPE_TRACE_DIR"], prefect.run_id)
              if e["kind"] == "attempt"]
    assert [(e["attempt"], e["outcome"], e["error_type"]) for e in events] == [
        (1, "failed", "ProcessKilled"), (2, "success", None)]


def test_map_element_timeout_stops_the_element(prefect_env):
    """Prefect runs map elements in threads, where timeout_seconds cannot stop blocking code;
    the attempt's process is killed instead, so the hang ends at the timeout."""
    prefect, local = run_both(pp.mapped_timeout)
    assert summary(prefect) == summary(local)
    element = prefect.tasks["slow_element[1]"]
    assert (element.state, element.attempts, element.error_type) == ("failed", 2, "TaskTimeout")
    assert all(end - start < 10 for start, end in element.attempt_times)


# ---------------------------------------------------------------- sub-pipelines (subflows)


def _group_alerts(webhook):
    return [(r["unipipe"].get("group"), r["unipipe"]["event"]) for r in webhook.received
            if isinstance(r, dict) and "unipipe" in r]


def test_nested_and_repeated_subflows_match_the_reference(prefect_env, webhook):
    prefect = up.run(pp.subpipelines, backend="prefect")
    sent = _group_alerts(webhook)
    webhook.received.clear()
    local = up.run(pp.subpipelines, backend="local")
    assert summary(prefect) == summary(local)
    assert prefect.output == {"small": 6, "large": 60, "published": "total \u2713"}
    assert prefect.tasks["prepare_rows_2__check_rows__count"].state == "success"
    # the retried, alerting group succeeded at once: one success alert, named by the group
    assert sent == _group_alerts(webhook) == [("publish_total", "success")]


def test_a_failed_group_still_gives_its_good_members_outputs_and_an_unrun_one_sends_nothing(
        prefect_env, webhook):
    prefect = up.run(pp.group_member_outcomes, backend="prefect")
    sent = _group_alerts(webhook)
    webhook.received.clear()
    local = up.run(pp.group_member_outcomes, backend="local")
    assert summary(prefect) == summary(local)
    assert prefect.state == "failed"
    assert (prefect.tasks["split_ingest__shaky"].state,
            prefect.tasks["split_ingest__shaky"].attempts) == ("failed", 2)
    assert prefect.tasks["double"].output == 6  # read the member that succeeded
    assert prefect.tasks["late_group__count"].state == "upstream_failed"
    # the failed group alerts once; the group below a failure never ran, so it sends nothing
    assert sent == _group_alerts(webhook) == [("split_ingest", "failure")]


def test_a_retried_run_runs_its_completed_group_again(prefect_env):
    prefect, local = run_both(pp.whole_run_over_groups)
    assert summary(prefect) == summary(local)
    assert prefect.run_attempts == local.run_attempts == 2
    assert prefect.tasks["check_rows__count"].attempts == 1


def test_mapped_subflows_match_the_reference_copy_by_copy(prefect_env):
    prefect, local = run_both(pp.mapped_subpipelines)
    assert summary(prefect) == summary(local)
    assert prefect.output == {"sums": [10, 31, 62], "tags": ["tag:a", "tag:b"]}
    assert [prefect.tasks[f"per_shard__shard_sum[{i}]"].output for i in range(3)] == [10, 31, 62]
    assert prefect.tasks["per_shard__shard_rows"].attempts == 3
    # one Prefect task run per copy, each in its copy's subflow run, read from the trace
    events = [e for e in trace.read(os.environ["UNIPIPE_TRACE_DIR"], prefect.run_id)
              if e.get("kind") == "attempt" and e["task"] == "per_shard__shard_sum"]
    assert sorted(e["map_index"] for e in events) == [0, 1, 2]


def test_mapped_subflow_over_no_items_and_below_a_failure(prefect_env):
    prefect, local = run_both(pp.mapped_subpipelines, {"n": 0})
    assert summary(prefect) == summary(local)
    assert prefect.tasks["per_shard__shard_sum"].output == []
    prefect, local = run_both(pp.mapped_below_a_failure)
    assert summary(prefect) == summary(local)
    assert prefect.state == "failed"
    assert prefect.tasks["per_shard__shard_rows"].state == "upstream_failed"
    assert not any("[" in k for k in prefect.tasks)


def test_calls_of_one_shared_task_function_are_task_runs_of_their_own(prefect_env):
    """add_one.with_options(name=...): five task runs, each named and run as its own task."""
    prefect = up.run(features.one_callable, backend="prefect", params={"start": 10})
    local = up.run(features.one_callable, backend="local", params={"start": 10})
    assert summary(prefect) == summary(local)
    assert prefect.output == 15
    assert sorted(prefect.tasks) == ["add_one", *(f"add_one_{i}" for i in range(2, 6))]
