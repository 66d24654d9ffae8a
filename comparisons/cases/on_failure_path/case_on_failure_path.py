"""A failure path: run_if="one_failed" runs only when an upstream task failed."""

import unipipe as up


@up.task
def validate(broken: bool) -> bool:
    if broken:
        raise ValueError("input file is malformed")
    return True


@up.task
def ingest(ok: bool) -> str:
    return "ingested"


@up.task(run_if="one_failed")
def quarantine(where: str) -> str:
    return f"quarantined to {where}"


@up.pipeline(name="case-on-failure-path")
def pipe(broken: bool = True, where: str = "bad/"):
    checked = validate(broken)
    ingested = ingest(checked)
    quarantine(where).after(checked, ingested)
    return ingested
