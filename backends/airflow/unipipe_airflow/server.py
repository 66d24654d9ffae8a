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

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read()
        return json.loads(text) if text else None


def start(home: Home, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``airflow standalone`` for ``home`` with its API on ``port``; ``env`` overrides the
    settings below (the isolated lane's CeleryExecutor, :mod:`unipipe_airflow.isolated`)."""
    run_env = dict(home.env)
    # standalone starts its components as `airflow ...`: this interpreter's scripts come first
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
    run_env.update(env or {})
    log = open(home.root / "standalone.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=run_env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=home.root, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End the standalone process group (only the processes this run started)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def wait_ready(proc: subprocess.Popen[bytes], api: Api, deadline: float) -> None:
    """Until the API answers its health check (or the process ended, or the deadline passed)."""
    while True:
        if proc.poll() is not None:
            raise AirflowRunError("airflow standalone exited before its API answered")
        try:
            api.call("GET", "/monitor/health", timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise AirflowRunError(f"the API did not answer in time ({exc})") from exc
            time.sleep(1)


def dag_path(dag_id: str) -> str:
    return f"/dags/{urllib.request.quote(dag_id, safe='')}"


def wait_for_dag(api: Api, dag_id: str, deadline: float, fileloc: str | None = None,
                 alive: Any = None) -> None:
    """Until the dag-processor has parsed ``dag_id`` (from ``fileloc``, when given: a file that
    replaced an earlier one of the same DAG id)."""
    while True:
        try:
            details = api.call("GET", dag_path(dag_id) + "/details")
            if fileloc is None or details.get("fileloc") == fileloc:
                return
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise AirflowRunError(f"DAG {dag_id}: {exc}") from exc
        if time.monotonic() > deadline:
            raise AirflowRunError(f"DAG {dag_id} never appeared" +
                                  (f" from {fileloc}" if fileloc else ""))
        if alive is not None and not alive():
            raise AirflowRunError("airflow exited while waiting for the DAG to be parsed")
        time.sleep(0.5)


def trigger_and_wait(api: Api, dag_id: str, conf: dict[str, Any], deadline: float,
                     alive: Any = None) -> str:
    """Unpause ``dag_id``, start one run with ``conf``, poll until it finished; its run id."""
    path = dag_path(dag_id)
    api.call("PATCH", path, {"is_paused": False})
    run = api.call("POST", f"{path}/dagRuns", {"logical_date": None, "conf": conf})
    run_id = run["dag_run_id"]
    run_path = f"{path}/dagRuns/{urllib.request.quote(run_id, safe='')}"
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
    proc = start(home, port)
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
    finally:
        stop(proc)
