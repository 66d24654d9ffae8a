"""The first attempt hangs and is timed out; the retry is fast and succeeds."""

import time

import unipipe as up


@up.task(timeout="5s", retry=up.Retry(max_retries=1, delay="0.2s"))
def sometimes_slow() -> str:
    if up.current().attempt == 1:
        time.sleep(60)
    return f"done at attempt {up.current().attempt}"


@up.pipeline(name="case-timeout-then-succeed")
def pipe():
    return sometimes_slow()
