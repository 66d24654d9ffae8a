"""Judging traces: delays within tolerance, ordering, the reference, and strict declarations."""

from __future__ import annotations

from pathlib import Path

from unipipe.harness.cases import Declared, Expectation, case_ir, load_case
from unipipe.harness.compare import (
    check_delays,
    check_expectation,
    check_order,
    compare_runs,
)
from unipipe.harness.execute import _Availability, judge
from unipipe.harness.normalise import normalise_run
from unipipe.ir.features import Feature

CASES = Path(__file__).resolve().parents[2] / "comparisons" / "cases"
RETRY = load_case(CASES / "retry_fail_twice")  # delay 0.5s, backoff 2, max_delay 0.8s
TOL = {"early": 0.1, "late": 1.0, "late_ratio": 0.5}


def _run(starts_ends, state="success", task="flaky", alerts=(), output="ok after 3"):
    log = []
    for i, (s, e) in enumerate(starts_ends, start=1):
        last = i == len(starts_ends)
        log.append({"attempt": i, "start": s, "end": e, "cache_hit": False, "source": "shim",
                    "outcome": "success" if last and state == "success" else "failed",
                    "error_type": None if last and state == "success" else "ConnectionError"})
    return {"status": "ok", "state": state, "output": output, "error": None, "notes": [],
            "alerts": list(alerts),
            "tasks": {task: {"state": state, "attempts": len(log), "cache_hit": False,
                             "aggregate": False, "attempt_log": log, "output": output}}}


def test_waits_that_follow_the_policy_pass():
    ir = case_ir(RETRY)
    run = _run([(0.0, 0.1), (0.6, 0.7), (1.5, 1.6)])  # waited 0.5s then 0.8s (capped)
    assert check_delays(run, ir, TOL) == []


def test_a_retry_sooner_than_the_policy_is_a_difference():
    ir = case_ir(RETRY)
    run = _run([(0.0, 0.1), (0.15, 0.2), (1.0, 1.1)])  # waited 0.05s instead of 0.5s
    diffs = check_delays(run, ir, TOL)
    assert diffs == ["retry 1 of flaky came after 0.05s, sooner than the policy's 0.50s "
                     "(tolerance 0.1s)"]


def test_a_wait_past_the_cap_plus_tolerance_is_a_difference():
    ir = case_ir(RETRY)
    # retry 2 should wait 0.8s (1.0s capped); 3.0s is beyond 0.8 + 1.0 + 0.4
    run = _run([(0.0, 0.1), (0.6, 0.7), (3.7, 3.8)])
    diffs = check_delays(run, ir, TOL)
    assert len(diffs) == 1 and diffs[0].startswith("retry 2 of flaky came after 3.00s, later")


def test_an_isolated_lane_allows_its_control_planes_round_trip_and_no_more():
    """On an isolated lane a retry goes through the engine's control plane to a sandboxed
    worker: 20 s more before a wait counts as late (a CI run saw 13.6 s where 0.2 s was due);
    an engine default of minutes still fails, and a retry sooner than the policy still does."""
    from unipipe.harness.execute import ISOLATED_LATE, delay_tolerance

    ir = case_ir(RETRY)
    assert delay_tolerance(RETRY, False) == RETRY.tolerance
    wide = delay_tolerance(RETRY, True)
    assert wide == {**RETRY.tolerance, "late": RETRY.tolerance["late"] + ISOLATED_LATE}
    slow = _run([(0.0, 0.1), (14.1, 14.2), (15.0, 15.1)])  # retry 1 after 14 s (0.5 s due)
    assert check_delays(slow, ir, wide) == []
    assert check_delays(slow, ir, RETRY.tolerance)[0].startswith("retry 1 of flaky came after "
                                                                 "14.00s, later")
    minutes = _run([(0.0, 0.1), (300.1, 300.2), (301.0, 301.1)])
    assert check_delays(minutes, ir, wide)[0].startswith("retry 1 of flaky came after 300.00s")
    sooner = _run([(0.0, 0.1), (0.15, 0.2), (1.0, 1.1)])
    assert "sooner" in check_delays(sooner, ir, wide)[0]


def test_a_task_starting_before_its_upstream_ended_is_reported():
    ir = case_ir(load_case(CASES / "after_ordering"))
    run = {"status": "ok", "tasks": {
        "step": {"attempt_log": [{"start": 0.0, "end": 1.0}]},
        "step_2": {"attempt_log": [{"start": 0.5, "end": 1.5}]},
        "step_3": {"attempt_log": [{"start": 1.6, "end": 2.0}]},
    }}
    assert check_order(run, ir) == ["step_2 started at 0.50s, before its upstream step "
                                    "finished at 1.00s"]


def test_expectations_check_state_output_attempts_and_alerts():
    exp = Expectation(state="success", output="ok after 3", check_output=True,
                      tasks={"flaky": {"attempts": 3}},
                      alerts=[{"task": "flaky", "event": "success", "channel": "webhook"}])
    good = _run([(0, 0.1), (0.6, 0.7), (1.5, 1.6)],
                alerts=[{"task": "flaky", "event": "success", "channel": "webhook"}])
    assert check_expectation(good, exp) == []
    bad = _run([(0, 0.1), (0.6, 0.7)], output="ok after 2",
               alerts=[{"task": "flaky", "event": "success", "channel": "webhook"}] * 2)
    assert check_expectation(bad, exp) == [
        "output is 'ok after 2', expected 'ok after 3'",
        "task flaky.attempts is 2, expected 3",
        "alerts differ from expected: unexpected success of flaky via webhook",
    ]


def test_a_refusal_is_expected_exactly():
    exp = Expectation(refused=True)
    assert check_expectation({"status": "refused"}, exp) == []
    assert check_expectation(_run([(0, 1)]), exp) == [
        "expected the run to be refused before running, got success"]


def test_backend_and_reference_are_compared_field_by_field():
    ref = _run([(0, 0.1), (0.6, 0.7), (1.5, 1.6)])
    other = _run([(0, 0.1), (0.6, 0.7), (1.5, 1.6), (2.5, 2.6)],
                 alerts=[{"task": None, "event": "failure", "channel": "email"}])
    assert compare_runs(other, ref, "prefect") == [
        "task flaky.attempts: prefect 4, reference 3",
        "alerts differ from the reference: unexpected failure of pipeline via email",
    ]
    assert compare_runs(ref, ref, "prefect") == []


def test_normalise_prefers_shim_events_and_falls_back_to_engine_records():
    report = {"status": "ok", "start": 100.0, "end": 110.0, "result": {
        "state": "success", "output": 42, "run_id": "r1",
        "tasks": {"t": {"state": "success", "attempts": 2, "cache_hit": False,
                        "attempt_times": [[101.0, 101.5], [102.5, 103.0]]}}}}
    # the first attempt was SIGKILLed: only the engine knows it; the shim saw the second
    events = [{"kind": "attempt", "run_id": "r1", "task": "t", "map_index": None, "attempt": 2,
               "start": 102.6, "end": 102.9, "outcome": "success", "cache_hit": False}]
    run = normalise_run(report, events, [])
    log = run["tasks"]["t"]["attempt_log"]
    assert [(e["source"], e["outcome"], e["start"], e["end"]) for e in log] == [
        ("engine", "failed", 0.0, 0.5), ("shim", "success", 1.6, 1.9)]
    assert run["startup"] == 1.0


def _avail(support=None):
    table = {f.value: ("native", "") for f in Feature}
    table.update(support or {})
    return _Availability(True, "", table)


def _raw_pass():
    return {"compile": None, "runs": [_run([(0, 0.1), (0.6, 0.7), (1.5, 1.6)])]}


def test_a_declared_difference_that_does_not_show_fails_strictly():
    ir = case_ir(RETRY)
    case = RETRY.__class__(**{**RETRY.__dict__, "required": False,
                              "backends": {"prefect": Declared("notyet", "engine lacks it")}})
    ref = _raw_pass()
    outcome = judge(case, "prefect", _raw_pass(), ref, ir, _avail())
    assert (outcome.status, outcome.ok) == ("xpass", False)
    broken = {"compile": None, "runs": [_run([(0, 0.1), (0.6, 0.7)], output="ok after 2")]}
    outcome = judge(case, "prefect", broken, ref, ir, _avail())
    assert (outcome.status, outcome.ok, outcome.reason) == ("xfail", True, "engine lacks it")


def test_unsupported_means_the_compile_refused():
    ir = case_ir(RETRY)
    case = RETRY.__class__(**{**RETRY.__dict__, "required": False})
    support = {"retry.jitter": ("native", ""), "retry.max_delay": ("unsupported", "no cap")}
    refused = {"compile": {"status": "refused", "error": "UnsupportedFeature"}, "runs": []}
    outcome = judge(case, "kubeflow", refused, _raw_pass(), ir, _avail(support))
    assert (outcome.status, outcome.reason) == ("unsupported", "retry.max_delay: no cap")
    compiled = {"compile": {"status": "compiled"}, "runs": []}
    outcome = judge(case, "kubeflow", compiled, _raw_pass(), ir, _avail(support))
    assert outcome.status == "fail"
    # the required tier: no backend may skip it, not even by refusing
    outcome = judge(RETRY, "kubeflow", refused, _raw_pass(), ir, _avail(support))
    assert (outcome.status, outcome.ok) == ("fail", False)


def test_a_backend_without_run_is_notimpl_never_pass():
    ir = case_ir(RETRY)
    raw = {"compile": None, "runs": [{"status": "notimpl", "error": "backend 'x' has no run()",
                                      "tasks": {}, "alerts": [], "notes": []}]}
    outcome = judge(RETRY, "x", raw, _raw_pass(), ir, _avail())
    assert (outcome.status, outcome.ok, outcome.reason) == (
        "notimpl", False, "backend 'x' has no run()")


def test_a_declaration_keyed_by_an_engine_version_holds_for_that_version_only(tmp_path):
    """``backends: {airflow@2.11: ...}`` in a case.yaml: the 2.11 column carries its own
    difference (strict), the plain ``airflow`` column (3.3) none."""
    folder = tmp_path / "retry_fail_twice"
    folder.mkdir()
    (folder / "case_retry_fail_twice.py").write_text(
        (CASES / "retry_fail_twice" / "case_retry_fail_twice.py").read_text())
    text = (CASES / "retry_fail_twice" / "case.yaml").read_text().replace(
        "required: true\n", "")
    (folder / "case.yaml").write_text(
        text + "backends:\n  airflow@2.11: {status: notyet, reason: 2.x has no retry_policy}\n")
    case = load_case(folder)
    assert case.declared("airflow@2.11") == Declared("notyet", "2.x has no retry_policy")
    assert case.declared("airflow") is None
    ir = case_ir(case)
    broken = {"compile": None, "runs": [_run([(0, 0.1), (0.6, 0.7)], output="ok after 2")]}
    assert judge(case, "airflow@2.11", broken, _raw_pass(), ir, _avail()).status == "xfail"
    assert judge(case, "airflow@2.11", _raw_pass(), _raw_pass(), ir, _avail()).status == "xpass"
    assert judge(case, "airflow", broken, _raw_pass(), ir, _avail()).status == "fail"


def test_metrics_artifacts_and_reports_are_expected_and_compared():
    report = {"status": "ok", "result": {
        "state": "success", "output": 1, "run_id": "r", "tasks": {},
        "metrics": {"train": {"loss": 0.25}},
        "artifacts": {"train": {"model": {"type": "Model", "uri": "s3://b/x", "sha256": "ab"},
                                "scores": {"type": "Metrics", "uri": "/k", "sha256": "cd"}}},
        "reports": {"train": "# done"}}}
    run = normalise_run(report, [], [])
    # the Metrics output is compared as metrics, not by its file's bytes (KFP keeps metadata)
    assert run["artifacts"] == {"train": {"model": "ab"}}
    exp = Expectation.parse({"state": "success", "metrics": {"train": {"loss": 0.25}},
                             "artifacts": {"train": {"model": "ab"}},
                             "reports": {"train": "# done"}}, "case.yaml")
    assert check_expectation(run, exp) == []
    wrong = Expectation.parse({"state": "success", "metrics": {"train": {"loss": 0.5}}},
                              "case.yaml")
    assert check_expectation(run, wrong) == [
        "metrics are {'train': {'loss': 0.25}}, expected {'train': {'loss': 0.5}}"]
    other = dict(run, artifacts={"train": {"model": "ff"}}, reports={})
    assert compare_runs(other, run, "airflow") == [
        "artifacts: airflow {'train': {'model': 'ff'}}, reference {'train': {'model': 'ab'}}",
        "reports: airflow {}, reference {'train': '# done'}"]
