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

**In a harness lane** (``conform --isolated``, :func:`lane_control_plane`, started by the
backend's ``lane_service``) the broker, the scheduler and the API server are the lane's, started
once, as an MWAA or Composer environment is long-lived; its image is unipipe and
unipipe-airflow only (published to the store, fetched into its sandbox): the scheduler and the
API server read serialized DAGs from the DB and never import a DAG file. Per run, as above: the
code package and the DAG file go to the store; the DAG file is synced from there into the
environment's dags folder under a folder of the run's own tag (``<dags>/<tag>/<file>``, as MWAA
syncs its S3 dags folder); two fresh Celery workers and a fresh **dag-processor** start, each in
a sandbox made from the run's code package. The dag-processor is the run's and not the lane's
because it runs the DAG's callbacks (``on_failure_callback`` of the DAG, a task's callbacks when
the scheduler failed it): they need the run's environment (alert receivers, trace folder) and,
for a ``callback`` alert, the user's code, which the lane's image does not have. After the run
the records of this DAG id *and* run id are read, the workers and the dag-processor stopped, and
the run's DAG file removed, so the next run of the same DAG id (a case's second run, or another
case with the same pipeline name) is parsed from its own file (its ``fileloc`` awaited).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
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
#: the control plane's processes a lane keeps (the dag-processor is each run's: see above)
LANE_CONTROL_PLANE = ("scheduler", "api-server")
#: the lane's control plane, as JSON (:class:`Lane`), in the environment of the lane's runs
LANE_ENV = "UNIPIPE_AIRFLOW_ISOLATED_LANE"


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


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


class _Machines:
    """The processes a run (or a lane) starts, each in a process group of its own, led by a
    guard (:func:`unipipe_airflow.server.guarded`), with its log in ``logs``."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def launch(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        from unipipe_airflow import server

        log = self.logs / f"{name}.log"
        with open(log, "wb") as fh:
            self.started.append((name, server.guarded(argv, env=env, cwd=str(cwd), stdout=fh,
                                                      stderr=subprocess.STDOUT), log))

    def proc(self, name: str) -> subprocess.Popen[bytes]:
        return next(p for n, p, _ in self.started if n == name)

    def running(self, names: tuple[str, ...]) -> bool:
        """Every process of ``names`` runs, and at least one worker."""
        if any(p.poll() is not None for n, p, _ in self.started if n in names):
            return False
        return any(p.poll() is None for n, p, _ in self.started if n.startswith("worker-"))

    def stop(self, grace: float = 5) -> None:
        stop_all([p for _n, p, _l in self.started], grace)

    def tails(self) -> str:
        return "\n".join(_tail(log) for _n, _p, log in self.started)


def _start_broker(machines: _Machines, folder: Path) -> str:
    """A Redis server of its own on a free port: Celery's broker and result backend."""
    from unipipe_airflow import server

    port = server.free_port()
    folder.mkdir(parents=True)
    machines.launch("redis", [redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(folder)],
                    {"PATH": os.environ.get("PATH", os.defpath)}, folder)
    return f"redis://127.0.0.1:{port}"


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


def _control_env(box: Any, base: dict[str, str], broker: str, api_port: int, secret: str,
                 dags: Path, db: Path) -> dict[str, str]:
    """The environment of a control-plane component (scheduler, dag-processor, api-server)
    running in sandbox ``box`` against the metadata DB ``db`` and the dags folder ``dags``."""
    from unipipe_airflow.engine import home_env

    env = box.env(base)
    env.update(home_env(box.root / "airflow", dags, db))
    env.update(_celery_env(broker, api_port))
    env.update({
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret,
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
        # only the runs triggered here: unpausing a scheduled DAG would otherwise make the
        # scheduler create runs of its own (``jobs/scheduler_job_runner.py`` ~1923 reads
        # ``use_job_schedule``, ~347), which in a lane's long-lived control plane would go on
        # after the run that unpaused it
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        # the dags folder is listed every second (``dag_processing/manager.py`` ~677: a bundle
        # is refreshed when ``refresh_interval`` has passed; ~942 deactivates DAGs whose file
        # is gone)
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "1",
        "UNIPIPE_WORKER_NAME": "control-plane",
    })
    return env


def _start_control_plane(machines: _Machines, box: Any, env: dict[str, str],
                         components: tuple[str, ...]) -> None:
    # its components one by one: ``airflow standalone`` forces the LocalExecutor
    # (standalone_command.py ``calculate_env`` ~177-180); no triggerer (nothing defers)
    for component in components:
        machines.launch(component, [str(box.python), "-m", "airflow", component], env, box.work)


def _start_workers(machines: _Machines, machine: Any, run_env: dict[str, str], broker: str,
                   api_port: int) -> None:
    """``WORKERS`` Celery workers, each in a fresh sandbox ``machine(name)`` made from the run's
    code package."""
    from unipipe_airflow.engine import home_env

    for i in range(1, WORKERS + 1):
        name = f"worker-{i}"
        box = machine(name)
        # the image's PATH, none of the user's tool folders (sandbox.image_path_entries), as
        # the KFP and Prefect lanes' task processes have
        wenv = box.env(run_env, image_path=True)
        wenv.update(home_env(box.root / "airflow", box.root / "dags",
                             box.root / "airflow" / "not-the-metadata-db.sqlite"))
        wenv.update(_celery_env(broker, api_port))
        wenv.update({"UNIPIPE_WORKER_NAME": name,
                     "UNIPIPE_ATTEMPT_ROOT": str(box.root / "attempts"),
                     # no stale-bundle cleanup process beside the worker: the dags-folder
                     # bundle has no versions to clean (celery_command.py ~143-151 starts
                     # none when the interval is 0)
                     "AIRFLOW__DAG_PROCESSOR__STALE_BUNDLE_CLEANUP_INTERVAL": "0"})
        # no mingle (asking the other workers for their state at start, a wait of its own)
        # and no gossip: nothing here uses either (providers/celery/cli/celery_command.py
        # ~331-334 pass the flags to Celery's worker)
        machines.launch(name, [str(box.python), "-m", "airflow", "celery", "worker",
                               "--concurrency", "1", "--skip-serve-logs", "--queues", QUEUE,
                               "--celery-hostname", f"{name}@unipipe", "--without-mingle",
                               "--without-gossip"], wenv, box.work)


@dataclass(frozen=True)
class Lane:
    """A harness lane's control plane, as its runs find it (JSON in :data:`LANE_ENV`)."""

    api_port: int
    broker: str
    secret: str
    dags: str
    db: str
    pids: tuple[int, ...]

    @classmethod
    def from_env(cls) -> Lane | None:
        text = os.environ.get(LANE_ENV)
        if not text or text == "0":
            return None
        data = json.loads(text)
        return cls(**{**data, "pids": tuple(data["pids"])})

    def alive(self) -> bool:
        return all(_running(pid) for pid in self.pids)


def _end_abandoned(api: Any) -> None:
    """Fail the lane's DAG runs still going: a run whose case was killed at its time limit left
    its DAG run behind (the lane's runs go one after the other, so none of them is live)."""
    from unipipe_airflow import server

    runs = api.call("GET", "/dags/~/dagRuns?state=running&state=queued&limit=100")
    for r in runs.get("dag_runs", []):
        api.call("PATCH", f"{server.dag_path(r['dag_id'])}/dagRuns/"
                 f"{urllib.parse.quote(r['dag_run_id'], safe='')}", {"state": "failed"})


def _wait_for_celery_results(broker: str, db: Path, dag_id: str, run_id: str,
                             deadline: float, limit: float = 15) -> None:
    """Until the Celery task of each of the run's task attempts has its result stored in the
    broker's result backend (at most ``limit`` seconds). A task instance ends (through the
    Execution API) a moment before its Celery task does; a worker killed in that moment leaves
    the Celery task PENDING to the lane's scheduler, whose CeleryExecutor then counts it as
    running for good (``providers/celery/executors/celery_executor.py`` ~309 ignores PENDING;
    ``executors/base_executor.py`` ~350: open slots = parallelism - running). Celery's Redis
    backend keeps a result at ``celery-task-meta-<task id>`` (the task instance's
    ``external_executor_id``); with ``task_track_started`` (``default_celery.py`` ~192) it is
    there from the start, so its status is what tells."""
    import sqlite3

    import redis

    query = ("SELECT external_executor_id FROM {} WHERE dag_id = ? AND run_id = ? "
             "AND external_executor_id IS NOT NULL")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        ids = {row[0] for table in ("task_instance", "task_instance_history")
               for row in con.execute(query.format(table), (dag_id, run_id))}
    client = redis.Redis.from_url(f"{broker}/1")
    end = min(deadline, time.monotonic() + limit)
    try:
        while ids and time.monotonic() < end:
            for task in list(ids):
                raw = client.get(f"celery-task-meta-{task}")
                if raw and json.loads(raw).get("status") in ("SUCCESS", "FAILURE", "REVOKED"):
                    ids.discard(task)
            if ids:
                time.sleep(0.2)
    finally:
        client.close()


@contextmanager
def lane_control_plane(folder: Path, store: str | None = None) -> Iterator[dict[str, str]]:
    """A harness lane's long-lived broker, scheduler and API server (see the module doc); the
    environment that points the lane's runs at them. Its image (unipipe and unipipe-airflow,
    no user code) is published to ``store`` (a folder of the lane without one) and fetched into
    its sandbox from there."""
    from unipipe import sandbox
    from unipipe.deploy.package import project_wheel
    from unipipe_airflow import server
    from unipipe_airflow.engine import clean_env

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    wheels = {w.name: w.read_bytes() for w in map(project_wheel, ("unipipe", "unipipe-airflow"))}
    digest = hashlib.sha256(b"".join(n.encode() + b"\0" + hashlib.sha256(d).digest()
                                     for n, d in sorted(wheels.items()))).hexdigest()
    url = sandbox.publish_wheels(wheels, digest, store or str(folder / "store"))
    box = sandbox.make(folder / "control-plane", sandbox.fetch_code(url))
    dags, db = box.root / "dags", box.root / "airflow" / "airflow.db"
    dags.mkdir()
    db.parent.mkdir()
    machines = _Machines(folder)
    api_port = server.free_port()
    api = server.Api(f"http://127.0.0.1:{api_port}/api/v2")
    try:
        broker = _start_broker(machines, folder / "redis")
        env = _control_env(box, clean_env(), broker, api_port, secrets.token_hex(16), dags, db)
        with open(folder / "migrate.log", "wb") as log:
            done = subprocess.run([str(box.python), "-m", "airflow", "db", "migrate"], env=env,
                                  cwd=box.work, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=600)
        if done.returncode != 0:
            raise IsolatedRunError("airflow db migrate failed\n" + _tail(folder / "migrate.log"))
        # room for the slots of Celery tasks a run killed at its case's time limit left
        # PENDING (see the workers' stop in :func:`run`)
        env["AIRFLOW__CORE__PARALLELISM"] = "32"
        _start_control_plane(machines, box, env, LANE_CONTROL_PLANE)
        server.wait_ready(machines.proc("api-server"), api, time.monotonic() + 600)
    except Exception as exc:
        machines.stop()
        raise IsolatedRunError(f"the isolated Airflow lane's control plane did not start: "
                               f"{exc}\n{machines.tails()}") from exc
    lane = Lane(api_port, broker, env["AIRFLOW__API_AUTH__JWT_SECRET"], str(dags), str(db),
                tuple(p.pid for _n, p, _l in machines.started))
    try:
        yield {LANE_ENV: json.dumps(asdict(lane))}
    finally:
        machines.stop()


def run(ir: Pipeline, options: RunOptions, values: dict[str, Any]) -> RunResult:
    import fsspec

    from unipipe import sandbox
    from unipipe.compiler.driver import compile_ir
    from unipipe.deploy.package import build_code_package
    from unipipe_airflow import server
    from unipipe_airflow.engine import clean_env, engine_dialect, fresh_db
    from unipipe_airflow.results import build_result, read_records

    if ir.store is None:
        raise ValueError("an isolated run needs a shared store (--store): in a sandbox the "
                         "store is the only medium a task shares with another")
    if options.extra.get("version") not in (None, engine_dialect()):
        raise NotImplementedError(f"the isolated lane runs on the installed Airflow only, not "
                                  f"airflow@{options.extra['version']}")
    timeout = float(options.extra.get("timeout", 1800))
    deadline = time.monotonic() + timeout
    lane = Lane.from_env()
    tag = (options.run_id or uuid.uuid4().hex[:12]).replace("/", "-")
    own = None if options.workdir else Path(tempfile.mkdtemp(prefix="unipipe-airflow-isolated-"))
    work = Path(options.workdir or own) / "isolated" / tag
    if work.exists():
        shutil.rmtree(work)
    compiled = work / "compiled"
    compiled.mkdir(parents=True)

    def mark(what: str) -> None:
        """The run's timeline (``timeline.txt``: seconds since the epoch, what was done)."""
        with open(work / "timeline.txt", "a") as fh:
            fh.write(f"{time.time():.3f} {what}\n")

    mark("start")
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
    mark("published and fetched")

    def sync_dag(dags: Path) -> Path:
        """The run's DAG file from the store into a dags folder, at its path there."""
        (dags / tag).mkdir(parents=True)
        (dags / rel).write_bytes(fs.cat_file(f"{root}/{rel}"))
        return dags / rel

    def machine(name: str) -> Any:
        """A sandbox made only from the store: the wheels, and the dags folder synced."""
        box = sandbox.make(work / "sandboxes" / name, wheels)
        sync_dag(box.root / "dags")
        return box

    # the run's environment, minus this machine's folders (the sandboxes set their own)
    run_env = {**clean_env(), **options.env}
    for key in ("PYTHONPATH", LANE_ENV):
        run_env.pop(key, None)
    trace_dir = Path(run_env.get("UNIPIPE_TRACE_DIR") or work / "trace")
    run_env["UNIPIPE_TRACE_DIR"] = str(trace_dir)

    machines = _Machines(work)
    synced: Path | None = None
    try:
        if lane is None:  # the run's own broker and control plane
            api_port, secret = server.free_port(), secrets.token_hex(16)
            broker = _start_broker(machines, work / "redis")
            control = machine("control-plane")
            dags, db = control.root / "dags", control.root / "airflow" / "airflow.db"
            db.parent.mkdir()
            fresh_db(db)
            components = CONTROL_PLANE
        else:  # the lane's, with a dag-processor of the run's (see the module doc)
            api_port, secret, broker = lane.api_port, lane.secret, lane.broker
            dags, db = Path(lane.dags), Path(lane.db)
            control = machine("dag-processor")
            components = ("dag-processor",)
        api = server.Api(f"http://127.0.0.1:{api_port}/api/v2")
        if lane is not None:
            _end_abandoned(api)
            synced = sync_dag(dags)
        cenv = _control_env(control, run_env, broker, api_port, secret, dags, db)
        _start_control_plane(machines, control, cenv, components)
        _start_workers(machines, machine, run_env, broker, api_port)
        mark("started")
        watched = components + (("redis",) if lane is None else ())

        def alive() -> bool:
            return machines.running(watched) and (lane is None or lane.alive())

        if lane is None:
            server.wait_ready(machines.proc("api-server"), api, deadline)
        server.wait_for_dag(api, ir.name, deadline, fileloc=str(dags / rel), alive=alive)
        mark("parsed")
        run_id = server.trigger_and_wait(api, ir.name, values, deadline, alive=alive)
        mark("finished")
        server.wait_for_pipeline_alerts(api, ir.name, run_id, pipeline_alerts_spec(ir),
                                        trace_dir, deadline, alive=alive)
        # the run is over (every task instance final): the records first, then the machines go
        records = read_records(db, ir.name, run_id)
    except Exception as exc:
        machines.stop()
        raise IsolatedRunError(f"the isolated Airflow run did not finish: {exc}\n"
                               f"{machines.tails()}") from exc
    finally:
        if synced is not None:  # the lane's dags folder forgets the run's DAG file
            shutil.rmtree(synced.parent, ignore_errors=True)
    mark("read")
    if lane is not None:
        _wait_for_celery_results(broker, db, ir.name, run_id, deadline)
    machines.stop(grace=1)
    mark("stopped")
    result = build_result(ir, records, trace_dir, values)
    if not options.extra.get("keep"):
        shutil.rmtree(work / "sandboxes", ignore_errors=True)  # gone with the "machines"
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)
    return result
