"""Jitter only lengthens a wait: each wait lies in [delay, delay * (1 + jitter)]."""

import unipipe as up


@up.task(retry=up.Retry(max_retries=2, delay="0.5s", jitter=0.5))
def jittery(fail_times: int) -> int:
    attempt = up.current().attempt
    if attempt <= fail_times:
        raise ConnectionError("again")
    return attempt


@up.pipeline(name="case-retry-jitter")
def pipe(fail_times: int = 2):
    return jittery(fail_times)
