"""Task functions for tests/prefect/test_prefect_attempt_process.py (imported by the attempt's
process, which is forked from the zygote, not from the test's process)."""

from __future__ import annotations

import os
import signal


def double(x: int) -> dict:
    return {"value": x * 2, "pid": os.getpid(), "threads": len(os.listdir("/proc/self/task"))}


def fail() -> None:
    raise KeyError("missing-column")


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
