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


def start(home: Home, port: int) -> subprocess.Popen[bytes]:
    env = dict(home.env)
    # standalone starts its components as `airflow ...`: this interpreter's scripts come first
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env.update({
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
    log = open(home.root / "standalone.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env,
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


def run_on_scheduler(home: Home, conf: dict[str, Any], timeout: float) -> str:
    """Trigger one run through the REST API and wait for it to finish; return its run id."""
    port = free_port()
    proc = start(home, port)
    api = Api(f"http://127.0.0.1:{port}/api/v2")
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise AirflowRunError("airflow standalone exited before its API answered")
            try:
                api.call("GET", "/monitor/health", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise AirflowRunError(f"the API did not answer in time ({exc})") from exc
                time.sleep(1)
        dag_path = f"/dags/{urllib.request.quote(home.dag_id, safe='')}"
        while True:  # the dag-processor has to parse the file first
            try:
                api.call("GET", dag_path)
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 404 or time.monotonic() > deadline:
                    raise AirflowRunError(f"DAG {home.dag_id} never appeared: {exc}") from exc
                time.sleep(1)
        api.call("PATCH", dag_path, {"is_paused": False})
        run = api.call("POST", f"{dag_path}/dagRuns", {"logical_date": None, "conf": conf})
        run_id = run["dag_run_id"]
        run_path = f"{dag_path}/dagRuns/{urllib.request.quote(run_id, safe='')}"
        while run.get("state") not in FINISHED:
            if time.monotonic() > deadline:
                raise AirflowRunError(f"run {run_id} did not finish in {timeout:.0f}s")
            if proc.poll() is not None:
                raise AirflowRunError("airflow standalone exited during the run")
            time.sleep(1)
            run = api.call("GET", run_path)
        return str(run_id)
    finally:
        stop(proc)
