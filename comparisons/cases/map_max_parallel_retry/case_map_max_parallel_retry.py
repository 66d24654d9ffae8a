"""A limited fan-out whose element fails once: its retry waits for a slot like any attempt;
and one run of the pipeline at a time."""

import time

import unipipe as up


@up.task
def batches(n: int) -> list:
    return list(range(n))


@up.task(retry=up.Retry(max_retries=1, delay="0.2s"))
def load(batch: int) -> int:
    ctx = up.current()
    time.sleep(0.4)
    if ctx.map_index == 1 and ctx.attempt == 1:
        raise ConnectionError("batch 1 lost its connection")
    return batch * 10


@up.pipeline(name="case-map-max-parallel-retry", max_active_runs=1)
def pipe(n: int = 4):
    return load.map(batch=batches(n), max_parallel=1)
