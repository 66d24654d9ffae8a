"""An event chain on a real Airflow 3 (issue 14): the producer's task updates an asset
(``outlets``), and Airflow's own scheduler starts the consumer (``schedule=AssetAny/AssetAll``).

Both DAGs go into one home of their own (DB copy, dags folder, trace folder), served by a
scheduler, dag-processor and API server of their own (see "Start-up" below). The producer's
runs are triggered through the REST API one after the other; after each, :func:`settle` waits
until every consumer run has finished and the scheduler has looked at the consumer's queue
again without making a run, so the consumer runs each producer run caused are known before the
next one starts. Each chain keeps its own home and servers (none shared by two cases of a
lane): the tasks run in the servers' environment, which names the chain's trace folder, stores
and DB.

Engine facts (Airflow 3.3, installed source):

- a successful task with outlets records an asset event and queues the consumer: one
  ``AssetDagRunQueue`` row per asset and consumer DAG, merged, not added
  (``assets/manager.py`` ~812-821 ``_queue_dagruns_nonpartitioned_slow_path``), and only for an
  unpaused consumer (~354); a failed task records nothing;
- the scheduler makes ONE run per consumer from all its queued rows, consuming every event since
  the previous asset-triggered run, then deletes the rows it used
  (``jobs/scheduler_job_runner.py`` ~2554-2683 ``_create_dag_runs_asset_triggered``): updates
  that arrive before the run is created collapse into one run; the run has no logical date
  (``logical_date=None``, ``run_after`` = the newest queued row's time, ~2645-2652);
- ``GET /api/v2/dags/{dag_id}/assets/queuedEvents`` lists the queued rows
  (``api_fastapi/core_api/routes/public/assets.py`` ~584-616).

Start-up (most of a chain's time on this machine: about 70 of 110 s under a loaded suite). In a
harness lane with a prepared Airflow (the lane's fork server, :mod:`.forkserver`), the scheduler,
dag-processor and API server are children of that server (:class:`Components`) instead of
``airflow standalone``'s four fresh interpreters: each starts with Airflow imported, in the
chain's own environment (home, DB copy, dags folder, trace folder) and session, as a dags-test
run does. What standalone adds is left out for a reason each: ``db.initdb()``
(``cli/commands/standalone_command.py`` ~218-223, about 18 s here) migrates nothing on a copy of
the template this Airflow migrated (``engine.template_db``), whose default pool and log templates
it would only re-add (``utils/db.py`` ~839-868 ``initdb``); the triggerer (~94) runs deferred
tasks, which a unipipe DAG has none of; the auth manager it forces (~180) is the default one,
set here all the same. Without a fork server (``unipipe run``, a test), standalone as before.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from unipipe.compiler.backend import RunOptions
from unipipe.ir.models import Pipeline
from unipipe.params import resolve_params
from unipipe.result import RunResult

#: seconds the consumer's queue must stay empty, with no new run, after a producer run: the
#: scheduler loops every second here (SCHEDULER_HEARTBEAT_SEC=1 in server.start); not used
#: when ``settle`` is given ``beats`` and the scheduler's heartbeat can be read
QUIET = 4.0
#: the components a chain needs (no triggerer: a unipipe DAG defers nothing)
COMPONENTS = ("scheduler", "dag-processor", "api-server")
AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def scheduler_heartbeat(api: Any) -> datetime | None:
    """The scheduler job's latest heartbeat (``GET /api/v2/monitor/health``,
    ``api/common/airflow_health.py`` ~45), or None when there is none yet."""
    try:
        beat = (api.call("GET", "/monitor/health", timeout=10, tries=1).get("scheduler") or {}
                ).get("latest_scheduler_heartbeat")
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None
    return datetime.fromisoformat(beat) if beat else None


def consumer_runs(api: Any, dag_id: str) -> list[dict[str, Any]]:
    """The consumer's runs, oldest first."""
    from unipipe_airflow.server import dag_path

    runs = api.call("GET", f"{dag_path(dag_id)}/dagRuns?limit=100&order_by=id")["dag_runs"]
    return list(runs)


def queued(api: Any, dag_id: str) -> int:
    """How many asset events wait in ``dag_id``'s queue (rows of ``AssetDagRunQueue``)."""
    from unipipe_airflow.server import dag_path

    try:
        return int(api.call("GET", f"{dag_path(dag_id)}/assets/queuedEvents")["total_entries"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # nothing queued
            return 0
        raise


def settle(api: Any, dag_id: str, deadline: float, alive: Any = None,
           quiet: float = QUIET, beats: int | None = None) -> list[dict[str, Any]]:
    """Until every run of ``dag_id`` finished and neither its runs nor its queue changed for
    ``quiet`` seconds; its runs then. The queue need not be empty: in ``all`` mode
    (``AssetAll``) a row waits there until the other assets are updated too, which the
    scheduler checks on every loop (``models/dag.py`` ~683-760 ``dags_needing_dagruns``:
    ``dag_ready`` on the timetable's asset condition).

    ``beats``: done instead once the scheduler heartbeat ``beats`` times (distinct
    ``latest_scheduler_heartbeat`` values) after the calm began, however long that takes. One
    scheduler loop creates the asset-triggered runs first (``_do_scheduling``:
    ``_create_dagruns_for_dags``, ``jobs/scheduler_job_runner.py`` ~1924) and heartbeats last
    (``perform_heartbeat`` ~1859, at most once a loop, in the same thread), so the loop of a
    second heartbeat after the calm began started after it: it saw every queued row there was
    and made no run of them. A fixed ``quiet`` is no such proof: a scheduler starved of CPU
    can take longer than that for one loop. Only while no heartbeat can be read at all (the
    health endpoint answers none) does ``quiet`` decide."""
    from unipipe_airflow.engine import AirflowRunError
    from unipipe_airflow.server import FINISHED

    calm_since: float | None = None
    calm_wall: datetime | None = None
    heard: set[datetime] = set()
    beating = False  # a heartbeat was read during this settle
    seen: tuple[int, int] | None = None
    while True:
        wall = datetime.now().astimezone()  # the API server's clock is this machine's
        # the heartbeat is read before the runs and the queue: a loop that heartbeat before
        # this poll made its runs before it too
        beat = scheduler_heartbeat(api) if beats is not None else None
        beating = beating or beat is not None
        runs = consumer_runs(api, dag_id)
        now = (len(runs), queued(api, dag_id))
        idle = all(r["state"] in FINISHED for r in runs)
        if not idle:
            calm_since = None
        elif calm_since is None or now != seen:
            calm_since, calm_wall, heard = time.monotonic(), wall, set()
        else:
            if beat is not None and calm_wall is not None and beat > calm_wall:
                heard.add(beat)
            if beats is not None and beating:
                if len(heard) >= beats:
                    return runs
            elif time.monotonic() - calm_since >= quiet:
                return runs
        seen = now
        if time.monotonic() > deadline:
            raise AirflowRunError(f"{dag_id}: its runs did not settle in time: {runs}")
        if alive is not None and not alive():
            raise AirflowRunError("airflow exited while the consumer's runs were settling")
        time.sleep(0.5)


class Components:
    """The chain's scheduler, dag-processor and API server, each a child of the lane's fork server
    at ``server`` (``airflow scheduler`` and so on through Airflow's CLI, :func:`.forkserver.child`):
    a process group and log (``<name>.log`` in the home) of its own, in the home's environment.
    A thread per component holds its connection: if this process dies, the server's handler
    kills the component (``unipipe/forkserver.py`` ``_handle``); :meth:`stop` ends them first."""

    def __init__(self, server: str, env: dict[str, str], home: Any, port: int):
        self.server, self.env, self.home = server, env, home
        # the CLI's defaults were read from the server's configuration when its parser was
        # built (``cli/cli_config.py`` ~742-760: ``--port``/``--workers``/``--host`` default to
        # ``conf.get("api", ...)`` at import): the API server is given them on its command line
        self.argv = {"scheduler": ["scheduler"], "dag-processor": ["dag-processor"],
                     "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port),
                                    "--workers", "1"]}
        self.pids: dict[str, int] = {}
        self.ended: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []

    def start(self) -> Components:
        from unipipe import forkserver

        def one(name: str) -> None:
            try:
                code: Any = forkserver.run(self.server, self.argv[name], self.env, self.home.root,
                                           self.home.root / f"{name}.log", 24 * 3600,
                                           on_start=lambda pid: self.pids.__setitem__(name, pid))
            except Exception as exc:  # noqa: BLE001 - reported through alive()
                code = f"{type(exc).__name__}: {exc}"
            self.ended[name] = code

        for name in COMPONENTS:
            thread = threading.Thread(target=one, args=(name,), name=f"chain-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def alive(self) -> bool:
        return not self.ended

    def log(self, chars: int = 4000) -> str:
        from unipipe_airflow.engine import log_tail

        return "\n".join(f"--- {name} (ended: {self.ended.get(name, 'no')}):\n"
                         + log_tail(self.home, f"{name}.log", chars // len(COMPONENTS))
                         for name in COMPONENTS)

    def stop(self, grace: float = 30) -> None:
        """SIGTERM each component's process group, SIGKILL what is left after ``grace`` s, and
        wait until every member is gone (as :func:`.server.stop` does, for the same reason)."""
        from unipipe_airflow.server import stop_groups

        limit = time.monotonic() + 10
        while len(self.pids) + len(self.ended) < len(COMPONENTS) and time.monotonic() < limit:
            time.sleep(0.1)  # a component still being forked: its pid comes with the answer
        stop_groups(list(self.pids.values()), grace)
        for thread in self.threads:
            thread.join(timeout=10)


def component_env(home: Any, port: int) -> dict[str, str]:
    """The environment :func:`.server.start` gives ``airflow standalone`` (which hands its own
    to the components), the auth manager standalone forces
    (``cli/commands/standalone_command.py`` ~177-183), and one JWT secret for the chain: the
    scheduler signs each task's token and the API server checks it with ``[api_auth]
    jwt_secret``, which, unset, every process makes up for itself
    (``api_fastapi/auth/tokens.py`` ~548-556; standalone's components read the one that
    ``configuration.py`` ~629 wrote into the home's new ``airflow.cfg``, which these, forked
    from a configured Airflow, never read)."""
    import secrets

    from unipipe_airflow.server import local_env

    env = local_env(home, port)
    env.update({"AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32)})
    return env


def warm_execution_api(port: int, deadline: float) -> None:
    """Ask the API server's Execution API for its health once, before anything else is asked:
    Cadwyn builds its versioned routers on the app's first request (``cadwyn/applications.py``
    ~274-298 ``__call__`` -> ``_cadwyn_initialize``), synchronously, so the server answers no one
    while it does. Otherwise the producer's first task paid it (its ``PATCH .../run`` took 15 s
    under a loaded suite, with a retry) while the REST calls polling the run waited behind it;
    asked here, with a timeout of its own, it overlaps the DAG files' parsing instead, and no
    other call of ours is waiting (a concurrent ``GET .../details`` timed out at 30 s on a
    machine loaded to 20)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/execution/health",
                                    timeout=max(5.0, deadline - time.monotonic())):
            pass
    except OSError:
        pass  # only a warm-up: the calls that follow report what is wrong


def run_chain(producer: Pipeline, consumer: Pipeline, runs: list[dict[str, Any]],
              options: RunOptions) -> tuple[list[RunResult], list[list[RunResult]]]:
    """The producer's runs on a real scheduler and, per run, the consumer runs Airflow made."""
    from unipipe.compiler.driver import compile_ir
    from unipipe_airflow import server
    from unipipe_airflow.engine import FORKSERVER_ENV, AirflowRunError, log_tail, prepare
    from unipipe_airflow.results import build_result, read_records

    if options.extra.get("version") not in (None, "3.3") or options.extra.get("isolated"):
        raise NotImplementedError("the event chain runs on the installed Airflow 3 under "
                                  "airflow standalone only (not 2.11's Datasets, not isolated)")
    own = options.workdir is None
    base = Path(options.workdir) if options.workdir else Path(tempfile.mkdtemp(
        prefix="unipipe-airflow-chain-"))
    work = base / f"chain-{uuid.uuid4().hex[:8]}"
    home = prepare(producer, replace(options, workdir=work))
    compile_ir(consumer, "airflow", home.dags, target_version=home.engine.dialect,
               kubernetes=False)
    timeout = float(options.extra.get("timeout", 900))
    deadline = time.monotonic() + timeout
    port = server.free_port()
    lane_server = os.environ.get(FORKSERVER_ENV)
    if lane_server and lane_server != "0" and not home.engine.own_env:
        comps: Components | None = Components(lane_server, component_env(home, port),
                                               home, port).start()
        alive = comps.alive
    else:  # no prepared Airflow to fork from: standalone's own interpreters
        comps, proc = None, server.start(home, port)
        alive = lambda: proc.poll() is None  # noqa: E731
    api = server.Api(f"http://127.0.0.1:{port}/api/v2")
    produced: list[RunResult] = []
    started: list[list[RunResult]] = []
    defaults = resolve_params(consumer, {})
    try:
        server.wait_ready(alive, api, deadline, pause=0.5)
        warm_execution_api(port, deadline)
        server.wait_for_dag(api, producer.name, deadline, alive=alive)
        server.wait_for_dag(api, consumer.name, deadline, alive=alive)
        # a paused consumer is not queued for (assets/manager.py ~354): unpause it first
        api.call("PATCH", server.dag_path(consumer.name), {"is_paused": False})
        known: set[str] = set()
        for params in runs:
            values = resolve_params(producer, params)
            run_id = server.trigger_and_wait(api, producer.name, values, deadline, alive=alive)
            produced.append(build_result(producer, read_records(home.db, producer.name, run_id),
                                         home.trace_dir, values))
            new = [r for r in settle(api, consumer.name, deadline, alive, beats=2)
                   if r["dag_run_id"] not in known]
            known |= {r["dag_run_id"] for r in new}
            started.append([build_result(consumer, read_records(home.db, consumer.name,
                                                                r["dag_run_id"]),
                                         home.trace_dir, defaults) for r in new])
    except (AirflowRunError, urllib.error.URLError) as exc:
        logs = comps.log() if comps is not None else (
            "airflow standalone's log, tail:\n" + log_tail(home, "standalone.log"))
        raise AirflowRunError(f"{exc}; {logs}") from exc
    finally:
        if comps is not None:
            comps.stop()
        else:
            server.stop(proc)
    if own:
        shutil.rmtree(base, ignore_errors=True)
    return produced, started
