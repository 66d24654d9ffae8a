"""A constant delay between retries (no backoff)."""

import unipipe as up


@up.task(retry=up.Retry(max_retries=1, delay="1s"))
def fetch() -> str:
    if up.current().attempt == 1:
        raise TimeoutError("slow upstream")
    return "fetched"


@up.pipeline(name="case-retry-constant-delay")
def pipe():
    return fetch()
