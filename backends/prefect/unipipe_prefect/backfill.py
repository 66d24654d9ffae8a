"""``unipipe backfill PIPELINE --backend prefect``: the runs a schedule would have created in a
window, created on the Prefect server as scheduled flow runs and run by a real worker.

The dates come from :func:`unipipe.backfill.plan` (the reference meaning of the schedule, not
Prefect's ``CronSchedule.get_dates``, whose DST handling differs: docs/facts/
events-schedules-artifacts.md B3). Prefect's own backfill (``POST /deployments/{id}/schedule``
with past times, prefect/server/api/deployments.py ~756) and its scheduler service both fail on
this environment's SQLAlchemy 2.1.9 (``_insert_scheduled_flow_runs``, models/deployments.py
~1009: 503), so the runs are created client-side, each as its own flow run of the deployment:

- the flow is compiled into a folder and deployed (``create_deployment``) on a work pool of its
  own, its pull step ``set_working_directory`` to that folder;
- one flow run per date: ``create_flow_run_from_deployment(state=Scheduled(scheduled_time=d),
  idempotency_key=...)`` (prefect/client/orchestration/_deployments/client.py ~653); the run's
  ``expected_start_time`` is ``d``, which the flow sees as
  ``prefect.runtime.flow_run.scheduled_start_time`` and the shim passes to every task as
  ``up.current().logical_date`` (runtime.logical_date);
- one ``prefect worker start --type process --limit N`` runs them, at most ``--max-active``
  at once (the worker's limit: prefect/workers/base.py ``limit``, a slot per flow run); runs in
  the past are Late (a Scheduled state), which a worker picks up like any due run;
- as each run ends, its RunResult is built from Prefect's records (as isolated runs do:
  :mod:`.deployed`) and handed to ``progress``.

The idempotency key is ``unipipe-backfill <deployment id> <date>``: asking twice for one date in
one backfill gives one run. The deployment and its pool are the backfill's own (a user's
deployment of the pipeline keeps its pool and code), so a second backfill of the same window
creates new runs (Airflow's ``reprocess_behavior`` has no Prefect counterpart).

``python -m unipipe_prefect.backfill SPEC_JSON REPORT_DIR`` is the process that talks to the
server: it prints ``DONE <date> <report path>`` as each run ends.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unipipe.ir.models import Pipeline
from unipipe.result import RunResult
from unipipe_prefect.server import worker_command

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def run_id_for(date: str) -> str:
    """The unipipe run id of the backfill run for ``date`` (as the local backfill names it)."""
    return "backfill-" + date.replace(":", "").replace("+", "p")


def idempotency_key(deployment_id: Any, date: str) -> str:
    return f"unipipe-backfill {deployment_id} {date}"


def run(backend: Any, ir: Pipeline, dates: list[str], *, max_active: int,
        params: dict[str, Any], progress: Callable[[str, RunResult], None] | None,
        extra: dict[str, Any]) -> list[RunResult]:
    from unipipe.api import search_path
    from unipipe.compiler.backend import CompileOptions, RunOptions
    from unipipe.compiler.diagnostics import ErrorLevel
    from unipipe_prefect import codegen as flowgen
    from unipipe_prefect.runtime import VALUES_URL_ENV

    if extra.get("isolated"):
        from unipipe.backfill import BackfillError

        raise BackfillError("backfill on prefect runs its flow runs on a local process worker; "
                            "isolated (sandboxed) workers are not built for it")
    if not dates:
        return []
    own_dir = not extra.get("workdir")
    workdir = Path(extra["workdir"]) if not own_dir else Path(
        tempfile.mkdtemp(prefix=f"unipipe-prefect-backfill-{flowgen.python_name(ir.name)}-"))
    flows = workdir / "flows"
    backend.compile(ir, flows, CompileOptions(error_level=ErrorLevel.WARN))
    options = RunOptions(params=params, workdir=workdir, search_path=search_path(ir),
                         run_id="backfill", extra=extra)
    env = backend.run_env(workdir, options, "backfill")
    env.pop("UNIPIPE_RUN_ID", None)  # each flow run's own, through its job variables
    tag = uuid.uuid4().hex[:8]
    pool = f"unipipe-backfill-{tag}"
    values = workdir / "values"
    values.mkdir(parents=True, exist_ok=True)
    env[VALUES_URL_ENV] = str(values)
    names = flowgen.Names(ir)
    spec = {"pool": pool, "flow_name": ir.name, "deployment": f"backfill-{tag}",
            "entrypoint": f"{flowgen.module_filename(ir)}:{names.flow_fn}",
            "flows_dir": str(flows), "dates": dates, "params": params,
            "values_url": str(values), "store": ir.store,
            # a run's time limit for each wave of --max-active runs
            "timeout": float(extra.get("timeout", 1800)) * -(-len(dates) // max_active)}
    spec_path = workdir / f"backfill-{tag}.json"
    spec_path.write_text(json.dumps(spec))
    reports = workdir / f"backfill-{tag}-reports"
    reports.mkdir()

    wenv = {**env, "PREFECT_LOGGING_LEVEL": "INFO", "PREFECT_HOME": str(workdir / "worker-home")}
    wlog_path = workdir / f"backfill-{tag}.worker.log"
    dlog_path = workdir / f"backfill-{tag}.log"
    results: dict[str, RunResult] = {}
    with open(dlog_path, "wb") as dlog, \
            process_worker(pool, max_active, wenv, workdir, wlog_path) as worker:
        driver = None
        try:
            driver = subprocess.Popen(
                [sys.executable, "-m", "unipipe_prefect.backfill", str(spec_path), str(reports)],
                env=env, cwd=str(workdir), stdout=subprocess.PIPE, stderr=dlog,
                stdin=subprocess.DEVNULL, text=True)
            assert driver.stdout is not None

            def watch() -> None:  # nobody can run the flow runs once the worker is gone
                while driver.poll() is None:
                    if worker.poll() is not None:
                        driver.kill()
                        return
                    time.sleep(1)

            import threading

            threading.Thread(target=watch, daemon=True).start()
            for line in driver.stdout:
                parts = line.split()
                if len(parts) != 3 or parts[0] != "DONE":
                    continue
                date, path = parts[1], parts[2]
                with open(path, "rb") as fh:
                    report = pickle.load(fh)
                if not report.get("ok"):
                    raise RuntimeError(f"backfill run {date} did not finish: "
                                       f"{report.get('error')}")
                result = result_of(ir, report, run_id_for(date), params,
                                   env["UNIPIPE_TRACE_DIR"])
                results[date] = result
                if progress is not None:
                    progress(date, result)
            rc = driver.wait()
        finally:
            if driver is not None and driver.poll() is None:
                driver.kill()
                driver.wait()
    missing = [d for d in dates if d not in results]
    if missing:
        tail = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in (dlog_path, wlog_path) if p.exists())
        raise RuntimeError(f"the Prefect backfill ended (exit {rc}, worker exit "
                           f"{worker.returncode}) without the runs for {missing}; logs in "
                           f"{workdir}:\n{tail}")
    if own_dir:
        shutil.rmtree(workdir, ignore_errors=True)
    return [results[d] for d in dates]


@contextmanager
def process_worker(pool: str, limit: int, env: dict[str, str], cwd: Path,
                   log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``prefect worker`` of the process type on ``pool``, at most ``limit`` flow runs
    at once, polling every second, in a process group of its own (its flow-run processes go
    with it) that is stopped when the context ends."""
    wenv = {**env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            worker_command(sys.executable, pool, f"{pool}-worker", "--limit", str(limit)),
            env=wenv, cwd=str(cwd), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            yield worker
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()


def result_of(ir: Pipeline, report: dict[str, Any], run_id: str, params: dict[str, Any],
              trace_dir: str) -> RunResult:
    """The RunResult of a final flow run from its :func:`flow_run_report`; an output Prefect
    did not persist (no store) is rebuilt from the task values."""
    from unipipe_prefect.results import build_result

    result = build_result(ir, report, run_id=run_id, params=params, trace_dir=trace_dir)
    if report.get("output_missing") and result.state == "success":
        from unipipe.outputs import evaluate

        result.output = evaluate(ir.output, {t: r.output for t, r in result.tasks.items()
                                             if r.state == "success"}, params)
    return result


# ---------------------------------------------------------------- the process on the server


def flow_run_report(client: Any, fr: Any, values_url: str) -> dict[str, Any]:
    """What :mod:`.deployed` reports for one final flow run."""
    from unipipe_prefect.deployed import _settled_task_runs, _values
    from unipipe_prefect.driver import flow_artifacts, flow_run_tree, flow_run_tries, task_record

    state = fr.state
    report: dict[str, Any] = {"flow_run_id": str(fr.id), "state_type": state.type.value,
                              "state_name": state.name, "message": state.message,
                              "scheduled_start_time": fr.expected_start_time.isoformat()}
    report.update(flow_run_tries(client, fr.id))
    if state.is_completed():
        from prefect.exceptions import MissingResult

        try:
            report["output"] = state.result()
        except MissingResult:  # not persisted (no store): rebuilt from the task values
            report["output_missing"] = True
    report["flow_runs"] = flow_run_tree(client, fr.id)
    tracking = {f["parent_task_run_id"] for f in report["flow_runs"]}
    runs = _settled_task_runs(client, [f["id"] for f in report["flow_runs"]])
    vals = _values(values_url, fr.id)
    report["task_runs"] = [
        task_record(tr, (vals[str(tr.id)],) if str(tr.id) in vals else ())
        for tr in runs if str(tr.id) not in tracking]
    report["artifacts"] = flow_artifacts(client, [f["id"] for f in report["flow_runs"]])
    report["ok"] = True
    return report


def main(argv: list[str]) -> int:
    from datetime import datetime

    from prefect import get_client
    from prefect.states import Scheduled

    from unipipe_prefect.deployed import ensure_deployment

    spec_path, report_dir = argv
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("store"):
        from unipipe_prefect.storage import save_block

        save_block(spec["store"])
    with get_client(sync_client=True) as client:
        deployment_id = ensure_deployment(client, spec, [
            {"prefect.deployments.steps.set_working_directory": {
                "directory": spec["flows_dir"]}}])
        pending: dict[Any, str] = {}
        for date in spec["dates"]:
            fr = client.create_flow_run_from_deployment(
                deployment_id, parameters=spec["params"],
                state=Scheduled(scheduled_time=datetime.fromisoformat(date)),
                idempotency_key=idempotency_key(deployment_id, date),
                name=run_id_for(date),
                job_variables={"env": {"UNIPIPE_RUN_ID": run_id_for(date)}})
            pending[fr.id] = date
        print(f"CREATED {len(pending)}", flush=True)
        deadline = time.monotonic() + float(spec.get("timeout", 1800))
        while pending:
            if time.monotonic() > deadline:
                print(f"TIMEOUT {len(pending)}", flush=True)
                return 1
            for fr_id in list(pending):
                fr = client.read_flow_run(fr_id)
                if fr.state is None or fr.state.type.value not in FINAL:
                    continue
                date = pending.pop(fr_id)
                try:
                    report = flow_run_report(client, fr, spec["values_url"])
                except BaseException:  # noqa: BLE001 - reported to the parent
                    report = {"ok": False, "error": traceback.format_exc()}
                path = os.path.join(report_dir, f"{run_id_for(date)}.pickle")
                with open(path, "wb") as fh:
                    pickle.dump(report, fh)
                print(f"DONE {date} {path}", flush=True)
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# ---------------------------------------------------------------- catchup at deploy


def window_closed(ir: Pipeline, now: Any = None) -> bool:
    """Whether the schedule's ``end`` has passed: its deployment schedule is then inactive."""
    from datetime import UTC, datetime

    from unipipe.schedules import parse_when

    s = ir.schedule
    if s is None or s.end is None:
        return False
    return parse_when(s.end, s.timezone) < (now or datetime.now(UTC))


def catchup_dates(ir: Pipeline, now: Any = None) -> list[str]:
    """``catchup=True``: the fire times from the schedule's ``start`` until now (clipped to its
    ``end``), which Prefect's scheduler never creates (it schedules from now:
    prefect/server/models/deployments.py ~831)."""
    from datetime import UTC, datetime

    from unipipe.schedules import fire_times, parse_when

    s = ir.schedule
    if s is None or not s.catchup or s.start is None:
        return []
    now = now or datetime.now(UTC)
    return [d.isoformat() for d in fire_times(s, parse_when(s.start, s.timezone), now)]


def create_catchup_runs(client: Any, deployment_id: Any, ir: Pipeline,
                        parameters: dict[str, Any] | None = None) -> int:
    """Create the catchup runs of the deployment (a sync client), each ``Scheduled`` at its
    date with the idempotency key ``unipipe-catchup <deployment id> <date>``: a redeploy finds
    them and creates none twice. How many dates there were."""
    from datetime import datetime

    from prefect.states import Scheduled

    dates = catchup_dates(ir)
    for date in dates:
        client.create_flow_run_from_deployment(
            deployment_id, parameters=parameters or {},
            state=Scheduled(scheduled_time=datetime.fromisoformat(date)),
            idempotency_key=f"unipipe-catchup {deployment_id} {date}",
            name=f"catchup-{date.replace(':', '').replace('+', 'p')}")
    return len(dates)
