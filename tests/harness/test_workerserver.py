"""A lane's runs forked from its worker fork server (unipipe.harness.workerserver): the same
records as a fresh interpreter per run, and the case's time limit still kills a run with its
process group."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "comparisons" / "cases"


def _suite(tmp_path, cases, backends=("local",)):
    from unipipe.harness.cases import discover
    from unipipe.harness.execute import run_suite

    return run_suite(discover([str(c) for c in cases]), list(backends), tmp_path / "out",
                     jobs=2, shards=1)


@pytest.mark.parametrize("fork", ["1", "0"])
def test_a_lanes_runs_come_from_its_server_or_a_fresh_interpreter(tmp_path, monkeypatch, fork):
    monkeypatch.setenv("UNIPIPE_CONFORM_FORK", fork)
    suite = _suite(tmp_path, [CASES / "retry_fail_twice", CASES / "cache_second_run"])
    assert not suite.failures(), [(o.case, o.status, o.reason) for o in suite.failures()]
    runs = tmp_path / "out" / "runs"
    served = (tmp_path / "out" / "homes" / "local" / "worker-server" / "forkserver.log").exists()
    assert served is (fork == "1")
    for case, n in (("retry_fail_twice", 1), ("cache_second_run", 2)):
        for k in range(1, n + 1):
            folder = runs / case / "local"
            assert json.loads((folder / f"run-{k}.json").read_text())["status"] == "ok"
            # a forked run logs stdout and stderr to one file; a fresh interpreter, to two
            assert (folder / f"run-{k}.stdout").exists() is (fork == "0"), (case, k)
    # the second run of the cached case hit the first run's cache in both ways
    outcome = suite.outcome("cache_second_run", "local")
    assert [t["cache_hit"] for t in (r["tasks"]["costly_sum"] for r in outcome.runs)] == [False, True]


def test_a_forked_run_past_the_case_time_limit_is_killed_with_its_group(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIPIPE_CONFORM_FORK", "1")
    case = tmp_path / "cases" / "hangs_past_limit"
    case.mkdir(parents=True)
    pid_file = tmp_path / "task.pid"
    (case / "case_hangs_past_limit.py").write_text(textwrap.dedent(f"""
        import os, time
        import unipipe as up

        @up.task
        def hang() -> int:
            with open({str(pid_file)!r}, "w") as fh:
                fh.write(str(os.getpid()))
            time.sleep(120)
            return 1

        @up.pipeline
        def pipe() -> int:
            return hang()
        """))
    (case / "case.yaml").write_text(textwrap.dedent("""
        id: hangs_past_limit
        doc: a task that outlives the case's time limit
        pipeline: case_hangs_past_limit.py:pipe
        tags: []
        timeout: 8
        expect:
          state: success
          tasks:
            hang: {state: success, attempts: 1}
          alerts: []
        """))
    started = time.monotonic()
    suite = _suite(tmp_path, [case])
    took = time.monotonic() - started
    outcome = suite.outcome("hangs_past_limit", "local")
    assert outcome.runs[0]["status"] == "timeout", outcome.runs
    assert "no result within 8s" in outcome.runs[0]["error"]
    assert took < 60, took
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid):  # the task's process went with the run's group
        assert time.monotonic() < deadline, f"task process {pid} outlived its run"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie not reaped yet is gone as far as the run is concerned
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
