"""The attempt process of the Prefect backend's runtime, without Prefect running: the value, the
user's error and a killed process come back; the attempt runs in a process with one thread,
however many the caller (a flow run's process) has.

A CI run hung here once: attempts were forked from the flow run's process, which runs Prefect's
threads, and a fork copied an OpenSSL lock one of them held. They are forked from a zygote now
(unipipe.runtime.zygote; tests/core/test_zygote.py tests it on its own)."""

from __future__ import annotations

import os
import threading
import time

import pytest
from unipipe_prefect import runtime

KWARGS = {"run_id": "r", "attempt": 1, "map_index": 0, "backend": "prefect"}


def _spec(fn: str) -> dict:
    return {"id": "t", "pipeline": "p", "fn": f"prefect_attempt_fns:{fn}"}


def test_value_comes_back_from_a_single_threaded_process_while_the_caller_runs_threads():
    stop = threading.Event()
    busy = [threading.Thread(target=stop.wait, args=(30,)) for _ in range(3)]
    for thread in busy:
        thread.start()
    try:
        start = time.monotonic()
        value, hit, record = runtime._invoke_in_child(_spec("double"), {"x": 21}, dict(KWARGS))
    finally:
        stop.set()
        for thread in busy:
            thread.join()
    assert value["value"] == 42 and (hit, record) == (False, None)
    assert value["pid"] != os.getpid()
    assert value["threads"] == 1
    assert time.monotonic() - start < 30


def test_the_users_error_comes_back_as_itself():
    with pytest.raises(KeyError, match="missing-column"):
        runtime._invoke_in_child(_spec("fail"), {}, dict(KWARGS))


def test_a_killed_attempt_process_fails_the_attempt_with_its_exit_code(monkeypatch, tmp_path):
    from unipipe.local.runner import ProcessKilled

    monkeypatch.setenv("UNIPIPE_TRACE_DIR", str(tmp_path))
    with pytest.raises(ProcessKilled, match="exit code -9"):
        runtime._invoke_in_child(_spec("kill_self"), {}, dict(KWARGS))
