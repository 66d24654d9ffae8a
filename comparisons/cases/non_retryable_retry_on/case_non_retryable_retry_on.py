"""An error that retry_on does not list is not retried."""

import unipipe as up


@up.task(retry=up.Retry(max_retries=3, delay="0.2s", retry_on=(ConnectionError, TimeoutError)))
def lookup(key: str) -> str:
    return {"a": "alpha"}[key]


@up.pipeline(name="case-non-retryable-retry-on")
def pipe(key: str = "missing"):
    return lookup(key)
