"""Task functions for tests/airflow/test_airflow_adapter.py's try-process test (imported by the
try's process, which is forked from the zygote, not from the test's process)."""

from __future__ import annotations

import os
import signal
import time


def value() -> dict:
    return {"v": 1, "pid": os.getpid(), "threads": len(os.listdir("/proc/self/task"))}


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def missing() -> None:
    raise KeyError("no")


def hang() -> None:
    time.sleep(600)
