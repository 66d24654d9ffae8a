"""A process that imports Prefect once and forks a fresh child per flow run.

Importing Prefect costs about 3 s of CPU; a runner that starts one flow process per run pays it
every time. The fork server pays it once: each run is a child forked from a process that has only
imported modules (no threads, no clients, no settings beyond the import-time defaults), which then
takes the run's environment, refreshes Prefect's settings from it and runs
:func:`unipipe_prefect.driver.main`. Every run still gets its own process, environment and
working directory. ``UNIPIPE_PREFECT_FORKSERVER=0`` turns it off (one plain subprocess per run).

Protocol: one JSON line per request on stdin (``argv``, ``env``, ``cwd``, ``log``); the server
answers ``{"pid": ...}`` when the child starts and ``{"rc": ...}`` when it ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

_PRELOAD = (
    "prefect", "prefect.flows", "prefect.tasks", "prefect.flow_engine", "prefect.task_engine",
    "prefect.cache_policies", "prefect.futures", "prefect.task_runners", "prefect.states",
    "prefect.results", "prefect.client.orchestration", "prefect.client.schemas.filters",
    "prefect.client.schemas.sorting", "prefect.context", "prefect.settings", "prefect.logging",
    "prefect.events", "prefect.utilities.timeout", "unipipe.runtime.invoke",
    "unipipe.runtime.alerts", "unipipe.runtime.cache", "unipipe.runtime.store",
    "unipipe_prefect.runtime", "unipipe_prefect.driver",
)


def _child(request: dict[str, Any]) -> int:
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    for entry in reversed([p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    import prefect.context

    prefect.context.refresh_global_settings_context()
    from unipipe_prefect import driver

    return driver.main(request["argv"])


def serve() -> None:
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    if threading.active_count() > 1:  # forking a threaded process is unsafe: refuse to serve
        print(json.dumps({"error": "threads started at import"}), flush=True)
        return
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)


class ForkServer:
    """The parent side: start once, then :meth:`run` one request at a time (thread-safe)."""

    def __init__(self, env: dict[str, str]):
        self._lock = threading.Lock()
        self.env = env
        self.proc = subprocess.Popen([sys.executable, "-m", "unipipe_prefect.forkserver"],
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        first = json.loads(self.proc.stdout.readline() or "{}")  # type: ignore[union-attr]
        if not first.get("ready"):
            self.close()
            raise RuntimeError(f"the Prefect fork server did not start: {first}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> int:
        with self._lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "cwd": str(cwd),
                                              "log": str(log)}) + "\n")
            self.proc.stdin.flush()
            for _ in range(2):
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("the Prefect fork server exited")
                reply = json.loads(line)
                if "rc" in reply:
                    return int(reply["rc"])
            raise RuntimeError("unexpected reply from the Prefect fork server")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        home = self.env.get("PREFECT_HOME", "")
        if "unipipe-prefect-forkserver-" in home:  # the throwaway home the backend made for it
            import shutil

            shutil.rmtree(home, ignore_errors=True)


_SERVER: ForkServer | None = None
_LOCK = threading.Lock()


def get(make_env: Callable[[], dict[str, str]]) -> ForkServer:
    """The process's fork server (started on first use, restarted if it died); ``make_env`` is
    called only to start one, so a throwaway home it makes is made once per server."""
    global _SERVER
    with _LOCK:
        if _SERVER is None or not _SERVER.alive():
            import atexit

            _SERVER = ForkServer(make_env())
            atexit.register(_SERVER.close)
        return _SERVER


if __name__ == "__main__":
    serve()
