"""The isolated lane of ``conform --isolated --store s3://...`` on the required cases, as each
backend's test runs it (imported by tests/{airflow,kubeflow,prefect}/test_*isolated.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: the reference runner's records of the required cases (case id -> raw record), made by the
#: first isolated lane of a session and reused by the others: the reference runner's result
#: does not depend on the backend it is compared with, and its lane costs each lane about
#: 95 s of a 2-core machine
_REFERENCE: dict[str, dict[str, Any]] = {}


#: the backends whose isolated-lane test this session runs (tests/conftest.py sets it from the
#: collected tests)
SELECTED: set[str] = set()
#: lanes that run side by side when both are selected: a KFP or Prefect isolated run spends
#: much of its time waiting (workers polling, processes starting), so the two lanes together
#: take little more than the longer one; each backend's test still asserts its own lane. The
#: Airflow lane (scheduler, Celery workers, Redis) stays alone: with all three side by side
#: (2026-12-07, load average 4.5 on 2 cores) each lane went at about half its speed alone (13 of
#: 27 Airflow cases in 12.5 min), slower than one after the other
SIDE_BY_SIDE = ("kubeflow", "prefect")
#: failures of a lane that ran beside another's, kept for that backend's test
_DONE: dict[str, dict[str, Any]] = {}


def required_case_failures(backend: str, bucket: str, work: Path) -> dict[str, Any]:
    """Every required case on ``backend``'s isolated lane with a store in ``bucket``: the
    failures, case -> (status, reason, diffs); never vacuous (the large-value case is there)."""
    from unipipe.harness.cases import discover
    from unipipe.harness.execute import REFERENCE, Placement, reference_records, run_suite

    if backend in _DONE:
        return _DONE.pop(backend)
    required = [c for c in discover([ROOT / "comparisons" / "cases"]) if c.required]
    assert "store_large_value" in {c.id for c in required}
    backends = [backend]
    if backend in SIDE_BY_SIDE:
        backends += [b for b in SIDE_BY_SIDE if b != backend and b in SELECTED]
    suite = run_suite(required, backends, work, jobs=1 + len(backends),
                      reference=dict(_REFERENCE),
                      placement=Placement(store=f"s3://{bucket}/conform", isolated=True))
    _REFERENCE.update(reference_records(suite))
    for name in backends:
        assert {o.case for (_c, b), o in suite.outcomes.items() if b == name} == {
            c.id for c in required}
        _DONE[name] = {o.case: (o.status, o.reason, o.diffs) for o in suite.failures()
                       if o.backend in (name, REFERENCE)}
    return _DONE.pop(backend)
