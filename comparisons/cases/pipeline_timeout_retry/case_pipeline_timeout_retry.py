"""The first try of the run hangs past the pipeline's timeout; the second try is quick."""

import time

import unipipe as up
from unipipe.runtime.store import read_bytes, write_bytes


@up.task
def extract(n: int) -> int:
    return n * 2


@up.task
def crunch(value: int) -> int:
    url = f"{up.current().scratch_url()}/started"
    first = read_bytes(url) is None
    write_bytes(url, b"1")
    if first:
        time.sleep(120)  # stopped by the run's timeout long before this ends
    return value + 1


@up.task
def report(value: int) -> str:
    return f"result {value}"


@up.pipeline(name="case-pipeline-timeout-retry", retries=1, timeout="10s")
def pipe(n: int = 20):
    return report(crunch(extract(n)))
