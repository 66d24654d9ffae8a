"""Fault: a task hangs far past its timeout; every attempt is stopped at the timeout."""

import time

import unipipe as up


@up.task(timeout="5s", retries=1)
def hangs(seconds: float) -> str:
    time.sleep(seconds)
    return "woke up"


@up.pipeline(name="case-timeout-hang")
def pipe(seconds: float = 60.0):
    return hangs(seconds)
