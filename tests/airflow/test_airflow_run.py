"""Pipelines run on a real Airflow 3.3 (``airflow dags test``) equal the reference runner's runs.

Compared per run: the state, the output, every task's state, attempts and cache hit, and the
alerts delivered to real receivers on 127.0.0.1. Waits are checked against the IR formula from
the shim's trace (each try's start and end), with a tolerance for Airflow's one-second poll.
"""

from __future__ import annotations

import os

import ml_training
import pipelines_airflow as pa
import pytest
from pipelines import features

import unipipe as up
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


def both(pipeline, params=None, **extra):
    """The same pipeline on Airflow and on the reference runner, each with its own cache."""
    airflow = up.run(pipeline, backend="airflow", params=params, **extra)
    cache = os.environ["UNIPIPE_CACHE_URL"]
    os.environ["UNIPIPE_CACHE_URL"] = cache + "-local"
    try:
        local = up.run(pipeline, backend="local", params=params)
    finally:
        os.environ["UNIPIPE_CACHE_URL"] = cache
    return airflow, local


def gaps(result, task: str) -> list[float]:
    times = result.tasks[task].attempt_times
    return [times[i + 1][0] - times[i][1] for i in range(len(times) - 1)]


# ---------------------------------------------------------------- data flow, templating


def test_fanout_and_a_jinja_looking_parameter_reach_the_task_unchanged():
    airflow, local = both(features.fanout)
    assert_same(airflow, local)
    assert airflow.output["label"] == "squares {{ ds }}"
    assert airflow.output["squares"] == [1, 4, 9, 16] and airflow.output["total"] == 30
    assert airflow.tasks["square"].attempts == 4 and "square[3]" in airflow.tasks


def test_map_over_literals_parameters_and_key_paths_with_a_negated_gate():
    airflow, local = both(pa.map_sources, {"numbers": [5, 6]})
    assert_same(airflow, local)
    assert airflow.output == {"literal": ["X {{ DS }}!", "Y!"], "param": [10, 12],
                              "path": ["A {{ DS }}?", "B?"], "branch": "2 rows, not ok"}


def test_hostile_strings_are_data_on_a_real_run():
    airflow, local = both(pa.hostile)
    assert_same(airflow, local)
    assert airflow.output == {"text": pa.HOSTILE, "extra": pa.HOSTILE}


def test_ml_training_pipeline_matches_the_reference():
    airflow, local = both(ml_training.training)
    assert_same(airflow, local)
    assert airflow.tasks["register_model"].state == "success"
    assert len(airflow.output["scores"]) == 4


# ---------------------------------------------------------------- conditions


@pytest.mark.parametrize("value,runs", [(0.9, True), (0.5, False)])
def test_quality_gate_runs_or_skips_the_guarded_tasks(value, runs):
    airflow, local = both(features.quality_gate, {"value": value})
    assert_same(airflow, local)
    assert airflow.tasks["after_register"].state == ("success" if runs else "skipped")


# ---------------------------------------------------------------- retries


def test_retries_wait_exactly_the_ir_delays_through_the_retry_policy():
    airflow, local = both(features.retry_then_succeed)
    assert_same(airflow, local)
    retry = up.load(features.retry_then_succeed).task("flaky").policies.retry.model_dump()
    for k, gap in enumerate(gaps(airflow, "flaky"), start=1):
        assert base_delay(retry, k) <= gap <= base_delay(retry, k) + POLL


def test_capped_backoff_slept_by_the_shim_matches_the_formula_on_the_3_0_dialect():
    """The pre-3.3 path (engine delay 0, the shim sleeps the IR wait) on a real run."""
    airflow, local = both(pa.capped_backoff, {"fail_times": 3}, dialect="3.0")
    assert_same(airflow, local)
    retry = up.load(pa.capped_backoff).task("slow_to_work").policies.retry.model_dump()
    measured = gaps(airflow, "slow_to_work")
    assert len(measured) == 3
    for k, gap in enumerate(measured, start=1):  # 1s, 2s, then capped at 2.5s
        assert base_delay(retry, k) <= gap <= base_delay(retry, k) + POLL


def test_jitter_lengthens_each_wait_by_at_most_its_share():
    airflow, local = both(features.jitter)
    assert_same(airflow, local)
    for gap in gaps(airflow, "jittery"):
        assert 0.5 <= gap <= 0.5 * 1.5 + POLL


@pytest.mark.parametrize("dialect", ["3.3", "3.0"])
def test_a_non_retryable_error_fails_at_once(dialect):
    """3.3: the retry policy says FAIL; 3.0: the adapter raises AirflowFailException."""
    airflow, local = both(features.non_retryable, dialect=dialect)
    assert_same(airflow, local)
    assert airflow.tasks["bad_value"].attempts == 1
    assert airflow.tasks["bad_value"].error_type == "ValueError"


def test_retries_exhausted_alerts_real_receivers_once_per_retry_and_failure(webhook, smtp):
    airflow = up.run(features.retries_exhausted, backend="airflow")
    hooks, mails = list(webhook.events()), len(smtp.messages)
    webhook.received.clear()
    smtp.messages.clear()
    local = up.run(features.retries_exhausted, backend="local")
    assert_same(airflow, local)
    assert hooks == webhook.events() == [("always_fails", "retry"), ("always_fails", "retry"),
                                         ("always_fails", "failure")]
    assert mails == len(smtp.messages) == 1
    assert airflow.tasks["never_runs"].state == "upstream_failed"
    assert airflow.tasks["independent"].state == "success"


def test_success_alerts_for_task_and_pipeline(webhook):
    airflow = up.run(features.success_alert, backend="airflow")
    assert sorted(webhook.events(), key=str) == [("announce", "success"), (None, "success")]
    local = up.run(features.success_alert, backend="local")
    assert_same(airflow, local)


# ---------------------------------------------------------------- cache, timeout


def test_second_run_hits_the_cache():
    first = up.run(features.cached, backend="airflow")
    second = up.run(features.cached, backend="airflow")
    assert first.tasks["expensive"].cache_hit is False
    assert second.tasks["expensive"].cache_hit is True
    assert second.output == first.output  # the stored value, not a new time stamp
    local = up.run(features.cached, backend="local")  # same store: a hit for the reference too
    assert_same(second, local, outputs=False)


def test_timeout_stops_each_try_and_is_retried():
    airflow, local = both(features.timeout)
    assert_same(airflow, local)
    assert airflow.tasks["hangs"].attempts == 2
    assert airflow.tasks["hangs"].error_type == "TaskTimeout"
    for start, end in airflow.tasks["hangs"].attempt_times:
        assert 1.9 <= end - start <= 2 + POLL


# ---------------------------------------------------------------- a real scheduler


@pytest.mark.slow
def test_smoke_run_under_a_real_scheduler_triggered_through_the_rest_api():
    airflow = up.run(features.fanout, backend="airflow", mode="scheduler")
    local = up.run(features.fanout, backend="local")
    assert_same(airflow, local)
    assert airflow.run_id.startswith("manual__")
