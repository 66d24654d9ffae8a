"""Module-level tasks for the reference-runner tests (tasks must be importable)."""

from __future__ import annotations

import os
import signal
import time

import unipipe as up

CALLS: list[str] = []


@up.task(retry=up.Retry(max_retries=4, delay="0.2s", backoff=2.0, max_delay="0.5s"))
def fail_three_times() -> int:
    if up.current().attempt <= 3:
        raise ConnectionError("boom")
    return up.current().attempt


@up.pipeline(name="capped-backoff")
def capped_backoff():
    return fail_three_times()


@up.task(retries=1)
def killed_once() -> str:
    if up.current().attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@up.pipeline(name="killed")
def killed():
    return killed_once()


@up.task(retry=up.Retry(max_retries=3, retry_on=(ConnectionError,)))
def wrong_error() -> None:
    raise KeyError("not in retry_on")


@up.pipeline(name="retry-on-filter")
def retry_on_filter():
    return wrong_error()


@up.task
def explicit_stop() -> None:
    raise up.NonRetryable("stop now")


@up.pipeline(name="non-retryable-explicit", defaults=up.Defaults(retries=3))
def non_retryable_explicit():
    return explicit_stop()


@up.task(cache=up.Cache(expire="1s"))
def short_lived(x: int) -> float:
    return time.time()


@up.pipeline(name="short-cache")
def short_cache(x: int = 1):
    return short_lived(x)


def by_first_letter(inputs: dict) -> str:
    return str(inputs["word"])[0]


@up.task(cache=up.Cache(key_fn=by_first_letter))
def keyed(word: str) -> str:
    return f"{word}@{time.time()}"


@up.pipeline(name="keyed-cache")
def keyed_cache(word: str = "apple"):
    return keyed(word)


@up.task
def checkpointing(steps: int) -> int:
    """Writes progress to its scratch folder; attempt 1 dies halfway, attempt 2 resumes."""
    ctx = up.current()
    folder = ctx.scratch_url()
    os.makedirs(folder, exist_ok=True)
    marker = os.path.join(folder, "done")
    done = int(open(marker).read()) if os.path.exists(marker) else 0
    for step in range(done, steps):
        with open(marker, "w") as fh:
            fh.write(str(step + 1))
        if ctx.attempt == 1 and step == steps // 2:
            raise ConnectionError("lost the worker mid-way")
    return done


@up.pipeline(name="checkpoint", defaults=up.Defaults(retries=1))
def checkpoint(steps: int = 6):
    return checkpointing(steps)
