"""The reference runner: the IR's semantics, asserted value by value."""

from __future__ import annotations

import random
import time

import pytest
from core import faults
from pipelines import features as f

import unipipe as up
from unipipe.local.runner import LocalRunner
from unipipe.runtime import retry as rr
from unipipe.runtime import trace

# ---------------------------------------------------------------- the retry-delay formula


def test_retry_delay_formula_constant_exponential_and_capped():
    constant = {"max_retries": 3, "delay": 2.0, "backoff": 1.0}
    assert [rr.base_delay(constant, k) for k in (1, 2, 3)] == [2.0, 2.0, 2.0]
    expo = {"delay": 2.0, "backoff": 3.0}
    assert [rr.base_delay(expo, k) for k in (1, 2, 3, 4)] == [2.0, 6.0, 18.0, 54.0]
    capped = {"delay": 2.0, "backoff": 3.0, "max_delay": 10.0}
    assert [rr.base_delay(capped, k) for k in (1, 2, 3, 4)] == [2.0, 6.0, 10.0, 10.0]
    # the cap applies in constant mode too (unlike Airflow, see BACKEND_FACTS)
    assert rr.base_delay({"delay": 30.0, "max_delay": 5.0}, 1) == 5.0
    assert rr.delay_schedule({"max_retries": 4, **capped}) == [2.0, 6.0, 10.0, 10.0]


def test_retry_delay_is_capped_by_max_delay_even_for_huge_exponents():
    assert rr.base_delay({"delay": 1.0, "backoff": 10.0, "max_delay": 60.0}, 400) == 60.0


def test_jitter_only_lengthens_and_stays_within_its_fraction():
    r = {"delay": 4.0, "backoff": 2.0, "jitter": 0.25}
    rng = random.Random(1)
    waits = [rr.retry_delay(r, 2, rng) for _ in range(500)]
    assert min(waits) >= 8.0 and max(waits) < 8.0 * 1.25
    assert max(waits) - min(waits) > 1.5  # it really varies
    assert rr.jitter_extra({"delay": 4.0}, 1) == 0.0


def test_retry_numbers_start_at_one():
    with pytest.raises(ValueError):
        rr.base_delay({"delay": 1.0}, 0)


def test_exception_filters():
    spec = {"retry_on": ["builtins:ConnectionError"], "fail_on": ["builtins:ConnectionResetError"]}
    assert rr.is_retryable(ConnectionRefusedError(), spec)  # subclass of ConnectionError
    assert not rr.is_retryable(ConnectionResetError(), spec)  # fail_on wins
    assert not rr.is_retryable(KeyError(), spec)
    assert rr.is_retryable(KeyError(), {})
    assert not rr.is_retryable(up.NonRetryable("x"), {})


# ---------------------------------------------------------------- retries, observed


def test_observed_waits_follow_the_formula():
    slept: list[float] = []
    runner = LocalRunner(sleep=lambda s: (slept.append(s), time.sleep(s)))
    result = runner.run(faults.capped_backoff.ir)
    assert result.state == "success"
    assert result.output == 4
    assert result.tasks["fail_three_times"].attempts == 4
    assert slept == [0.2, 0.4, 0.5]  # 0.2 * 2**k, capped at 0.5
    times = result.tasks["fail_three_times"].attempt_times
    gaps = [times[i + 1][0] - times[i][1] for i in range(3)]
    for gap, want in zip(gaps, slept):
        assert want <= gap < want + 0.5


def test_retry_then_succeed_counts_attempts():
    result = up.run(f.retry_then_succeed, params={"fail_times": 2})
    assert result.state == "success"
    assert result.output == "ok after 3"
    assert result.tasks["flaky"].attempts == 3


def test_fail_on_stops_at_the_first_attempt():
    result = up.run(f.non_retryable)
    assert result.state == "failed"
    t = result.tasks["bad_value"]
    assert (t.state, t.attempts, t.error_type) == ("failed", 1, "ValueError")


def test_error_outside_retry_on_is_not_retried():
    result = up.run(faults.retry_on_filter)
    assert result.tasks["wrong_error"].attempts == 1
    assert result.tasks["wrong_error"].error_type == "KeyError"


def test_nonretryable_exception_overrides_pipeline_defaults():
    result = up.run(faults.non_retryable_explicit)
    assert result.tasks["explicit_stop"].attempts == 1


def test_jitter_waits_stay_in_range():
    slept: list[float] = []
    result = LocalRunner(sleep=slept.append).run(f.jitter.ir, {"fail_times": 2})
    assert result.output == 3
    assert len(slept) == 2
    assert all(0.5 <= s <= 0.75 for s in slept)


def test_killed_process_fails_only_that_attempt():
    result = up.run(faults.killed)
    t = result.tasks["killed_once"]
    assert (result.state, t.attempts, t.error_type) == ("success", 2, None)
    assert result.output == "survived"


def test_checkpoint_resumes_across_retries():
    result = up.run(faults.checkpoint, params={"steps": 6})
    assert result.state == "success"
    assert result.tasks["checkpointing"].attempts == 2
    assert result.output == 4  # attempt 2 started from the 4 steps attempt 1 finished


# ---------------------------------------------------------------- timeouts


def test_task_hanging_past_its_timeout_is_stopped_and_retried():
    start = time.time()
    result = up.run(f.timeout, params={"seconds": 60})
    elapsed = time.time() - start
    t = result.tasks["hangs"]
    assert result.state == "failed"
    assert (t.attempts, t.error_type) == (2, "TaskTimeout")
    assert elapsed < 15  # two 2-second attempts, not a minute
    for s, e in t.attempt_times:
        assert 1.9 <= e - s < 5


def test_inline_isolation_enforces_timeouts_with_a_signal():
    result = LocalRunner(isolation="inline").run(f.timeout.ir, {"seconds": 30})
    assert result.tasks["hangs"].error_type == "TaskTimeout"
    assert result.tasks["hangs"].attempts == 2


def test_fast_task_within_timeout_succeeds():
    result = up.run(f.timeout, params={"seconds": 0.1})
    assert result.state == "success" and result.output == "woke up"


# ---------------------------------------------------------------- cache


def test_cache_miss_then_hit_returns_the_stored_value():
    first = up.run(f.cached, params={"x": 3})
    second = up.run(f.cached, params={"x": 3})
    assert first.tasks["expensive"].cache_hit is False
    assert second.tasks["expensive"].cache_hit is True
    assert second.output == first.output


def test_cache_misses_on_different_inputs():
    up.run(f.cached, params={"x": 3})
    other = up.run(f.cached, params={"x": 4})
    assert other.tasks["expensive"].cache_hit is False
    assert other.output["x"] == 4


def test_cache_entry_expires():
    first = up.run(faults.short_cache)
    hit = up.run(faults.short_cache)
    assert hit.tasks["short_lived"].cache_hit and hit.output == first.output
    time.sleep(1.2)
    expired = up.run(faults.short_cache)
    assert not expired.tasks["short_lived"].cache_hit
    assert expired.output > first.output


def _with_task(ir, task_id, **changes):
    tasks = tuple(t.model_copy(update=changes) if t.id == task_id else t for t in ir.tasks)
    return ir.model_copy(update={"tasks": tasks})


def test_cache_version_bump_and_source_change_miss():
    from unipipe.ir import models as m

    ir = f.cached.ir
    up.run(ir, params={"x": 5})
    assert up.run(ir, params={"x": 5}).tasks["expensive"].cache_hit
    task = ir.task("expensive")
    bumped = _with_task(ir, "expensive", policies=task.policies.model_copy(
        update={"cache": m.Cache(version="2", expire=3600)}))
    assert not up.run(bumped, params={"x": 5}).tasks["expensive"].cache_hit
    edited = _with_task(ir, "expensive", source_hash="f" * 64)
    assert not up.run(edited, params={"x": 5}).tasks["expensive"].cache_hit
    assert up.run(edited, params={"x": 5}).tasks["expensive"].cache_hit


def test_custom_cache_key_function():
    a = up.run(faults.keyed_cache, params={"word": "apple"})
    b = up.run(faults.keyed_cache, params={"word": "avocado"})
    c = up.run(faults.keyed_cache, params={"word": "banana"})
    assert b.tasks["keyed"].cache_hit and b.output == a.output
    assert not c.tasks["keyed"].cache_hit


# ---------------------------------------------------------------- data flow, conditions, map


def test_fanout_map_in_order_with_key_path_and_after():
    result = up.run(f.fanout, params={"n": 4})
    assert result.state == "success"
    assert result.output == {"squares": [1, 4, 9, 16], "total": 30,
                             "label": "squares {{ ds }}", "last": "done"}
    assert [result.tasks[f"square[{i}]"].output for i in range(4)] == [1, 4, 9, 16]
    assert result.tasks["square"].attempts == 4


def test_map_over_empty_list_succeeds_with_empty_output():
    result = up.run(f.fanout, params={"n": 0})
    assert result.output["squares"] == [] and result.output["total"] == 0


def test_condition_true_runs_the_body():
    result = up.run(f.quality_gate, params={"value": 0.9, "threshold": 0.8})
    assert result.output["registered"] == "registered 0.9"
    assert result.output["shout"] == "REGISTERED 0.9"


def test_condition_false_skips_body_and_its_dependents():
    result = up.run(f.quality_gate, params={"value": 0.5, "threshold": 0.8})
    assert result.state == "success"
    assert result.tasks["register"].state == "skipped"
    assert result.tasks["after_register"].state == "skipped"
    assert result.tasks["register"].attempts == 0
    assert result.output == {"metrics": {"value": 0.5}, "registered": None, "shout": None}


def test_failure_marks_downstream_and_keeps_independent_branches():
    result = up.run(f.retries_exhausted)
    assert result.state == "failed"
    assert result.tasks["always_fails"].attempts == 3
    assert result.tasks["never_runs"].state == "upstream_failed"
    assert result.tasks["independent"].state == "success"
    assert result.output is None


def test_every_attempt_writes_one_trace_event(isolated_stores):
    result = up.run(f.retry_then_succeed, params={"fail_times": 2})
    events = [e for e in trace.read(isolated_stores / "trace", result.run_id) if e["kind"] == "attempt"]
    assert [(e["attempt"], e["outcome"]) for e in events] == [(1, "failed"), (2, "failed"), (3, "success")]
    assert events[0]["error_type"] == "ConnectionError"


def test_ml_example_runs_and_skips_registration_below_threshold():
    from ml_training import training

    good = up.run(training)
    assert good.state == "success"
    assert good.output["metrics"]["r2"] > 0.99
    assert good.output["registered"].startswith("model-a")
    assert len(good.output["scores"]) == 4
    strict = up.run(training, params={"threshold": 0.9999})
    assert strict.tasks["register_model"].state == "skipped"
    assert strict.tasks["compute_features"].cache_hit
