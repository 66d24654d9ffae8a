"""One prepared Airflow per harness lane: a process that pays Airflow's start-up once and forks
a fresh ``airflow dags test`` per run.

Where an ``airflow dags test`` of a three-task DAG spends its time on this machine (measured with
a stack sampler, 12 s in all): importing Airflow and its CLI (about 4 s), and, on the first call
of the in-process Execution API, Cadwyn building a router per API version
(``cadwyn/applications.py`` ``Cadwyn.__call__`` -> ``_cadwyn_initialize``: about 7 s, every
run, because ``DAG.test`` builds a new ``InProcessExecutionAPI`` app in each process:
``airflow/api_fastapi/execution_api/app.py`` ``InProcessExecutionAPI.app``). The tasks
themselves take about 1 s.

The server does both once, then forks a child per request. The child is a new process with
nothing of an earlier run: it takes the run's environment (home, dags folder, metadata DB copy,
trace folder, receivers), working folder and log, re-reads Airflow's settings from that
environment (``airflow.settings.initialize``: configuration variables, logging, a new ORM
engine) and runs Airflow's own CLI entry point with ``dags test DAG -c CONF``, as the
subprocess did. The parent never opens a database, starts a thread or runs a task (checked
before it serves: forking a threaded process is unsafe), so what a child inherits is imported
code and the Execution API's routes, built for no run in particular.

Protocol: a Unix socket; one JSON line per connection (``argv`` after ``airflow``, ``env``,
``cwd``, ``log``); the answer is ``{"pid": N}`` when the child starts and ``{"rc": N}`` when it
ends. A client that goes away (the harness killed its worker at the case's time limit) takes
the run with it: the child's process group is killed. Each connection has a handler process of
its own, so runs of several clients do not wait for each other.

Used by the harness (:meth:`unipipe_airflow.backend.Backend.lane_service` starts one per lane
of the installed Airflow in ``dags-test`` mode and hands its socket to the lane's workers as
``UNIPIPE_AIRFLOW_FORKSERVER``); ``unipipe run`` outside the harness starts ``airflow dags test``
as before (one run gains nothing from a server whose warm-up costs more than it saves).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the environment variable that names a lane's fork server socket
ENV = "UNIPIPE_AIRFLOW_FORKSERVER"

_PRELOAD = (
    "airflow", "airflow.__main__", "airflow.cli.cli_parser", "airflow.cli.commands.dag_command",
    "airflow.models", "airflow.sdk", "airflow.sdk.definitions.dag",
    "airflow.sdk.execution_time.supervisor", "airflow.sdk.execution_time.task_runner",
    "airflow.providers.standard.operators.python", "airflow.api_fastapi.execution_api.app",
)


def _warm() -> None:
    """Import Airflow and build the in-process Execution API app (routes of every version)."""
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # the ORM's relationships, resolved once for every child
    from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI

    app = InProcessExecutionAPI().app
    if getattr(app, "_cadwyn_initialized", True) is False:
        app._cadwyn_initialize()
    # every DAG.test() of a child makes its own InProcessExecutionAPI; they all get this app
    # (its per-request state is the child's: the transport, its event loop thread, the ORM)
    InProcessExecutionAPI.app = property(lambda self: app)  # type: ignore[assignment,method-assign]


def _child(request: dict[str, Any]) -> int:
    """The run: a new session, the request's log, environment and folder, then the CLI."""
    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    for entry in reversed([p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    from airflow import configuration, settings

    configuration.AIRFLOW_HOME = request["env"].get("AIRFLOW_HOME", configuration.AIRFLOW_HOME)
    settings.initialize()  # configuration variables, logging and the ORM from this environment
    from airflow.__main__ import main

    sys.argv = ["airflow", *request["argv"]]
    try:
        main()
    except SystemExit as exc:  # ``dags test`` of a failed run exits 1
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def _handle(conn: socket.socket) -> None:
    """A handler process: read the request, fork the run, answer, kill it if the client goes."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    request = json.loads(conn.makefile("r").readline() or "{}")
    pid = os.fork()
    if pid == 0:
        conn.close()
        code = 1
        try:
            code = _child(request)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    def end_run(*_: Any) -> None:  # the server is stopping: the run goes with it
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os._exit(1)

    signal.signal(signal.SIGTERM, end_run)
    conn.sendall((json.dumps({"pid": pid}) + "\n").encode())
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            conn.sendall((json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n").encode())
            return
        readable, _, _ = select.select([conn], [], [], 0.2)
        if readable and not conn.recv(1):  # the client is gone: so is its run
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return


def serve(path: str) -> None:
    # the protocol's stdout is ours alone: what Airflow prints while warming up goes to the log
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    _warm()
    if threading.active_count() > 1:  # forking a threaded process is unsafe: refuse to serve
        print(json.dumps({"error": "threads started while warming up"}), file=proto, flush=True)
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    print(json.dumps({"ready": True}), file=proto, flush=True)
    proto.close()
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            code = 1
            try:
                _handle(conn)
                code = 0
            finally:
                os._exit(code)
        conn.close()


class ForkServer:
    """The lane's side: :meth:`start` the server, :meth:`stop` it when the lane ends."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.folder, self.env = folder, env
        self.path = str(folder / "forkserver.sock")
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 300) -> ForkServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        Path(self.path).unlink(missing_ok=True)
        with open(self.folder / "forkserver.log", "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "unipipe_airflow.forkserver",
                                          self.path], env=self.env, cwd=self.folder,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, text=True, start_new_session=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        try:
            first = json.loads(self.proc.stdout.readline() or "{}") if ready else {}  # type: ignore[union-attr]
        except ValueError as exc:
            first = {"error": str(exc)}
        if not first.get("ready"):
            self.stop()
            tail = (self.folder / "forkserver.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the Airflow fork server did not start: {first}\n{tail}")
        return self

    def stop(self) -> None:
        """SIGTERM the server and its handlers (a handler kills its run's process group
        first), SIGKILL what is left after 5 s."""
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 30.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        Path(self.path).unlink(missing_ok=True)


def run(path: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path,
        timeout: float, on_start: Callable[[int], None] | None = None) -> int:
    """Run ``airflow ARGV`` in a child of the fork server at ``path``; its exit code.

    Raises :class:`subprocess.TimeoutExpired` after ``timeout`` seconds (the run is killed, as
    ``subprocess.run`` kills its child) and :class:`ConnectionError` if the server is gone;
    ``on_start`` gets the run's pid (its process group's id)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        conn.sendall((json.dumps({"argv": argv, "env": env, "cwd": str(cwd),
                                  "log": str(log)}) + "\n").encode())
        reader = conn.makefile("r")
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(["airflow", *argv], timeout)
            conn.settimeout(left)
            try:
                line = reader.readline()
            except TimeoutError:
                raise subprocess.TimeoutExpired(["airflow", *argv], timeout) from None
            if not line:
                raise ConnectionError("the Airflow fork server closed the connection")
            reply = json.loads(line)
            if "pid" in reply and on_start is not None:
                on_start(int(reply["pid"]))
            if "rc" in reply:
                return int(reply["rc"])


if __name__ == "__main__":
    serve(sys.argv[1])
