"""A process that imports Prefect once and forks a fresh child per flow run
(:mod:`unipipe.forkserver` does the serving).

Importing Prefect costs about 3 s of CPU; a runner that starts one flow process per run pays it
every time. The fork server pays it once: each run is a child forked from a process that has only
imported modules (no threads, no clients, no settings beyond the import-time defaults), which then
takes the run's environment, refreshes Prefect's settings from it and runs
:func:`unipipe_prefect.driver.main`. Every run still gets its own process, environment and
working directory.

Which server a run uses (``Backend.run``): ``UNIPIPE_PREFECT_FORKSERVER`` names the socket of
a harness lane's server (:meth:`unipipe_prefect.backend.Backend.lane_service` starts one per
lane, so a lane's runs, each in a worker process of its own, share it); unset, the process
starts one on first use and keeps it (:func:`get`); ``0`` turns it off (one plain subprocess
per run).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unipipe.forkserver import ForkServer

#: the environment variable that names a lane's fork server socket (or "0": none)
ENV = "UNIPIPE_PREFECT_FORKSERVER"

_PRELOAD = (
    "prefect", "prefect.flows", "prefect.tasks", "prefect.flow_engine", "prefect.task_engine",
    "prefect.cache_policies", "prefect.futures", "prefect.task_runners", "prefect.states",
    "prefect.results", "prefect.client.orchestration", "prefect.client.schemas.filters",
    "prefect.client.schemas.sorting", "prefect.context", "prefect.settings", "prefect.logging",
    "prefect.events", "prefect.utilities.timeout", "unipipe.runtime.invoke",
    "unipipe.runtime.alerts", "unipipe.runtime.cache", "unipipe.runtime.store",
    "unipipe_prefect.runtime", "unipipe_prefect.driver",
)


def warm() -> None:
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)


def child(request: dict[str, Any]) -> int:
    """The flow run, in its own process and environment (:func:`unipipe.forkserver.enter`)."""
    import prefect.context

    prefect.context.refresh_global_settings_context()
    from unipipe_prefect import driver

    return driver.main(request["argv"])


_SERVER: ForkServer | None = None
_LOCK = threading.Lock()


def get(make_env: Callable[[], dict[str, str]]) -> ForkServer:
    """The process's fork server (started on first use, restarted if it died, stopped at exit);
    ``make_env`` is called only to start one, so a throwaway home it makes is made once per
    server (the server's log goes into it)."""
    global _SERVER
    with _LOCK:
        if _SERVER is None or _SERVER.proc is None or _SERVER.proc.poll() is not None:
            import atexit
            import shutil

            env = make_env()
            home = Path(env["PREFECT_HOME"])
            _SERVER = ForkServer("unipipe_prefect.forkserver", home / "unipipe-forkserver",
                                 env).start()

            def close(server: ForkServer = _SERVER) -> None:
                server.stop()
                if "unipipe-prefect-forkserver-" in str(home):  # the throwaway home made for it
                    shutil.rmtree(home, ignore_errors=True)

            atexit.register(close)
        return _SERVER


if __name__ == "__main__":
    from unipipe.forkserver import serve

    serve(sys.argv[1], warm, child)
