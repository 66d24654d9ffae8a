"""A real ``prefect server start`` on 127.0.0.1, with its own PREFECT_HOME and SQLite database.

Starting it costs seconds (about 13 s on a 2-core machine), so a process starts one and reuses it
(:func:`shared_server`), and test sessions share one through a session fixture.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefect_executable() -> str:
    candidate = Path(sys.executable).with_name("prefect")
    return str(candidate) if candidate.exists() else (shutil.which("prefect") or "prefect")


#: ``python -c`` program that runs Prefect's CLI with SIGINT at Python's default handler. A process
#: started with SIGINT ignored (a background job of a shell without job control, ``nohup``) passes
#: that on, and ``prefect worker start`` answers SIGTERM by sending SIGINT to itself after putting
#: back the handler it found (prefect/utilities/processutils/__init__.py
#: ``setup_signal_handlers_worker``, ``forward_signal_handler``: ``avoid_infinite_recursion``):
#: SIG_IGN, so the worker never stopped, and its stopper waited out its timeout and killed it.
_CLI_WITH_SIGINT = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "runpy.run_module('prefect', run_name='__main__', alter_sys=True)")


def worker_command(python: str, pool: str, name: str, *extra: str) -> list[str]:
    """``python -m prefect worker start`` of the process type on ``pool``, stoppable by SIGTERM
    however the caller was started (``_CLI_WITH_SIGINT``)."""
    return [python, "-c", _CLI_WITH_SIGINT, "worker", "start", "--pool", pool, "--type",
            "process", *extra, "--name", name]


#: "0": every server migrates its own fresh database (no template)
TEMPLATE_ENV = "UNIPIPE_PREFECT_DB_TEMPLATE"


def template_db() -> Path:
    """A SQLite database migrated to this Prefect's head revision, made once per Prefect
    version (``prefect server database upgrade``) and copied into each new server's home.

    ``prefect server start`` migrates its database on start (``PREFECT_API_DATABASE_MIGRATE_ON_START``,
    on by default): on a fresh one that is about 10 s of CPU of the 18 s a start costs here
    (measured: 17.9 s of CPU to healthy on a fresh database, 7.8 s on a migrated copy, where
    alembic finds the head revision and does nothing). Migration writes the schema and
    nothing of a server's own, so a copy is a fresh database. Under the checkout's git-ignored
    ``.cache`` (or the user's cache folder; :func:`unipipe.venvs.cache_dir`)."""
    from importlib.metadata import version

    from unipipe.venvs import cache_dir, sqlite_template

    def migrate(home: Path) -> Path:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
        proc = subprocess.run([prefect_executable(), "server", "database", "upgrade", "-y"],
                              env=env, capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not (home / "prefect.db").exists():
            raise RuntimeError("prefect server database upgrade failed:\n"
                               + proc.stdout[-3000:] + proc.stderr[-3000:])
        return home / "prefect.db"

    return sqlite_template(cache_dir("prefect-db") / version("prefect") / "prefect.db", migrate)


class LocalPrefectServer:
    """``with LocalPrefectServer() as server: server.api_url`` -> ``http://127.0.0.1:P/api``.

    ``home`` holds PREFECT_HOME and the SQLite database (a temp dir, removed on stop, when not
    given). The server runs in its own process group and is stopped with it.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None, *, port: int | None = None,
                 startup_timeout: float = 120.0, executable: str | None = None,
                 settings: dict[str, str] | None = None):
        #: the ``prefect`` command (another environment's, e.g. :func:`scheduler_prefect`)
        self.executable = executable
        #: PREFECT_* settings of this server (its services' loops and horizons)
        self.settings = dict(settings or {})
        self._own_home = home is None
        self.home = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="unipipe-prefect-"))
        self.port = port or _free_port()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            **self.settings,
        })
        return env

    def start(self) -> LocalPrefectServer:
        if self.process is not None:
            return self
        self.home.mkdir(parents=True, exist_ok=True)
        db = self.home / "prefect.db"
        if (self.executable is None and not db.exists()
                and "PREFECT_API_DATABASE_CONNECTION_URL" not in self.settings
                and os.environ.get(TEMPLATE_ENV) != "0"):
            shutil.copyfile(template_db(), db)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [self.executable or prefect_executable(), "server", "start", "--host", "127.0.0.1", "--port",
             str(self.port), "--no-ui", "--analytics-off"],
            env=self.env(), stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.process.returncode}; "
                                   f"log: {self.log_path}\n{self._tail()}")
            if self.healthy():
                return self
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"prefect server did not answer within {self.startup_timeout:g}s")

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> LocalPrefectServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def scheduler_prefect() -> str:
    """The ``prefect`` command of an environment of its own whose server's scheduler works.

    Prefect 3.7.7's scheduler service and ``POST /deployments/{id}/schedule`` fail on the
    SQLAlchemy 2.1 that unipipe's lock resolves (``_insert_scheduled_flow_runs``,
    prefect/server/models/deployments.py ~1009; docs/facts/events-schedules-artifacts.md B3);
    with SQLAlchemy 2.0 they create runs. The environment has the same Prefect and every
    other package at this environment's versions (constraints), SQLAlchemy below 2.1, and is
    built with uv on first use (:func:`unipipe.venvs.ensure_venv`)."""
    from importlib.metadata import version

    from unipipe.venvs import cache_dir, ensure_venv, installed_pins

    python = ensure_venv(cache_dir("prefect-server-sqlalchemy-2.0"),
                         [f"prefect=={version('prefect')}", "sqlalchemy[asyncio]<2.1"],
                         constraints=installed_pins("sqlalchemy"))
    return str(python.with_name("prefect"))


_SHARED: LocalPrefectServer | None = None
_LOCK = threading.Lock()


def shared_server() -> LocalPrefectServer:
    """The process's local server: started on first use, reused, stopped at interpreter exit."""
    global _SHARED
    with _LOCK:
        if _SHARED is None or _SHARED.process is None or _SHARED.process.poll() is not None:
            _SHARED = LocalPrefectServer().start()
            atexit.register(_SHARED.stop)
        return _SHARED


def use_shared_server(server: LocalPrefectServer) -> None:
    """Make ``server`` the one :func:`shared_server` returns (a test session's fixture)."""
    global _SHARED
    with _LOCK:
        _SHARED = server
