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

import os
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
    # what every child imported again (a stack sampler over ten runs): fastapi, on the first
    # ``Flow.serialize_parameters`` (``prefect/flows.py`` ~706, ``jsonable_encoder``; about 0.27 s
    # a run), pydantic's v1 shim (``is_v1_model``), the flow's ``visualization`` helper, anyio's
    # asyncio backend, rich's emoji table and the IDNA codec
    "fastapi.encoders", "pydantic.v1", "prefect.utilities.visualization",
    "anyio._backends._asyncio", "rich._emoji_codes", "encodings.idna",
)


def warm() -> None:
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    _share_ca_context()


#: Prefect's modules that make a client's TLS context (``ssl.create_default_context``)
_TLS_MODULES = ("prefect.client.orchestration", "prefect._internal.version_checking",
                "prefect._internal.websockets")


#: the verifying contexts made for Prefect's modules, by CA file (``_share_ca_context``)
_CA_CONTEXTS: dict[str, Any] = {}


def _share_ca_context() -> None:
    """Read a CA file once for every child, not once per Prefect client.

    Every ``PrefectClient`` / ``SyncPrefectClient``, the events client's version check and its
    websocket make a verifying context with ``ssl.create_default_context(cafile=CA)``
    (``prefect/client/orchestration/__init__.py`` ~347 and ~1294,
    ``prefect/_internal/version_checking.py`` ~129, ``prefect/_internal/websockets.py`` ~38),
    which parses the whole file (about 35 ms here); a flow run makes a dozen clients (the
    engine's, its log and event workers', the driver's). CA is ``PREFECT_API_SSL_CERT_FILE``,
    whose default is the environment's ``SSL_CERT_FILE`` (``prefect/settings/models/api.py``
    ~35), else certifi's bundle. In those three modules only, that call returns one context per
    CA file, made with the same file and purpose: here, before any fork, for the files this
    environment names, and in a child once for a file only its run names. Prefect only hands it
    to httpx or websockets as the context to verify with, and never loads a client certificate
    into it. Their other calls (the context Prefect loosens for
    ``PREFECT_API_TLS_INSECURE_SKIP_VERIFY``, made without a file) and everyone else's (a task's
    code) make their own as before.
    """
    import importlib
    import ssl

    import certifi

    def context_for(cafile: str) -> ssl.SSLContext:
        ctx = _CA_CONTEXTS.get(cafile)
        if ctx is None:
            ctx = _CA_CONTEXTS[cafile] = ssl.create_default_context(cafile=cafile)
        return ctx

    class SharedCaSsl:
        """``ssl`` as these modules see it: the same module but for one context per CA file."""

        def __getattr__(self, name: str) -> Any:
            return getattr(ssl, name)

        @staticmethod
        def create_default_context(purpose: Any = ssl.Purpose.SERVER_AUTH, *, cafile: Any = None,
                                   capath: Any = None, cadata: Any = None) -> ssl.SSLContext:
            if (purpose == ssl.Purpose.SERVER_AUTH and isinstance(cafile, str) and capath is None
                    and cadata is None):
                return context_for(cafile)
            return ssl.create_default_context(purpose, cafile=cafile, capath=capath,
                                              cadata=cadata)

    for cafile in dict.fromkeys(filter(None, (os.environ.get("PREFECT_API_SSL_CERT_FILE"),
                                              os.environ.get("SSL_CERT_FILE"), certifi.where()))):
        if os.path.isfile(cafile):
            context_for(cafile)
    for name in _TLS_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "ssl", None) is ssl:
            module.ssl = SharedCaSsl()  # type: ignore[attr-defined]


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
