"""A sub-pipeline whose task exhausts its retries: the group fails and alerts once, the task
after it is upstream_failed, a cleanup after the group still runs, and the run fails."""

import unipipe as up


@up.task
def fetch(n: int) -> list:
    return list(range(n))


@up.task(retries=1)
def validate(rows: list) -> list:
    raise ValueError(f"{len(rows)} rows fail the schema check")


@up.task
def store_rows(rows: list) -> int:
    return len(rows)


@up.task
def report(count: int) -> str:
    return f"{count} rows stored"


@up.task(run_if="all_done")
def release_lock() -> str:
    return "released"


@up.pipeline(name="case-subpipeline-ingest",
             alerts=[up.Alert(on=("failure", "success"), webhook="env:UNIPIPE_HARNESS_WEBHOOK")])
def ingest(rows: list):
    return store_rows(validate(rows))


@up.pipeline(name="case-subpipeline-member-fails")
def pipe(n: int = 5):
    stored = ingest(fetch(n))
    done = report(stored)
    release_lock().after(done)
    return done
