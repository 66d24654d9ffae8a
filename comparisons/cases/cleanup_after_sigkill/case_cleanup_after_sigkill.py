"""Fault: the upstream task's process is SIGKILLed in every attempt; the cleanup still runs."""

import os
import signal
import time

import unipipe as up


@up.task(retry=up.Retry(max_retries=1, delay="1s"))
def crunch(rows: int) -> int:
    time.sleep(0.2)  # some work done, then the process dies without a word
    os.kill(os.getpid(), signal.SIGKILL)
    return rows


@up.task(run_if="all_done")
def release_lock(name: str) -> str:
    return f"released {name}"


@up.pipeline(name="case-cleanup-after-sigkill")
def pipe(rows: int = 5, lock: str = "nightly"):
    crunched = crunch(rows)
    release_lock(lock).after(crunched)
