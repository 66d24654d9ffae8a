"""Fault: fail k times, then succeed (k = 2, with exponential backoff capped by max_delay)."""

import unipipe as up


@up.task(retry=up.Retry(max_retries=3, delay="0.5s", backoff=2.0, max_delay="0.8s",
                        retry_on=(ConnectionError,)))
def flaky(fail_times: int) -> str:
    attempt = up.current().attempt
    if attempt <= fail_times:
        raise ConnectionError(f"attempt {attempt} failed on purpose")
    return f"ok after {attempt}"


@up.pipeline(name="case-retry-fail-twice")
def pipe(fail_times: int = 2):
    return flaky(fail_times)
