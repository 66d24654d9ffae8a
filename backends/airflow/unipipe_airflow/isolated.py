"""Isolated Airflow runs (``up.run(..., backend="airflow", isolated=True)``, ``conform
--isolated``): many machines on one, as MWAA or Cloud Composer run a DAG on Celery workers.

Each run gets, on 127.0.0.1, what such a deployment has:

- a **broker**: a Redis server (Debian's ``redis-server``), the Celery broker and result backend;
- a **control plane**: ``airflow scheduler``, ``dag-processor`` and ``api-server`` with the
  CeleryExecutor (``AIRFLOW__CORE__EXECUTOR=CeleryExecutor``), in a sandbox of its own
  (:mod:`unipipe.sandbox`) with its own metadata DB;
- two **Celery workers** (``airflow celery worker``), each in a sandbox of its own.

What reaches them, and how: the pipeline's code package (wheels of unipipe, unipipe-airflow and
the user's modules, :mod:`unipipe.deploy.package`) and the compiled DAG file are published to the
store (``<store>/code/<digest>/`` and ``.../airflow-dags/<tag>/<file>``). Every sandbox is made
from what it fetches there: the wheels unpacked into its site folder (the "image"), the DAG into
its own dags folder, at the same relative path (what MWAA's sync of its S3 dags folder and
Composer's of its bucket do; Airflow's task runner parses the DAG from ``[core] dags_folder`` of
the worker: ``airflow/sdk/execution_time/task_runner.py`` ``parse`` ~1005-1028, the
``dags-folder`` bundle). A sandbox's interpreter runs with ``-S``, so the checkout's editable
install of unipipe is invisible to it.

What the workers share with the control plane: the broker, the Execution API over HTTP
(``[core] execution_api_server_url``: in Airflow 3 a task talks to the API server, never to the
metadata DB) and the store. A worker's ``sql_alchemy_conn`` names an empty file of its own
sandbox. Every attempt (a process the worker's supervisor forks for it) gets its own HOME,
TMPDIR and working folder under its worker's sandbox (``UNIPIPE_ATTEMPT_ROOT``, applied by
:func:`unipipe_airflow.runtime.enter_attempt_folder`), and each worker names itself in the task
instance's ``hostname`` (``[core] hostname_callable``), so the records tell who ran what.

Everything is started per run and stopped after it: every run, the second of a cached case
included, meets machines that have never seen the pipeline. The RunResult comes from the control
plane's metadata DB (:mod:`.results`), cross-checked with the shim's trace.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from unipipe.compiler.backend import RunOptions
from unipipe.compiler.spec import pipeline_alerts_spec
from unipipe.ir.models import Pipeline
from unipipe.result import RunResult

WORKERS = 2
#: the Celery queue every task goes to (the celery profile names no other)
QUEUE = "default"
#: the control plane's processes (each ``airflow <component>``)
CONTROL_PLANE = ("scheduler", "dag-processor", "api-server")


class IsolatedRunError(RuntimeError):
    """The isolated run could not be set up or did not finish; the message has the logs' tails."""


def redis_server() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server"
                                             if Path("/usr/bin/redis-server").exists() else None)
    if not found:
        raise IsolatedRunError(
            "the isolated Airflow lane needs a Redis server for Celery's broker: install "
            "Debian's redis-server (scripts/test.sh does, as root: apt-get install redis-server)")
    return found


def stop_all(procs: list[subprocess.Popen[bytes]], grace: float = 5) -> None:
    """SIGTERM every process group at once, SIGKILL what is left after ``grace`` seconds: the
    run is over, the "machines" go."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    end = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(timeout=30)


def _tail(path: Path, chars: int = 3000) -> str:
    return f"--- {path.name}\n" + (path.read_text(errors="replace")[-chars:] if path.exists()
                                   else "(no log)")


def _celery_env(broker: str, api_port: int) -> dict[str, str]:
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"{broker}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"{broker}/1",
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": QUEUE,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "unipipe_airflow.runtime.worker_hostname",
    }


def run(ir: Pipeline, options: RunOptions, values: dict[str, Any]) -> RunResult:
    import fsspec

    from unipipe import sandbox
    from unipipe.compiler.driver import compile_ir
    from unipipe.deploy.package import build_code_package
    from unipipe_airflow import server
    from unipipe_airflow.engine import clean_env, engine_dialect, fresh_db, home_env
    from unipipe_airflow.results import build_result, read_records

    if ir.store is None:
        raise ValueError("an isolated run needs a shared store (--store): in a sandbox the "
                         "store is the only medium a task shares with another")
    if options.extra.get("version") not in (None, engine_dialect()):
        raise NotImplementedError(f"the isolated lane runs on the installed Airflow only, not "
                                  f"airflow@{options.extra['version']}")
    timeout = float(options.extra.get("timeout", 1800))
    deadline = time.monotonic() + timeout
    tag = (options.run_id or uuid.uuid4().hex[:12]).replace("/", "-")
    own = None if options.workdir else Path(tempfile.mkdtemp(prefix="unipipe-airflow-isolated-"))
    work = Path(options.workdir or own) / "isolated" / tag
    if work.exists():
        shutil.rmtree(work)
    compiled = work / "compiled"
    compiled.mkdir(parents=True)
    out = compile_ir(ir, "airflow", compiled, target_version=engine_dialect(),
                     error_level=options.extra.get("error_level", "raise"),
                     backoff=options.extra.get("backoff", "exact"), kubernetes=False,
                     airflow_executor="celery")
    dag_file = next(p for p in out.paths if p.suffix == ".py")
    # the deploy: the code package and the DAG file go to the store, nowhere else
    package = build_code_package(ir, options.search_path, work / "code", backends=["airflow"])
    code = sandbox.publish_code(package, ir.store)
    rel = f"{tag}/{dag_file.name}"
    fs, root = fsspec.core.url_to_fs(f"{code}/airflow-dags")
    sandbox.put(fs, f"{root}/{rel}", dag_file.read_bytes())
    wheels = sandbox.fetch_code(code)

    def machine(name: str) -> Any:
        """A sandbox made only from the store: the wheels, and the dags folder synced."""
        box = sandbox.make(work / "sandboxes" / name, wheels)
        dags = box.root / "dags"
        (dags / tag).mkdir(parents=True)
        (dags / rel).write_bytes(fs.cat_file(f"{root}/{rel}"))
        return box

    # the run's environment, minus this machine's folders (the sandboxes set their own)
    run_env = {**clean_env(), **options.env}
    run_env.pop("PYTHONPATH", None)
    trace_dir = Path(run_env.get("UNIPIPE_TRACE_DIR") or work / "trace")
    run_env["UNIPIPE_TRACE_DIR"] = str(trace_dir)

    api_port, redis_port = server.free_port(), server.free_port()
    broker = f"redis://127.0.0.1:{redis_port}"
    celery = _celery_env(broker, api_port)
    started: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def launch(name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        log = work / f"{name}.log"
        with open(log, "wb") as fh:
            started.append((name, server.guarded(argv, env=env, cwd=str(cwd), stdout=fh,
                                           stderr=subprocess.STDOUT), log))

    try:
        (work / "redis").mkdir()
        launch("redis", [redis_server(), "--port", str(redis_port), "--bind", "127.0.0.1",
                         "--save", "", "--appendonly", "no", "--dir", str(work / "redis")],
               {"PATH": os.environ.get("PATH", os.defpath)}, work / "redis")
        control = machine("control-plane")
        cenv = control.env(run_env)
        cenv.update(home_env(control.root / "airflow", control.root / "dags"))
        (control.root / "airflow").mkdir()
        fresh_db(control.root / "airflow" / "airflow.db")
        cenv.update(celery)
        cenv.update({
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "1",
            "UNIPIPE_WORKER_NAME": "control-plane",
        })
        # its components one by one: ``airflow standalone`` forces the LocalExecutor
        # (standalone_command.py ``calculate_env`` ~177-180); no triggerer (nothing defers)
        for component in CONTROL_PLANE:
            launch(component, [str(control.python), "-m", "airflow", component], cenv,
                   control.work)
        for i in range(1, WORKERS + 1):
            name = f"worker-{i}"
            box = machine(name)
            wenv = box.env(run_env)
            wenv.update(home_env(box.root / "airflow", box.root / "dags",
                                 box.root / "airflow" / "not-the-metadata-db.sqlite"))
            wenv.update(celery)
            wenv.update({"UNIPIPE_WORKER_NAME": name,
                         "UNIPIPE_ATTEMPT_ROOT": str(box.root / "attempts")})
            launch(name, [str(box.python), "-m", "airflow", "celery", "worker", "--concurrency",
                          "1", "--skip-serve-logs", "--queues", QUEUE, "--celery-hostname",
                          f"{name}@unipipe"], wenv, box.work)

        def alive() -> bool:
            if any(p.poll() is not None for n, p, _ in started
                   if n == "redis" or n in CONTROL_PLANE):
                return False
            return any(p.poll() is None for n, p, _ in started if n.startswith("worker-"))

        api = server.Api(f"http://127.0.0.1:{api_port}/api/v2")
        server.wait_ready(dict((n, p) for n, p, _ in started)["api-server"], api, deadline)
        server.wait_for_dag(api, ir.name, deadline, fileloc=str(control.root / "dags" / rel),
                            alive=alive)
        run_id = server.trigger_and_wait(api, ir.name, values, deadline, alive=alive)
        server.wait_for_pipeline_alerts(api, ir.name, run_id, pipeline_alerts_spec(ir),
                                        trace_dir, deadline, alive=alive)
    except Exception as exc:
        stop_all([p for _n, p, _l in started])
        tails = "\n".join(_tail(log) for _n, _p, log in started)
        raise IsolatedRunError(f"the isolated Airflow run did not finish: {exc}\n{tails}") from exc
    # the run is over (every task instance final): the records first, then the machines go
    records = read_records(control.root / "airflow" / "airflow.db", ir.name, run_id)
    stop_all([p for _n, p, _l in started], grace=1)
    result = build_result(ir, records, trace_dir, values)
    if not options.extra.get("keep"):
        shutil.rmtree(work / "sandboxes", ignore_errors=True)  # gone with the "machines"
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)
    return result
