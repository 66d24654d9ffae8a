"""Fault: the task's own process is killed (SIGKILL) in the middle of its first attempt."""

import os
import signal
import time

import unipipe as up


@up.task(retry=up.Retry(max_retries=2, delay="0.5s"))
def fragile(rows: int) -> int:
    if up.current().attempt == 1:
        time.sleep(0.2)  # some work done, then the process dies without a word
        os.kill(os.getpid(), signal.SIGKILL)
    return rows * 2


@up.pipeline(name="case-sigkill-mid-attempt")
def pipe(rows: int = 21):
    return fragile(rows)
