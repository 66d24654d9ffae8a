"""Fixtures of the harness tests: one conformance suite per session, shared by the per-backend
tests, on the backends the session selected (``-k prefect`` runs the reference and Prefect)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "comparisons" / "cases"
ENGINES = ("airflow", "prefect", "kubeflow")

#: the reference runner's records (case id -> raw record) of the session's conformance suite,
#: once it ran: the lanes that run a subset of the cases on one more engine (Airflow 2.11, the
#: real scheduler) compare with these instead of running the reference runner again
REFERENCE_RUNS: dict[str, dict] = {}


def _selected_backends(session: pytest.Session) -> list[str]:
    names = []
    for item in session.items:
        if item.originalname == "test_backend_conforms" and hasattr(item, "callspec"):
            names.append(item.callspec.params["backend"])
    return [b for b in ("local", *ENGINES) if b in names]


@pytest.fixture(scope="session")
def conformance_suite(request, tmp_path_factory):
    """Every case on the reference runner and the selected backends, side by side (lanes)."""
    from unipipe.harness.cases import discover
    from unipipe.harness.cli import lane_settings
    from unipipe.harness.execute import reference_records, run_suite
    from unipipe.harness.report import write_reports

    backends = _selected_backends(request.session) or ["local"]
    out = tmp_path_factory.mktemp("conformance")
    jobs, shards = lane_settings()  # `unipipe conform`'s settings, so CI measures what users get
    suite = run_suite(discover([CASES]), backends, out / "work", jobs=jobs, shards=shards)
    suite.out_dir = out
    REFERENCE_RUNS.update(reference_records(suite))
    write_reports(suite, out)
    print(f"\nconformance suite: {len(suite.cases)} cases on {', '.join(suite.backends)} in "
          f"{suite.seconds:.0f} s; report: {out / 'report.html'}")
    return suite
