"""Fault: a non-retryable error (fail_on) ends the task at once despite retries left."""

import unipipe as up


@up.task(retry=up.Retry(max_retries=3, delay="0.2s", fail_on=(ValueError,)))
def parse(text: str) -> int:
    return int(text)


@up.pipeline(name="case-non-retryable-fail-on")
def pipe(text: str = "not a number"):
    return parse(text)
