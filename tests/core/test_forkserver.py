"""unipipe.forkserver, with no engine behind it (tests/core/forkserver_probe.py): each run is a
process of its own with the request's environment, folder and log; a run whose client gives up,
or whose server is stopped, is killed with the processes it started."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from unipipe import forkserver

HERE = Path(__file__).resolve().parent


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), os.environ.get("PYTHONPATH", "")]), **extra}


@pytest.fixture
def server(tmp_path):
    srv = forkserver.ForkServer("forkserver_probe", tmp_path / "server", _env()).start(timeout=60)
    yield srv
    srv.stop()
    assert not Path(srv.path).exists()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, seconds: float = 10) -> bool:
    end = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    return not _alive(pid)


def test_each_run_is_a_process_of_its_own_with_the_requests_environment(server, tmp_path):
    seen = []
    for mark in ("one", "two"):
        folder = tmp_path / mark
        folder.mkdir()
        log = folder / "run.log"
        pids: list[int] = []
        rc = forkserver.run(server.path, ["echo"], {"MARK": mark, "PATH": os.defpath}, folder,
                            log, timeout=30, on_start=pids.append)
        assert rc == 0
        out = json.loads(log.read_text())
        assert out["pid"] == pids[0] == out["sid"]  # its own session, named by its pid
        assert (out["cwd"], out["mark"], out["warmed"]) == (str(folder), mark, ["yes"])
        seen.append(out["pid"])
    assert seen[0] != seen[1] and os.getpid() not in seen
    assert forkserver.run(server.path, ["exit", "3"], {}, tmp_path, tmp_path / "x.log",
                          timeout=30) == 3


def test_a_client_that_gives_up_takes_the_run_and_its_processes_with_it(server, tmp_path):
    pids: list[int] = []
    with pytest.raises(subprocess.TimeoutExpired):
        forkserver.run(server.path, ["sleep"], {}, tmp_path, tmp_path / "sleep.log", timeout=3,
                       on_start=pids.append)
    grandchild = json.loads((tmp_path / "sleep.log").read_text().splitlines()[0])["grandchild"]
    assert _wait_gone(pids[0]) and _wait_gone(grandchild)


def test_stopping_the_server_ends_a_run_in_flight(tmp_path):
    import threading

    srv = forkserver.ForkServer("forkserver_probe", tmp_path / "server", _env()).start(timeout=60)
    pids: list[int] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            forkserver.run(srv.path, ["sleep"], {}, tmp_path, tmp_path / "sleep.log",
                           timeout=120, on_start=pids.append)
        except BaseException as exc:  # noqa: BLE001 - what the client saw
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    end = time.monotonic() + 30
    while not (tmp_path / "sleep.log").exists() or not (tmp_path / "sleep.log").read_text():
        assert time.monotonic() < end
        time.sleep(0.1)
    grandchild = json.loads((tmp_path / "sleep.log").read_text().splitlines()[0])["grandchild"]
    srv.stop()
    thread.join(30)
    assert _wait_gone(pids[0]) and _wait_gone(grandchild)
    assert errors and isinstance(errors[0], ConnectionError)


def test_a_warm_up_that_starts_a_thread_is_refused(tmp_path):
    srv = forkserver.ForkServer("forkserver_probe", tmp_path / "server", _env(PROBE_THREAD="1"))
    with pytest.raises(RuntimeError, match="threads started while warming up"):
        srv.start(timeout=60)
