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


def required_case_failures(backend: str, bucket: str, work: Path) -> dict[str, Any]:
    """Every required case on ``backend``'s isolated lane with a store in ``bucket``: the
    failures, case -> (status, reason, diffs); never vacuous (the large-value case is there)."""
    from unipipe.harness.cases import discover
    from unipipe.harness.execute import Placement, reference_records, run_suite

    required = [c for c in discover([ROOT / "comparisons" / "cases"]) if c.required]
    assert "store_large_value" in {c.id for c in required}
    suite = run_suite(required, [backend], work, jobs=2, reference=dict(_REFERENCE),
                      placement=Placement(store=f"s3://{bucket}/conform", isolated=True))
    _REFERENCE.update(reference_records(suite))
    assert {o.case for (_c, b), o in suite.outcomes.items() if b == backend} == {
        c.id for c in required}
    return {o.case: (o.status, o.reason, o.diffs) for o in suite.failures()}
