"""A fork server an engine's runs share: pay the engine's start-up once, fork a fresh process
per run (standard library only; used by the harness lanes of the Airflow and Prefect backends).

A backend's server module calls :func:`serve` with two functions: ``warm()``, which imports the
engine and builds what every run would otherwise build again (no thread, no database, no client:
the server refuses to serve if warming up started a thread, forking a threaded process is
unsafe), and ``child(request)``, which runs one request in the forked child after
:func:`enter` has given it the request's session, log, environment, working folder and
``sys.path``, and returns the exit code.

Protocol: a Unix socket; one JSON line per connection (``argv``, ``env``, ``cwd``, ``log``);
the answer is ``{"pid": N}`` when the child starts and ``{"rc": N}`` when it ends. Each
connection has a handler process of its own (several clients never wait for each other); a
client that goes away (the harness killed its worker at a case's time limit) takes the run
with it: the handler kills the child's process group, and so does a handler the server's
:meth:`ForkServer.stop` ends.
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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def enter(request: Mapping[str, Any]) -> None:
    """The run's process: a session of its own, the request's log on stdout and stderr, no
    stdin, its environment, working folder and PYTHONPATH entries first on ``sys.path``."""
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


def _handle(conn: socket.socket, child: Callable[[dict[str, Any]], int]) -> None:
    """A handler process: read the request, fork the run, answer, kill it if the client goes."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    request = json.loads(conn.makefile("r").readline() or "{}")
    pid = os.fork()
    if pid == 0:
        conn.close()
        code = 1
        try:
            enter(request)
            code = child(request)
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


def serve(path: str, warm: Callable[[], None], child: Callable[[dict[str, Any]], int]) -> None:
    """Warm up, then serve requests on the Unix socket ``path`` until killed."""
    # the protocol's stdout is ours alone: what the engine prints while warming up goes to stderr
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    warm()
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
                _handle(conn, child)
                code = 0
            finally:
                os._exit(code)
        conn.close()


class ForkServer:
    """The owner's side: :meth:`start` ``python -m MODULE SOCKET`` in ``folder``, :meth:`stop`
    it (and every run still going) when done; as a context manager, both."""

    def __init__(self, module: str, folder: Path, env: dict[str, str]):
        self.module, self.folder, self.env = module, folder, env
        self.path = ""  # the socket, made by start()
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 300) -> ForkServer:
        import tempfile

        self.folder.mkdir(parents=True, exist_ok=True)
        # a short folder for the socket: a Unix socket's path holds at most 107 bytes, and a
        # lane's folder under pytest's tmp_path can be longer
        short = tempfile.mkdtemp(prefix="unipipe-fs-", dir="/tmp" if os.path.isdir("/tmp") else None)
        self.path = os.path.join(short, "sock")
        with open(self.folder / "forkserver.log", "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module, self.path],
                                         env=self.env, cwd=self.folder, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err, text=True,
                                         start_new_session=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        try:
            first = json.loads(self.proc.stdout.readline() or "{}") if ready else {}
        except ValueError as exc:
            first = {"error": str(exc)}
        if not first.get("ready"):
            self.stop()
            tail = (self.folder / "forkserver.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the fork server {self.module} did not start: {first}\n{tail}")
        return self

    def __enter__(self) -> ForkServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
        if self.path:
            import shutil

            shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)


class _Shared:
    """A server several users of one process share (:func:`shared`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held while the server starts or stops
        self.users = 0
        self.server: ForkServer | None = None


_SHARED: dict[str, _Shared] = {}
_SHARED_LOCK = threading.Lock()


@contextmanager
def shared(module: str, folder: Path, env: dict[str, str]) -> Iterator[ForkServer]:
    """A :class:`ForkServer` for every user in this process that names the same ``folder``
    (a harness suite's lanes of one engine, each a thread): the first starts it (the others
    wait for it instead of warming up a server of their own), the last to leave stops it, so
    no user's runs are stopped by another's leaving. A server found dead is started again.
    Each run is still a process of its own, forked for its request (:func:`serve`)."""
    with _SHARED_LOCK:
        entry = _SHARED.setdefault(str(folder), _Shared())
        entry.users += 1
    try:
        with entry.lock:
            if entry.server is None or entry.server.proc is None or \
                    entry.server.proc.poll() is not None:
                if entry.server is not None:
                    entry.server.stop()
                entry.server = ForkServer(module, folder, env).start()
            server = entry.server
        yield server
    finally:
        with entry.lock:
            with _SHARED_LOCK:
                entry.users -= 1
                last = entry.users == 0
            if last and entry.server is not None:
                entry.server.stop()
                entry.server = None


def run(path: str, argv: list[str], env: Mapping[str, str], cwd: Path, log: Path,
        timeout: float, on_start: Callable[[int], None] | None = None) -> int:
    """Run ``argv`` (the server's own meaning) in a child of the fork server at ``path``; its
    exit code.

    Raises :class:`subprocess.TimeoutExpired` after ``timeout`` seconds (the run is killed, as
    ``subprocess.run`` kills its child); ``FileNotFoundError`` or ``ConnectionRefusedError`` if
    no server listens at ``path`` (nothing ran); :class:`ConnectionError` if the server went
    away after taking the request (the run may have started). ``on_start`` gets the run's pid
    (its process group's id)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        conn.sendall((json.dumps({"argv": argv, "env": dict(env), "cwd": str(cwd),
                                  "log": str(log)}) + "\n").encode())
        reader = conn.makefile("r")
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(argv, timeout)
            conn.settimeout(left)
            try:
                line = reader.readline()
            except TimeoutError:
                raise subprocess.TimeoutExpired(argv, timeout) from None
            if not line:
                raise ConnectionError("the fork server closed the connection")
            reply = json.loads(line)
            if "pid" in reply and on_start is not None:
                on_start(int(reply["pid"]))
            if "rc" in reply:
                return int(reply["rc"])
