"""The pipeline the deploy tests publish: its tasks live in this module (inside the ``deploy``
package), so a deploy must ship the module and the package's ``__init__.py`` next to the DAG/flow."""

from __future__ import annotations

import unipipe as up


@up.task
def extract(n: int) -> list:
    return [i * i for i in range(n)]


@up.task(retries=2, cache=up.Cache(version="1"))
def summarise(rows: list, label: str) -> dict:
    return {"label": label, "count": len(rows), "total": sum(rows)}


@up.task(retry=up.Retry(max_retries=1, delay="1s"))
def publish(summary: dict) -> str:
    return f"{summary['label']}: {summary['count']} rows, total {summary['total']}"


@up.pipeline(name="nightly-report", schedule="30 1 * * *", tags=["reports"])
def nightly_report(n: int = 3, label: str = "squares"):
    """Square some numbers, summarise them, publish a line."""
    return publish(summarise(extract(n), label))
