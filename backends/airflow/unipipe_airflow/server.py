"""The ``scheduler`` run mode: a real ``airflow standalone`` (scheduler, dag-processor,
api-server, triggerer; LocalExecutor) on 127.0.0.1, the run triggered and watched through
Airflow's REST API (``/api/v2``), then everything stopped.

The API runs with ``simple_auth_manager_all_admins`` (no login) and listens on loopback only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from unipipe_airflow.engine import AirflowRunError, Home

FINISHED = ("success", "failed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Api:
    def __init__(self, base: str):
        self.base = base.rstrip("/")

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30,
             tries: int = 3) -> Any:
        """One API call; an HTTP 5xx (the API server's DB write lost to a lock held by another
        component) is tried again, ``tries`` times in all, 2 s apart. Every call made here is
        safe to repeat: GETs, the unpause PATCH, and a trigger POST that names its run id."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(1, tries + 1):
            req = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    text = resp.read()
                return json.loads(text) if text else None
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == tries:
                    raise
            time.sleep(2)


def guarded(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a process group of its own, led by a guard that ends the group when
    the process that started it is gone (a case killed at its time limit by the harness leaves
    nothing running); :func:`stop` ends it."""
    guard = (
        "import os, signal, subprocess, sys, time\n"
        "parent = int(sys.argv[1])\n"
        "child = subprocess.Popen(sys.argv[2:])\n"
        "signal.signal(signal.SIGTERM, lambda *a: child.terminate())\n"
        "while child.poll() is None:\n"
        "    try:\n"
        "        os.kill(parent, 0)\n"
        "    except ProcessLookupError:\n"
        "        os.killpg(0, signal.SIGKILL)\n"
        "    time.sleep(0.5)\n"
        "sys.exit(child.returncode)\n")
    return subprocess.Popen([sys.executable, "-S", "-c", guard, str(os.getpid()), *argv],
                            start_new_session=True, stdin=subprocess.DEVNULL, **kwargs)


def local_env(home: Home, port: int) -> dict[str, str]:
    """The environment of a one-machine Airflow for ``home`` (LocalExecutor, no login, its API
    on 127.0.0.1:``port``, a 1 s scheduler heartbeat): ``airflow standalone``'s, and the event
    chain's components' (:mod:`unipipe_airflow.chain`)."""
    run_env = dict(home.env)
    # components started as `airflow ...`: this interpreter's scripts come first
    run_env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), run_env.get("PATH", "")])
    run_env.update({
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
    })
    return run_env


def start(home: Home, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``airflow standalone`` for ``home`` with its API on ``port``; ``env`` overrides the
    settings below (the isolated lane's CeleryExecutor, :mod:`unipipe_airflow.isolated`)."""
    run_env = local_env(home, port)
    run_env.update(env or {})
    path = home.root / "standalone.log"
    if path.exists():  # a home reused by a lane's next run: the earlier run's log stays
        path.rename(home.root / f"standalone.{time.time_ns()}.log")
    log = open(path, "wb")
    # guarded: a harness worker killed at its case's time limit leaves no Airflow running
    return guarded([sys.executable, "-m", "airflow", "standalone"], env=run_env, stdout=log,
                   stderr=subprocess.STDOUT, cwd=home.root)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``, from ``/proc``."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def stop_groups(pgids: list[int], grace: float = 30) -> None:
    """SIGTERM the process groups ``pgids``, SIGKILL what is left after ``grace`` seconds, and
    wait until every member is gone (see :func:`stop` for why)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        for pgid in pgids:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        limit = time.monotonic() + wait
        while any(map(group_members, pgids)) and time.monotonic() < limit:
            time.sleep(0.2)
        if not any(map(group_members, pgids)):
            break


def stop(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    """End the standalone process group (only the processes this run started) and wait until
    every member is gone: a component still shutting down (the dag-processor ends its parsing
    processes on SIGTERM) would otherwise write into the DB the lane's next run copies fresh,
    which on a loaded machine left that run's dag-processor without its bundle row."""
    stop_groups([proc.pid], grace)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def wait_ready(proc: subprocess.Popen[bytes] | Callable[[], bool], api: Api, deadline: float,
               pause: float = 1) -> None:
    """Until the API answers its health check (or the deadline passed, or Airflow ended:
    ``proc`` exited, or ``proc()``, a check of several components, says they are not alive)."""
    while True:
        if (not proc()) if callable(proc) else proc.poll() is not None:
            raise AirflowRunError("airflow exited before its API answered")
        try:
            api.call("GET", "/monitor/health", timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise AirflowRunError(f"the API did not answer in time ({exc})") from exc
            time.sleep(pause)


def dag_path(dag_id: str) -> str:
    return f"/dags/{urllib.request.quote(dag_id, safe='')}"


def wait_for_dag(api: Api, dag_id: str, deadline: float, fileloc: str | None = None,
                 alive: Any = None) -> None:
    """Until the dag-processor has parsed ``dag_id`` (from ``fileloc``, when given: a file that
    replaced an earlier one of the same DAG id)."""
    last = "not found"
    while True:
        try:
            details = api.call("GET", dag_path(dag_id) + "/details", tries=1)
            if fileloc is None or details.get("fileloc") == fileloc:
                return
        except urllib.error.HTTPError as exc:
            # 404: not parsed yet; 5xx: seen on a loaded machine while the dag-processor was
            # still writing the DAG (its row before its serialized form): both pass with time
            if exc.code != 404 and exc.code < 500:
                raise AirflowRunError(f"DAG {dag_id}: {exc}") from exc
            last = str(exc)
        if time.monotonic() > deadline:
            raise AirflowRunError(f"DAG {dag_id} never appeared" +
                                  (f" from {fileloc}" if fileloc else "") + f" (last: {last})")
        if alive is not None and not alive():
            raise AirflowRunError("airflow exited while waiting for the DAG to be parsed")
        time.sleep(0.5)


def trigger_and_wait(api: Api, dag_id: str, conf: dict[str, Any], deadline: float,
                     alive: Any = None) -> str:
    """Unpause ``dag_id``, start one run with ``conf``, poll until it finished; its run id."""
    path = dag_path(dag_id)
    api.call("PATCH", path, {"is_paused": False})
    # the run id is ours, so a trigger repeated after a 5xx cannot make a second run: a 409
    # says the first one was made after all
    run_id = f"manual__unipipe_{uuid.uuid4().hex}"
    run_path = f"{path}/dagRuns/{urllib.request.quote(run_id, safe='')}"
    try:
        run = api.call("POST", f"{path}/dagRuns",
                       {"dag_run_id": run_id, "logical_date": None, "conf": conf})
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise
        run = api.call("GET", run_path)
    while run.get("state") not in FINISHED:
        if time.monotonic() > deadline:
            raise AirflowRunError(f"run {run_id} did not finish in time")
        if alive is not None and not alive():
            raise AirflowRunError("airflow exited during the run")
        time.sleep(0.5)
        run = api.call("GET", run_path)
    return str(run_id)


def wait_for_pipeline_alerts(api: Api, dag_id: str, run_id: str, alerts: list[dict[str, Any]],
                             trace_dir: Any, deadline: float, alive: Any = None) -> None:
    """Wait until the run's pipeline alerts are out. A real scheduler ends the DAG run first and
    then hands the DAG's on_success/on_failure_callback to the dag-processor as a callback
    request (``jobs/scheduler_job_runner.py`` ~2890 ``produce_dag_callback``), which runs it
    some seconds later; stopping Airflow when the run ends would lose the alert."""
    from unipipe.runtime import trace

    run = api.call("GET", f"{dag_path(dag_id)}/dagRuns/{urllib.request.quote(run_id, safe='')}")
    event = "success" if run.get("state") == "success" else "failure"
    expected = sum(len([c for c in ("webhook", "email", "callback") if a.get(c)])
                   for a in alerts if event in a.get("on", ()))
    if not expected:
        return
    limit = min(deadline, time.monotonic() + 60)
    while time.monotonic() < limit and (alive is None or alive()):
        sent = [e for e in trace.read(trace_dir, run_id)
                if e.get("kind") == "alert" and e.get("task") is None and e.get("event") == event]
        if len(sent) >= expected:
            return
        time.sleep(0.5)


def run_on_scheduler(home: Home, conf: dict[str, Any], timeout: float,
                     alerts: list[dict[str, Any]] | None = None) -> str:
    """Trigger one run through the REST API and wait for it to finish (and for its pipeline
    ``alerts``, the IR's, to go out); return its run id."""
    port = free_port()
    # one run by hand: the scheduler creates no scheduled runs of its own when the DAG is
    # unpaused (with catchup=True and a start in the past it would create one per missed
    # fire time; jobs/scheduler_job_runner.py ~1923)
    proc = start(home, port, env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"})
    api = Api(f"http://127.0.0.1:{port}/api/v2")
    deadline = time.monotonic() + timeout
    try:
        wait_ready(proc, api, deadline)
        wait_for_dag(api, home.dag_id, deadline, alive=lambda: proc.poll() is None)
        run_id = trigger_and_wait(api, home.dag_id, conf, deadline,
                                  alive=lambda: proc.poll() is None)
        wait_for_pipeline_alerts(api, home.dag_id, run_id, alerts or [], home.trace_dir,
                                 deadline, alive=lambda: proc.poll() is None)
        return run_id
    except (AirflowRunError, urllib.error.URLError) as exc:
        from unipipe_airflow.engine import log_tail

        raise AirflowRunError(f"{exc}; airflow standalone's log, tail:\n"
                              + log_tail(home, "standalone.log")) from exc
    finally:
        stop(proc)
