"""The conformance suite: every case on the reference runner and on each backend.

One test per backend so a failing backend is visible on its own; the runs themselves happen
once per session, all backends side by side (see conftest.py).
"""

from __future__ import annotations

import json

import pytest

from .conftest import ENGINES, REFERENCE_RUNS, ROOT


def _explain(suite, backend):
    lines = []
    for o in sorted(suite.failures(), key=lambda o: o.case):
        if o.backend == backend:
            lines.append(f"{o.case}: {o.status}: {o.reason}")
            lines += [f"    {d}" for d in o.diffs[1:8]]
    return "\n".join(lines)


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("backend", ["local", *ENGINES])
def test_backend_conforms(conformance_suite, backend):
    suite = conformance_suite
    outcomes = [suite.outcome(c.id, backend) for c in suite.cases]
    assert [o.case for o in outcomes if not o.ok] == [], _explain(suite, backend)
    # Never vacuous: the required tier ran and passed on this backend.
    required = [o for o in outcomes if any(c.id == o.case and c.required for c in suite.cases)]
    assert len(required) >= 11
    assert {o.status for o in required} == {"pass"}


@pytest.mark.timeout(3600)
def test_recorded_results_match_this_run(conformance_suite):
    """comparisons/results/summary.json (what MATRIX.md is built from) says what happened here."""
    recorded = json.loads((ROOT / "comparisons" / "results" / "summary.json").read_text())
    stale = []
    for case in conformance_suite.cases:
        for backend in conformance_suite.backends:
            now = conformance_suite.outcome(case.id, backend).status
            then = recorded["cases"].get(case.id, {}).get("results", {}).get(backend, {})
            if then.get("status") != now:
                stale.append(f"{case.id} on {backend}: recorded {then.get('status')}, now {now}")
    assert stale == [], "re-record with `unipipe conform comparisons/cases --out " \
                        "comparisons/results` and `unipipe matrix`:\n" + "\n".join(stale)


#: the cases the real-scheduler smoke set runs (LocalExecutor, ``airflow standalone``): what no
#: other CI test checks under a real scheduler. The isolated Airflow lane
#: (tests/airflow/test_airflow_isolated.py) already runs every required case under the real
#: scheduler with the CeleryExecutor, retries, alerts and the cache included; scripts/nightly.sh
#: runs every case on ``airflow@scheduler``. Trimmed from 5 cases (254 s in a CI run that took
#: 68 min) to these two: the pool's concurrency limit and the run's deadline (the shim stops the
#: try from a process forked from its zygote inside Airflow's task process).
SMOKE = ("map_max_parallel", "pipeline_timeout_fails")


@pytest.mark.slow
@pytest.mark.airflow
@pytest.mark.timeout(1800)
def test_airflow_real_scheduler_smoke_set(tmp_path):
    """A smoke set on Airflow's real scheduler (``airflow standalone``), not ``dags test``."""
    from unipipe.harness.cases import load_case
    from unipipe.harness.execute import run_suite

    from .conftest import CASES

    suite = run_suite([load_case(CASES / c) for c in SMOKE], ["airflow@scheduler"], tmp_path,
                      reference=dict(REFERENCE_RUNS))
    assert suite.backends == ["local", "airflow@scheduler"]
    assert [(o.case, o.status) for o in suite.failures()] == [], _explain(
        suite, "airflow@scheduler")
    # the real scheduler runs mapped instances side by side: max_active_tis_per_dagrun=2 binds
    from unipipe.harness.compare import peak_concurrency

    limited = suite.outcome("map_max_parallel", "airflow@scheduler").runs[0]
    assert peak_concurrency(limited, "load") == 2
    # the shim's deadline stops the hanging try before the scheduler's dagrun_timeout backstop
    # (30 s later) would mark it skipped
    timed_out = suite.outcome("pipeline_timeout_fails", "airflow@scheduler").runs[0]
    assert timed_out["tasks"]["hang"]["state"] == "failed"
    assert timed_out["tasks"]["hang"]["error_type"] == "PipelineTimeout"
    assert timed_out["tasks"]["publish"]["state"] == "upstream_failed"


@pytest.mark.airflow
@pytest.mark.timeout(1800)
def test_airflow_2_11_conforms_on_the_required_cases(tmp_path):
    """``unipipe conform --backends airflow@2.11`` on the required tier: a real Airflow 2.11 in
    its own environment (built on first use under the checkout's .cache/ by the lane itself)
    running the 2.11 dialect. All 37 cases pass there too (``unipipe conform comparisons/cases
    --backends airflow@2.11``, about 2 minutes); the required tier runs in CI (about 1 minute)."""
    pytest.importorskip("unipipe_airflow")
    from unipipe.harness.cases import discover
    from unipipe.harness.execute import run_suite

    from .conftest import CASES

    required = [c for c in discover([CASES]) if c.required]
    suite = run_suite(required, ["airflow@2.11"], tmp_path, jobs=4, shards=2,
                      reference=dict(REFERENCE_RUNS))
    assert suite.backends == ["local", "airflow@2.11"]
    assert [(o.case, o.status) for o in suite.failures()] == [], _explain(suite, "airflow@2.11")
    outcomes = [suite.outcome(c.id, "airflow@2.11") for c in required]
    assert len(outcomes) >= 15 and {o.status for o in outcomes} == {"pass"}
    # it ran on 2.11: each run's DAG was written for the 2.11 dialect
    dags = list((tmp_path / "homes").glob("airflow@2.11-*/workdir/airflow/dags/*_dag.py"))
    assert dags and all("for airflow 2.11." in d.read_text().splitlines()[0] for d in dags)
    retry = suite.outcome("retry_fail_twice", "airflow@2.11").runs[0]
    assert retry["tasks"]["flaky"]["attempts"] == 3
    cached = suite.outcome("cache_second_run", "airflow@2.11").runs[1]
    assert cached["tasks"]["costly_sum"]["cache_hit"] is True
