"""The attempt-process protocol of the Prefect backend's runtime, without Prefect running.

Map elements fork their attempt processes from several threads at once, so a sibling's child can
inherit this attempt's pipe and keep its write end open. The waiting side must still see the
result as soon as its own child has written it (a race seen in CI: an element that took 0.1 s
waited for its sibling to be killed at the timeout).
"""

from __future__ import annotations

import importlib
import os
import signal
import time

import pytest
from unipipe_prefect import runtime

# the user function is stubbed below; "fn" names a real one because the waiting side imports
# it before forking, as it does for a real task
SPEC = {"id": "t", "pipeline": "p", "fn": "json:dumps"}


@pytest.fixture
def sibling_holds_pipes(monkeypatch):
    """Every pipe the runtime makes is inherited at once by a process that sleeps for 30 s."""
    siblings: list[int] = []
    real_pipe = os.pipe

    def pipe():
        r, w = real_pipe()
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        siblings.append(pid)
        return r, w

    monkeypatch.setattr(os, "pipe", pipe)
    yield siblings
    for pid in siblings:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_result_arrives_while_a_sibling_holds_the_pipe(monkeypatch, sibling_holds_pipes):
    shim = importlib.import_module("unipipe.runtime.invoke")

    monkeypatch.setattr(shim, "run_attempt", lambda spec, inputs, **kw: (inputs["x"] * 2, False))
    start = time.monotonic()
    value, hit, record = runtime._invoke_in_child(SPEC, {"x": 21},
                                                  {"run_id": "r", "attempt": 1, "map_index": 0})
    assert (value, hit, record) == (42, False, None)
    assert len(sibling_holds_pipes) == 1
    assert time.monotonic() - start < 10


def test_error_arrives_while_a_sibling_holds_the_pipe(monkeypatch, sibling_holds_pipes):
    shim = importlib.import_module("unipipe.runtime.invoke")

    def fail(spec, inputs, **kw):
        raise KeyError("missing-column")

    monkeypatch.setattr(shim, "run_attempt", fail)
    start = time.monotonic()
    with pytest.raises(KeyError, match="missing-column"):
        runtime._invoke_in_child(SPEC, {},
                                 {"run_id": "r", "attempt": 1, "map_index": 0})
    assert time.monotonic() - start < 10


def test_killed_child_is_seen_while_a_sibling_holds_the_pipe(monkeypatch, sibling_holds_pipes,
                                                             tmp_path):
    shim = importlib.import_module("unipipe.runtime.invoke")
    from unipipe.local.runner import ProcessKilled

    monkeypatch.setenv("UNIPIPE_TRACE_DIR", str(tmp_path))
    monkeypatch.setattr(shim, "run_attempt", lambda spec, inputs, **kw: os.kill(os.getpid(),
                                                                             signal.SIGKILL))
    start = time.monotonic()
    with pytest.raises(ProcessKilled, match="exit code -9"):
        runtime._invoke_in_child(SPEC, {},
                                 {"run_id": "r", "attempt": 1, "map_index": 0})
    assert time.monotonic() - start < 10
