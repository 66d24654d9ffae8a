"""The compiled PipelineSpec, run by the kubeflow executor, against the reference runner.

Each case runs a pipeline on ``local`` and on ``kubeflow`` (compile -> kfp compiler -> YAML ->
executor -> component processes) and compares what a user sees: run state, output, per task
(state, attempts, cache hit, output, error type), and the alerts real receivers got.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import kfp_cases
import ml_training
import pytest
from pipelines import features as F

import unipipe as up
from unipipe.runtime import trace


def view(result: up.RunResult) -> dict:
    return {
        "state": result.state,
        "output": result.output,
        "tasks": {k: (t.state, t.attempts, t.cache_hit, t.output, t.error_type)
                  for k, t in sorted(result.tasks.items())},
        "alerts": [(a["task"], a["event"], a["channel"], a["ok"]) for a in result.alerts],
    }


def gaps(task: up.TaskResult) -> list[float]:
    """Wait before each retry: next attempt's start minus the previous attempt's end."""
    times = task.attempt_times
    return [b[0] - a[1] for a, b in zip(times, times[1:])]


def both(pipeline, params=None, receivers=()):
    """Run on the reference runner, then on kubeflow; receivers are cleared in between."""
    ref = up.run(pipeline, backend="local", params=params)
    got_ref = [list(_received(r)) for r in receivers]
    for r in receivers:
        _clear(r)
    # the shim's cache key equals the reference's by design: give kubeflow its own store
    cache_url = os.environ["UNIPIPE_CACHE_URL"]
    os.environ["UNIPIPE_CACHE_URL"] = cache_url + "-kubeflow"
    try:
        kfp = up.run(pipeline, backend="kubeflow", params=params)
    finally:
        os.environ["UNIPIPE_CACHE_URL"] = cache_url
    got_kfp = [list(_received(r)) for r in receivers]
    return ref, kfp, got_ref, got_kfp


def _received(receiver):
    if hasattr(receiver, "events"):
        return receiver.events()
    return [(m["to"], m["text"].split("\n", 1)[0][:0]) for m in receiver.messages]


def _clear(receiver):
    if hasattr(receiver, "received"):
        receiver.received.clear()
    else:
        receiver.messages.clear()


def test_fanout_collects_in_order_with_key_path_and_after():
    ref, kfp, _, _ = both(F.fanout)
    assert view(kfp) == view(ref)
    assert kfp.output == {"squares": [1, 4, 9, 16], "total": 30, "label": "squares {{ ds }}",
                          "last": "done"}
    assert kfp.tasks["square"].attempts == 4 and kfp.tasks["square[3]"].output == 16


def test_retry_then_succeed_counts_attempts_and_waits_capped_delays():
    ref, kfp, _, _ = both(F.retry_then_succeed)
    assert view(kfp) == view(ref)
    t = kfp.tasks["flaky"]
    assert (t.state, t.attempts, t.output) == ("success", 3, "ok after 3")
    # IR waits 1 s then 2 s (cap 3 s): the shim waits them (KFP has no per-delay cap)
    # (upper bounds would measure process start-up on a loaded machine, not the policy)
    waits = gaps(t)
    assert len(waits) == 2 and waits[0] >= 1.0 and waits[1] >= 2.0


def test_retries_exhausted_alerts_reach_webhook_and_smtp(webhook, smtp):
    ref, kfp, got_ref, got_kfp = both(F.retries_exhausted, receivers=(webhook, smtp))
    assert view(kfp) == view(ref)
    assert kfp.tasks["always_fails"].attempts == 3
    assert kfp.tasks["never_runs"].state == "upstream_failed"
    assert kfp.tasks["independent"].output == "still ran"
    assert got_kfp[0] == got_ref[0] == [("always_fails", "retry"), ("always_fails", "retry"),
                                        ("always_fails", "failure")]
    # the pipeline failure alert went through the ExitHandler to the real SMTP server
    assert len(got_kfp[1]) == len(got_ref[1]) == 1
    assert "failure" in smtp.messages[0]["text"] and smtp.messages[0]["to"] == ["oncall@example.com"]


def test_non_retryable_error_fails_after_one_attempt():
    ref, kfp, _, _ = both(F.non_retryable)
    assert view(kfp) == view(ref)
    assert (kfp.tasks["bad_value"].attempts, kfp.tasks["bad_value"].error_type) == (1, "ValueError")


def test_jitter_waits_at_least_the_base_delay():
    ref, kfp, _, _ = both(F.jitter)
    assert view(kfp) == view(ref)
    # 0.5 s with jitter 0.5: each wait in [0.5, 0.75] (plus process overhead)
    assert all(g >= 0.5 for g in gaps(kfp.tasks["jittery"]))


def test_timeout_stops_the_function_and_retries():
    ref, kfp, _, _ = both(F.timeout)
    assert view(kfp) == view(ref)
    t = kfp.tasks["hangs"]
    assert (t.state, t.attempts, t.error_type) == ("failed", 2, "TaskTimeout")
    assert all(end - start < 10 for start, end in t.attempt_times)


def test_timeout_with_alerts_is_enforced_by_the_shim(webhook):
    ref, kfp, got_ref, got_kfp = both(kfp_cases.timeout_alerts, receivers=(webhook,))
    assert view(kfp) == view(ref)
    assert got_kfp[0] == got_ref[0] == [("sleepy", "retry"), ("sleepy", "failure")]


@pytest.mark.parametrize("value,registered", [(0.9, "registered 0.9"), (0.5, None)])
def test_quality_gate_runs_the_if_body_only_when_true(value, registered):
    ref, kfp, _, _ = both(F.quality_gate, params={"value": value})
    assert view(kfp) == view(ref)
    assert kfp.output["registered"] == registered
    assert kfp.tasks["register"].state == ("success" if registered else "skipped")
    assert kfp.tasks["after_register"].state == ("success" if registered else "skipped")


def test_success_alert_task_and_pipeline(webhook):
    ref, kfp, got_ref, got_kfp = both(F.success_alert, receivers=(webhook,))
    assert view(kfp) == view(ref)
    assert got_kfp[0] == got_ref[0] == [("announce", "success"), (None, "success")]


def test_shapes_params_key_paths_literal_map_else_branch_and_artifacts():
    ref, kfp, _, _ = both(kfp_cases.shapes)
    assert view(kfp) == view(ref)
    # ints inside dict/list params and outputs stay ints (no protobuf doubles)
    assert kfp.output["seen"]["types"] == ["int", "int"]
    assert kfp.output["listed"]["types"] == ["int", "int"]
    assert kfp.output["doubled"] == [2, 4, 6]
    assert (kfp.output["yes"], kfp.output["no"]) == (None, "large")
    assert kfp.output["rows"] == 20000


@pytest.mark.parametrize("pipeline,task", [(F.cached, "expensive"),
                                           (kfp_cases.native_cache, "stamp"),
                                           (kfp_cases.key_fn_cache, "shout")])
def test_second_run_is_a_cache_hit(pipeline, task, tmp_path, monkeypatch):
    ref1 = up.run(pipeline, backend="local")
    ref2 = up.run(pipeline, backend="local")
    # a fresh shim cache for kubeflow: the shim's key is the reference's key by design
    monkeypatch.setenv("UNIPIPE_CACHE_URL", str(tmp_path / "kfp-shim-cache"))
    kfp1 = up.run(pipeline, backend="kubeflow")
    kfp2 = up.run(pipeline, backend="kubeflow")
    assert [ref1.tasks[task].cache_hit, ref2.tasks[task].cache_hit] == [False, True]
    assert [kfp1.tasks[task].cache_hit, kfp2.tasks[task].cache_hit] == [False, True]
    assert kfp2.tasks[task].attempts == 1
    assert kfp2.output == kfp1.output  # the stored value, not a new computation
    events = [e for e in trace.read(os.environ["UNIPIPE_TRACE_DIR"], kfp2.run_id)
              if e["kind"] == "attempt" and e["task"] == task]
    assert [(e["attempt"], e["outcome"], e["cache_hit"]) for e in events] == [(1, "success", True)]
    if task == "stamp":  # KFP's own cache: the hit is timed when the executor looked it up
        consumer = [e for e in trace.read(os.environ["UNIPIPE_TRACE_DIR"], kfp2.run_id)
                    if e["kind"] == "attempt" and e["task"] == "stamp_x"]
        assert events[0]["end"] <= consumer[0]["start"]


def test_key_fn_cache_hits_on_the_same_key_only():
    first = up.run(kfp_cases.key_fn_cache, backend="kubeflow", params={"word": "apple"})
    same_key = up.run(kfp_cases.key_fn_cache, backend="kubeflow", params={"word": "avocado"})
    other = up.run(kfp_cases.key_fn_cache, backend="kubeflow", params={"word": "banana"})
    assert same_key.tasks["shout"].cache_hit and same_key.output == first.output
    assert not other.tasks["shout"].cache_hit and other.output["word"] == "BANANA"


def test_cached_task_with_success_alert_alerts_on_the_hit_too(webhook):
    up.run(kfp_cases.cached_success_alert, backend="kubeflow")
    second = up.run(kfp_cases.cached_success_alert, backend="kubeflow")
    assert second.tasks["cached_announce"].cache_hit
    assert webhook.events() == [("cached_announce", "success")] * 2


def test_ml_training_matches_the_reference_and_caches_features(webhook):
    ref, kfp, got_ref, got_kfp = both(ml_training.training, receivers=(webhook,))
    assert view(kfp) == view(ref)
    assert kfp.state == "success" and kfp.output["registered"].startswith("model-a")
    assert len(kfp.output["scores"]) == 4
    assert got_kfp[0] == got_ref[0] == []  # failure-only alert, run succeeded
    os.environ["UNIPIPE_CACHE_URL"] += "-kubeflow"
    again = up.run(ml_training.training, backend="kubeflow")
    assert again.tasks["compute_features"].cache_hit
    assert again.output == kfp.output


def test_ml_training_failure_alert_reaches_webhook(webhook):
    ref, kfp, got_ref, got_kfp = both(ml_training.training, params={"n_rows": 5},
                                      receivers=(webhook,))
    assert view(kfp) == view(ref)
    assert kfp.tasks["validate_data"].error_type == "ValueError"
    assert kfp.tasks["validate_data"].attempts == 2
    assert got_kfp[0] == got_ref[0] == [(None, "failure")]


def test_a_killed_process_is_a_failed_attempt_and_is_retried():
    ref, kfp, _, _ = both(kfp_cases.killed_process)
    assert view(kfp) == view(ref)
    events = [e for e in trace.read(os.environ["UNIPIPE_TRACE_DIR"], kfp.run_id)
              if e["kind"] == "attempt" and e["task"] == "dies"]
    # the engine-side event for the dead attempt is written after the run: order by attempt
    assert sorted((e["attempt"], e["outcome"], e["error_type"] or "") for e in events) == [
        (1, "failed", "ProcessKilled"), (2, "success", "")]


def test_cache_expiry_is_honoured_although_kfp_caches_never_expire():
    first = up.run(kfp_cases.expiring_cache, backend="kubeflow")
    second = up.run(kfp_cases.expiring_cache, backend="kubeflow")
    assert second.tasks["fresh"].cache_hit and second.output == first.output
    # age every entry past the 30 min expiry instead of waiting for it
    for entry in Path(os.environ["UNIPIPE_CACHE_URL"]).glob("*.json"):
        data = json.loads(entry.read_text())
        data["created"] -= 31 * 60
        entry.write_text(json.dumps(data))
    third = up.run(kfp_cases.expiring_cache, backend="kubeflow")
    assert not third.tasks["fresh"].cache_hit and third.output["at"] > first.output["at"]


def test_resources_and_images_do_not_change_the_local_result():
    ref, kfp, _, _ = both(kfp_cases.placement, params={"x": 7})
    assert view(kfp) == view(ref)
    assert kfp.output == 7


def test_shared_component_runs_each_task_under_its_own_id():
    ref, kfp, _, _ = both(kfp_cases.chain)
    assert view(kfp) == view(ref)
    assert kfp.output == 3
    assert [kfp.tasks[t].attempts for t in ("bump", "bump_2", "bump_3")] == [2, 2, 2]


def test_component_launches_leave_nothing_in_the_temp_folder(tmp_path, monkeypatch):
    """KFP's component command writes its source to `mktemp -d`, a folder per launch that only a
    container throws away: each launch gets its own temp folder, removed when it ends."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    result = up.run(F.fanout, backend="kubeflow", pipeline_root=str(tmp_path / "root"))
    assert result.state == "success" and result.tasks["square"].attempts == 4  # n = 4
    assert list((tmp_path / "tmp").iterdir()) == []
