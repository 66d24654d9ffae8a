"""unipipe.runtime.zygote: attempts forked from a process with one thread, whatever threads
their caller runs; nothing outlives the caller."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import zygote_targets

from unipipe.runtime import zygote

HERE = str(Path(__file__).parent)


def _dead(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie still answers kill(0): read its state
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(params=["forked", "spawned"])
def made(request):
    """A zygote of each kind, made for the test and ended after it."""
    z = (zygote._fork_zygote() if request.param == "forked"
         else zygote._spawn_zygote(("zygote_targets",)))
    yield z
    z.control.close()
    deadline = time.monotonic() + 10
    while not z.exited():  # reaps it (waitpid, or Popen.poll)
        assert time.monotonic() < deadline, "the zygote outlived its control socket"
        time.sleep(0.05)


def test_the_attempt_sees_the_callers_state_at_the_call_and_runs_alone(made, monkeypatch,
                                                                       tmp_path):
    """Environment, folder and sys.path as they are when the attempt starts (set after the
    zygote was made); a process group of its own; one thread; a lock another thread of the
    caller holds throughout is free in the attempt."""
    monkeypatch.setenv("ZYGOTE_PROBE", "set-after-the-zygote")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "extra"))
    release = threading.Event()

    def hold() -> None:
        with zygote_targets.LOCK:
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        code, out = made.run("zygote_targets:describe", ("ZYGOTE_PROBE",),
                             preload="zygote_targets:describe")
    finally:
        release.set()
        holder.join()
    seen = json.loads(out)
    assert code == 0
    assert seen["env"] == "set-after-the-zygote"
    assert seen["cwd"] == str(tmp_path)
    assert seen["path"][0] == str(tmp_path / "extra")
    assert seen["threads"] == 1
    assert seen["took_lock"] is True
    assert seen["pgid"] == seen["pid"] != os.getpid()
    assert seen["ppid"] == made.pid != os.getpid()  # forked from the zygote


def test_a_preloaded_user_module_is_imported_as_an_attempt_imports_it(made):
    """The zygote imports the task's module before the attempts in execution mode, as
    ``unipipe.runtime.loading.import_object`` would in the attempt: its decorators only wrap (the
    policies wait as arguments), and a spawned zygote never imports the IR's pydantic models."""
    assert "zygote_user_module" not in sys.modules
    code, out = made.run("zygote_targets:user_module_mode", ("zygote_user_module",),
                         preload="zygote_user_module:step")
    seen = json.loads(out)
    assert code == 0
    assert seen["preloaded"] is True
    assert seen["deferred"] is True
    if made.spawned:  # a fresh interpreter (a forked one has the test process's modules)
        assert seen["models"] is False


def test_exit_codes_and_partial_output_come_back(made):
    assert made.run("zygote_targets:exit_with", (3,)) == (3, b"")
    assert made.run("zygote_targets:kill_self", ()) == (-signal.SIGKILL, b"partial")


def test_attempts_from_several_threads_at_once_each_end_on_their_own(made):
    """Map elements start attempts from several threads: a quick one's result is not held up
    by a slow sibling (no attempt's process holds another's socket or pipe)."""
    results: dict[str, tuple[float, tuple[int | None, bytes]]] = {}
    start = time.monotonic()

    def one(name: str, seconds: float) -> None:
        out = made.run("zygote_targets:sleep_then_write", (seconds, name))
        results[name] = (time.monotonic() - start, out)

    threads = [threading.Thread(target=one, args=("slow", 4.0))]
    threads += [threading.Thread(target=one, args=(f"quick{i}", 0.1)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert {name: out for name, (_, out) in results.items()} == {
        "slow": (0, b"slow"), "quick0": (0, b"quick0"), "quick1": (0, b"quick1"),
        "quick2": (0, b"quick2")}
    assert max(results[f"quick{i}"][0] for i in range(3)) < 3.0 <= results["slow"][0]


def test_an_exception_in_the_callers_wait_kills_the_attempt(made, tmp_path):
    """A timeout raised in the waiting thread (as Prefect's is) kills the attempt's group."""
    pid_file = tmp_path / "pid"

    class Timeout(Exception):
        pass

    def on_alarm(*_):
        raise Timeout

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        with pytest.raises(Timeout):
            made.run("zygote_targets:sleep_forever", (str(pid_file),))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert _dead(int(pid_file.read_text()))


def test_a_process_with_threads_gets_a_spawned_zygote_and_one_without_a_forked_one():
    script = textwrap.dedent("""
        import sys, threading
        from unipipe.runtime import zygote
        first = zygote.start()
        assert zygote.start() is first  # kept for the process
        if sys.argv[1] == "threads":
            zygote._ZYGOTE = None
            threading.Thread(target=threading.Event().wait, daemon=True).start()
            print("spawned" if zygote.start().spawned else "forked")
        else:
            print("spawned" if first.spawned else "forked")
    """)
    kinds = [subprocess.run([sys.executable, "-c", script, arg], capture_output=True,
                            text=True, check=True, timeout=60).stdout.strip()
             for arg in ("alone", "threads")]
    assert kinds == ["forked", "spawned"]


@pytest.mark.parametrize("kind", ["forked", "spawned"])
def test_nothing_outlives_a_killed_caller(kind, tmp_path):
    """The caller is SIGKILLed mid-attempt (a worker stopped): the attempt and the zygote end."""
    pid_file = tmp_path / "pid"
    script = textwrap.dedent(f"""
        import os, sys, threading
        sys.path.insert(0, {HERE!r})
        from unipipe.runtime import zygote
        if {kind!r} == "spawned":
            threading.Thread(target=threading.Event().wait, daemon=True).start()
        z = zygote.start(("zygote_targets",))
        print(z.pid, flush=True)
        z.run("zygote_targets:sleep_forever", ({str(pid_file)!r},))
    """)
    caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        zygote_pid = int(caller.stdout.readline())
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the attempt did not start"
            time.sleep(0.05)
        attempt = int(pid_file.read_text())
        assert not _dead(attempt, within=0.5)
    finally:
        caller.kill()
        caller.wait()
    assert _dead(attempt)
    assert _dead(zygote_pid)
