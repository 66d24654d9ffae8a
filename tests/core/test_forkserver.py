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


def test_users_of_a_shared_server_get_one_and_the_last_to_leave_stops_it(tmp_path):
    """``shared``: users naming one folder (a suite's lanes, each a thread) get the same server,
    started once; one user leaving stops nothing another still runs through; the last stops it;
    the next user after that starts a new one."""
    import threading

    folder = tmp_path / "shared"
    first_in = threading.Event()
    release = threading.Event()
    seen: dict[str, str] = {}

    def user(name: str) -> None:
        with forkserver.shared("forkserver_probe", folder, _env()) as srv:
            seen[name] = srv.path
            first_in.set()
            release.wait(60)
            rc = forkserver.run(srv.path, ["echo"], {"MARK": name, "PATH": os.defpath},
                                tmp_path, tmp_path / f"{name}.log", timeout=30)
            assert rc == 0

    with forkserver.shared("forkserver_probe", folder, _env()) as outer:
        a = threading.Thread(target=user, args=("a",))
        a.start()
        assert first_in.wait(60)
        assert seen["a"] == outer.path  # the same server, not a second one
        release.set()
        a.join(60)
        # "a" has left: the server is still there for the outer user
        assert forkserver.run(outer.path, ["echo"], {"MARK": "outer", "PATH": os.defpath},
                              tmp_path, tmp_path / "outer.log", timeout=30) == 0
        assert json.loads((tmp_path / "a.log").read_text())["mark"] == "a"
        pid = outer.proc.pid
    assert _wait_gone(pid) and not Path(outer.path).exists()  # the last one out stopped it
    with forkserver.shared("forkserver_probe", folder, _env()) as again:
        assert again.path != outer.path and again.proc.poll() is None
