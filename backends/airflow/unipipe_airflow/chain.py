"""An event chain on a real Airflow 3 (issue 14): the producer's task updates an asset
(``outlets``), and Airflow's own scheduler starts the consumer (``schedule=AssetAny/AssetAll``).

Both DAGs go into one home served by ``airflow standalone`` (:mod:`.server`: scheduler,
dag-processor, API server, triggerer). The producer's runs are triggered through the REST API
one after the other; after each, :func:`settle` waits until the consumer's queue is empty and
every consumer run has finished, so the consumer runs each producer run caused are known before
the next one starts.

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
"""

from __future__ import annotations

import shutil
import tempfile
import time
import urllib.error
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from unipipe.compiler.backend import RunOptions
from unipipe.ir.models import Pipeline
from unipipe.params import resolve_params
from unipipe.result import RunResult

#: seconds the consumer's queue must stay empty, with no new run, after a producer run: the
#: scheduler loops every second here (SCHEDULER_HEARTBEAT_SEC=1 in server.start)
QUIET = 4.0


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
           quiet: float = QUIET) -> list[dict[str, Any]]:
    """Until every run of ``dag_id`` finished and neither its runs nor its queue changed for
    ``quiet`` seconds; its runs then. The queue need not be empty: in ``all`` mode
    (``AssetAll``) a row waits there until the other assets are updated too, which the
    scheduler checks on every loop (``models/dag.py`` ~683-760 ``dags_needing_dagruns``:
    ``dag_ready`` on the timetable's asset condition)."""
    from unipipe_airflow.engine import AirflowRunError
    from unipipe_airflow.server import FINISHED

    calm_since: float | None = None
    seen: tuple[int, int] | None = None
    while True:
        runs = consumer_runs(api, dag_id)
        now = (len(runs), queued(api, dag_id))
        idle = all(r["state"] in FINISHED for r in runs)
        if not idle:
            calm_since = None
        elif calm_since is None or now != seen:
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since >= quiet:
            return runs
        seen = now
        if time.monotonic() > deadline:
            raise AirflowRunError(f"{dag_id}: its runs did not settle in time: {runs}")
        if alive is not None and not alive():
            raise AirflowRunError("airflow exited while the consumer's runs were settling")
        time.sleep(0.5)


def run_chain(producer: Pipeline, consumer: Pipeline, runs: list[dict[str, Any]],
              options: RunOptions) -> tuple[list[RunResult], list[list[RunResult]]]:
    """The producer's runs on a real scheduler and, per run, the consumer runs Airflow made."""
    from unipipe.compiler.driver import compile_ir
    from unipipe_airflow import server
    from unipipe_airflow.engine import AirflowRunError, log_tail, prepare
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
    proc = server.start(home, port)
    api = server.Api(f"http://127.0.0.1:{port}/api/v2")
    alive = lambda: proc.poll() is None  # noqa: E731
    produced: list[RunResult] = []
    started: list[list[RunResult]] = []
    defaults = resolve_params(consumer, {})
    try:
        server.wait_ready(proc, api, deadline)
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
            new = [r for r in settle(api, consumer.name, deadline, alive)
                   if r["dag_run_id"] not in known]
            known |= {r["dag_run_id"] for r in new}
            started.append([build_result(consumer, read_records(home.db, consumer.name,
                                                                r["dag_run_id"]),
                                         home.trace_dir, defaults) for r in new])
    except (AirflowRunError, urllib.error.URLError) as exc:
        raise AirflowRunError(f"{exc}; airflow standalone's log, tail:\n"
                              + log_tail(home, "standalone.log")) from exc
    finally:
        server.stop(proc)
    if own:
        shutil.rmtree(base, ignore_errors=True)
    return produced, started
