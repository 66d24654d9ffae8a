"""A cleanup task (run_if="all_done") runs after its upstream failed; the run still fails."""

import unipipe as up


@up.task(retry=up.Retry(max_retries=1, delay="0.5s"))
def load(rows: int) -> int:
    raise ConnectionError(f"warehouse unreachable while loading {rows} rows")


@up.task
def publish(count: int) -> str:
    return f"published {count}"


@up.task(run_if="all_done")
def drop_scratch(scratch: str) -> str:
    return f"dropped {scratch}"


@up.pipeline(name="case-cleanup-after-failure")
def pipe(rows: int = 10, scratch: str = "tmp_schema"):
    loaded = load(rows)
    published = publish(loaded)
    drop_scratch(scratch).after(loaded, published)
    return published
