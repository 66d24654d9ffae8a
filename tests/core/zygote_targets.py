"""Attempt targets for tests/core/test_zygote.py: ``function(write_fd, *args)``, run in an
attempt process forked from a zygote."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

#: held by a thread of the test's own process while an attempt runs (the hazard: a fork copies
#: it held, and nothing in the child ever releases it)
LOCK = threading.Lock()


def _write(fd: int, data: dict) -> None:
    os.write(fd, json.dumps(data).encode())


def describe(fd: int, name: str) -> None:
    """What the attempt's process sees: its threads, parent, group, environment, folder, path;
    and whether it can take LOCK."""
    took = LOCK.acquire(timeout=5)
    _write(fd, {"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0),
                "threads": len(os.listdir("/proc/self/task")),
                "env": os.environ.get(name), "cwd": os.getcwd(), "path": sys.path,
                "took_lock": took})


def sleep_forever(fd: int, pid_file: str) -> None:
    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(600)


def kill_self(fd: int) -> None:
    import signal

    os.write(fd, b"partial")
    os.kill(os.getpid(), signal.SIGKILL)


def exit_with(fd: int, code: int) -> None:
    os._exit(code)


def sleep_then_write(fd: int, seconds: float, text: str) -> None:
    time.sleep(seconds)
    os.write(fd, text.encode())


def user_module_mode(fd: int, module: str) -> None:
    """How the zygote imported the user's ``module`` before this attempt: already there, with
    its task's policies deferred (execution mode) and unipipe's IR models not imported."""
    mod = sys.modules.get(module)
    _write(fd, {"preloaded": mod is not None,
                "deferred": mod is not None and isinstance(mod.step._policies, dict),
                "models": "unipipe.ir.models" in sys.modules})
