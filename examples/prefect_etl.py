"""The seeds' Prefect ETL flow, written in unipipe without dropping its orchestration.

The flow in the articles reads, in Prefect::

    @task(retries=3, retry_delay_seconds=[1, 2, 4])
    def fetch_page(source: str, page: int) -> list[dict]: ...

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=12))
    def clean(rows: list[dict]) -> list[dict]: ...

    @flow(name="extract")
    def extract_flow(source: str, pages: int) -> list[dict]:
        return clean(fetch_page.map(source, range(pages)))

    @flow(name="load", retries=1, retry_delay_seconds=2)
    def load_flow(rows: list[dict]) -> str: ...

    @flow(name="etl", retries=1)
    def etl(source: str = "crm", pages: int = 3):
        rows = extract_flow(source, pages)           # a subflow
        return report(load_flow(rows))               # another subflow, retried on its own

In unipipe each ``@flow`` called inside another is a ``@up.pipeline`` called inside another: a
sub-pipeline, which is a Prefect subflow again, an Airflow TaskGroup, and a KFP pipeline used as
a component; the top flow's ``retries=1`` is ``@up.pipeline(retries=1)`` (Prefect's own flow
retries; Airflow and KFP have no retry of a whole run and refuse it before writing anything).
"""

from __future__ import annotations

import unipipe as up


@up.task
def pages_of(pages: int) -> list:
    return list(range(pages))


@up.task(retry=up.Retry(max_retries=3, delay="1s", backoff=2.0))
def fetch_page(source: str, page: int) -> list:
    """One page of records from the source system (deterministic here)."""
    return [{"id": page * 10 + i, "source": source, "value": (page + 1) * (i + 1)}
            for i in range(5)]


@up.task(cache=up.Cache(expire="12h"))
def clean(pages: list) -> list:
    rows = [row for page in pages for row in page]
    return sorted((r for r in rows if r["value"] % 4), key=lambda r: r["id"])


@up.task(retries=1)
def write_rows(rows: list) -> int:
    return len(rows)


@up.task
def report(written: int, source: str) -> str:
    return f"{written} rows from {source} loaded"


@up.pipeline(name="extract")
def extract_flow(source: str, pages: int):
    """Fetch every page (fanned out) and clean the records."""
    return clean(fetch_page.map(page=pages_of(pages), source=source))


@up.pipeline(name="load", retries=1, retry_delay="1s")
def load_flow(rows: list):
    """Write the records to the warehouse."""
    return write_rows(rows)


@up.pipeline(name="etl", retries=1, tags=["etl", "example"])
def etl(source: str = "crm", pages: int = 3):
    """Extract (a sub-pipeline), load (another), report."""
    rows = extract_flow(source, pages)
    return report(load_flow(rows), source)
