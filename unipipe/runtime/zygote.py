"""A single-threaded process that task attempts are forked from, for a process that runs threads.

An engine's run process (a Prefect flow run) runs threads of its own: its API client's event
loop, log and event workers. ``fork()`` there copies whatever lock one of them held at that
moment into the child, held for ever, with no thread left to release it. A CI run met it: an
attempt forked from a Prefect flow run hung in ``ssl.SSLContext.__new__`` (s3fs building its
botocore client) because a Prefect thread held an OpenSSL lock at the fork. So attempts are
forked from a *zygote* instead, a process with one thread:

- made by ``fork()`` while the run's process still has one thread (:func:`start`, called by an
  engine's entry point before the engine starts its threads): cheap, it inherits every module
  already imported;
- otherwise spawned (a fresh interpreter, ``sys.executable``), the first time an attempt needs it:
  a process the engine started itself (a Prefect worker's flow run) has threads before any of
  unipipe's code runs.

Each attempt: the caller makes a socket pair and hands one end to the zygote (``SCM_RIGHTS``);
the zygote forks the attempt's process (a process group of its own) and, in its one-thread
loop, relays what the attempt wrote and then its exit code. The request carries the
caller's environment, working folder and ``sys.path`` as they are at that moment, so the attempt
sees what a direct fork would have given it.

Nothing outlives the caller: when the caller's end of an attempt's socket closes (it gave up
on the attempt), the zygote kills that attempt's process group; when the caller's end of the
control socket closes (it exited or was killed), the zygote kills every attempt's and ends.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

_LOCK = threading.Lock()
_ZYGOTE: Zygote | None = None


def _threads() -> int:
    """The process's threads as the kernel counts them (native ones included), else Python's."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


# ---------------------------------------------------------------- framing


def _send(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(len(data).to_bytes(8, "big") + data)


def _take(buffer: bytearray) -> Any:
    """The first whole frame in ``buffer`` (removed from it), or ``None``."""
    if len(buffer) < 8:
        return None
    size = int.from_bytes(buffer[:8], "big")
    if len(buffer) - 8 < size:
        return None
    frame = bytes(buffer[8:8 + size])
    del buffer[:8 + size]
    return pickle.loads(frame)


def _read_frame(sock: socket.socket) -> Any:
    buffer = bytearray()
    while (frame := _take(buffer)) is None:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise EOFError
        buffer += chunk
    return frame


# ---------------------------------------------------------------- the zygote's side


def _attempt(request: dict[str, Any], write_fd: int) -> None:
    """The attempt's process: the caller's environment, folder and path, then the target."""
    os.setpgid(0, 0)
    os.environ.clear()
    os.environ.update(request["env"])
    try:
        os.chdir(request["cwd"])
    except OSError:
        pass
    sys.path[:] = request["path"]
    module, _, name = request["target"].partition(":")
    import importlib

    target: Callable[..., None] = getattr(importlib.import_module(module), name)
    target(write_fd, *request["args"])


class _Running:
    """An attempt the zygote watches: its caller's socket, the pipe it writes to, its output."""

    def __init__(self, pid: int, conn: socket.socket, read_fd: int):
        self.pid, self.conn, self.read_fd = pid, conn, read_fd
        self.output = bytearray()
        self.reading = True
        self.abandoned = False  # its caller went: killed, waiting to be reaped

    def close(self) -> None:
        self.conn.close()
        os.close(self.read_fd)


def _fork_attempt(conn: socket.socket, closing: list[Any]) -> _Running:
    """Read the request from ``conn``, fork the attempt's process (which first closes
    ``closing``: the zygote's sockets and pipes, so it holds no other attempt's open), tell the
    caller its pid."""
    request = _read_frame(conn)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for item in (conn, read_fd, *closing):
                item.close() if isinstance(item, socket.socket) else os.close(item)
            import gc

            gc.enable()
            _attempt(request, write_fd)
            code = 0
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    try:
        os.setpgid(pid, pid)  # as the child does: whichever runs first, the group exists
    except OSError:
        pass
    _send(conn, ("pid", pid))
    return _Running(pid, conn, read_fd)


def serve(control: socket.socket) -> None:
    """The zygote's loop, one thread: fork an attempt per socket received, relay each one's
    output and exit code to its caller, kill the group of one whose caller went, and end (with
    every attempt still running) when the caller's control socket closes."""
    import gc

    gc.disable()  # nothing here makes garbage worth collecting; forks copy fewer pages
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's Ctrl-C ends it by its socket
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # a child's exit wakes the select below
    signal.signal(signal.SIGCHLD, lambda *_: None)
    running: dict[int, _Running] = {}
    while True:
        watched: list[Any] = [control, wake_r]
        for one in running.values():
            watched += [one.read_fd] if one.reading else []
            watched += [] if one.abandoned else [one.conn]  # an EOF stays readable: no spin
        ready, _, _ = select.select(watched, [], [], 1.0)
        if wake_r in ready:
            os.read(wake_r, 4096)
        if control in ready:
            try:
                message, fds, _, _ = socket.recv_fds(control, 1 << 16, 1)
            except OSError:
                message, fds = b"", []
            if not message:  # the caller is gone: so is everything it started
                for one in running.values():
                    _kill(one.pid)
                return
            preload = pickle.loads(message)
            if preload:
                _preload(*preload)
            if fds:
                conn = socket.socket(fileno=fds[0])
                closing: list[Any] = [control, wake_r, wake_w]
                for one in running.values():
                    closing += [one.conn, one.read_fd]
                try:
                    one = _fork_attempt(conn, closing)
                except (OSError, EOFError):  # the caller went before its request arrived
                    conn.close()
                else:
                    running[one.pid] = one
        for one in list(running.values()):
            if one.read_fd in ready:
                chunk = os.read(one.read_fd, 1 << 16)
                one.output += chunk
                one.reading = bool(chunk)
            if one.conn in ready and not one.conn.recv(1):  # its caller went or gave up
                one.abandoned = True
                _kill(one.pid)
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            one = running.pop(pid, None)
            if one is None:
                continue
            # exited; a process it started may hold the pipe open: take what is there
            while select.select([one.read_fd], [], [], 0)[0]:
                chunk = os.read(one.read_fd, 1 << 16)
                if not chunk:
                    break
                one.output += chunk
            try:
                _send(one.conn, ("done", os.waitstatus_to_exitcode(status), bytes(one.output)))
            except OSError:
                pass
            one.close()


_PRELOADED: set[str] = set()


def _preload(path: list[str], module: str) -> None:
    """Import ``module`` here once, so every attempt inherits it; an error is the attempt's."""
    if module in _PRELOADED:
        return
    _PRELOADED.add(module)
    for entry in path:
        if entry not in sys.path:
            sys.path.append(entry)
    try:
        # as the attempt would import it (execution mode: the decorators build no IR)
        from unipipe.runtime.loading import import_module

        import_module(module)
    except BaseException:  # noqa: BLE001 - the attempt's process raises it again, as its own
        pass


def _exit_now(write_fd: int) -> None:
    """A target that does nothing (comparisons/perf/zygote.py times an attempt's process)."""


def _spawned() -> None:
    """``python -c`` entry of a spawned zygote: argv[1] is its control socket's descriptor,
    argv[2] the caller's ``sys.path`` (set already), the rest modules to import."""
    control = socket.socket(fileno=int(sys.argv[1]))
    for module in sys.argv[3:]:
        _preload([], module)
    serve(control)


# ---------------------------------------------------------------- the caller's side


class DeadlinePassed(TimeoutError):
    """:meth:`Zygote.run`'s deadline came before the attempt ended (it was killed)."""


class Zygote:
    """The caller's handle on its zygote: :meth:`run` an attempt in a process forked from it."""

    def __init__(self, control: socket.socket, pid: int, exited: Callable[[], bool],
                 spawned: bool):
        self.control, self.pid, self.exited, self.spawned = control, pid, exited, spawned
        self.owner = os.getpid()
        self._send_lock = threading.Lock()

    def alive(self) -> bool:
        return self.owner == os.getpid() and not self.exited()

    def run(self, target: str, args: tuple[Any, ...], *, preload: str | None = None,
            deadline: float | None = None) -> tuple[int | None, bytes]:
        """Run ``target`` (``"module:function"``, called as ``function(write_fd, *args)``) in an
        attempt process; its exit code (None if unknown) and the bytes it wrote.

        ``preload`` (``"module:name"``) is imported in the zygote first, once, so attempts
        inherit it. At ``deadline`` (epoch seconds) the
        attempt is killed and :class:`DeadlinePassed` raised. The wait wakes every 0.1 s, so an
        exception the engine raises in this thread (a timeout: a signal in the main thread, an
        exception injected into a worker thread) ends it promptly; on any exception the
        attempt's process group is killed before it propagates."""
        ours, theirs = socket.socketpair()
        pid: int | None = None
        try:
            with self._send_lock:
                socket.send_fds(self.control, [pickle.dumps((sys.path[:], preload.partition(":")[0])
                                                            if preload else None)],
                                [theirs.fileno()])
            theirs.close()
            _send(ours, {"target": target, "args": args, "env": dict(os.environ),
                         "cwd": os.getcwd(), "path": list(sys.path)})
            buffer = bytearray()
            while True:
                if deadline is not None and time.time() >= deadline:
                    raise DeadlinePassed("the attempt was stopped at its deadline")
                ready, _, _ = select.select([ours], [], [], 0.1)
                if ready:
                    chunk = ours.recv(1 << 16)
                    if not chunk:
                        return None, b""  # the zygote died (killed from outside)
                    buffer += chunk
                    while (frame := _take(buffer)) is not None:
                        if frame[0] == "pid":
                            pid = frame[1]
                        else:
                            return frame[1], frame[2]
        except BaseException:
            if pid is not None:
                _kill(pid)
            raise
        finally:
            theirs.close()
            ours.close()


def _kill(pid: int) -> None:
    """SIGKILL the attempt's process group (the process itself, if it has none yet)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except ProcessLookupError:
            continue


def _fork_zygote() -> Zygote:
    from unipipe.runtime.forking import fork

    ours, theirs = socket.socketpair()
    pid = fork()
    if pid == 0:
        code = 1
        try:
            ours.close()
            serve(theirs)
            code = 0
        finally:
            os._exit(code)
    theirs.close()

    def exited() -> bool:
        try:
            return os.waitpid(pid, os.WNOHANG)[0] != 0
        except ChildProcessError:
            return True

    return Zygote(ours, pid, exited, spawned=False)


def _spawn_zygote(preload: tuple[str, ...]) -> Zygote:
    """A fresh interpreter: this one's flags (``-S`` in a sandbox) and ``sys.path``."""
    import json
    import subprocess

    ours, theirs = socket.socketpair()
    code = ("import json, sys; sys.path[:] = json.loads(sys.argv[2]); "
            "from unipipe.runtime.zygote import _spawned; _spawned()")
    flags = subprocess._args_from_interpreter_flags()  # as multiprocessing's spawn does
    proc = subprocess.Popen([sys.executable, *flags, "-c", code, str(theirs.fileno()),
                             json.dumps(sys.path), *preload],
                            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
    theirs.close()
    return Zygote(ours, proc.pid, lambda: proc.poll() is not None, spawned=True)


def start(preload: tuple[str, ...] = ()) -> Zygote:
    """This process's zygote (made on first use, made again if it died): forked if this
    process has one thread, spawned otherwise (importing ``preload`` first)."""
    global _ZYGOTE
    with _LOCK:
        if _ZYGOTE is None or not _ZYGOTE.alive():
            _ZYGOTE = _fork_zygote() if _threads() == 1 else _spawn_zygote(preload)
        return _ZYGOTE
