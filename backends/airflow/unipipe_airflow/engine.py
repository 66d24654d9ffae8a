"""Running a pipeline on a real Airflow: an isolated home, a migrated SQLite DB, one DAG run.

Two modes (``up.run(p, backend="airflow", mode=...)``):

- ``"dags-test"`` (default): ``airflow dags test`` in a subprocess -- Airflow's own scheduling
  loop, trigger rules, retries, XCom and callbacks, without a scheduler.
- ``"scheduler"``: ``airflow standalone`` (scheduler + dag-processor + api-server + triggerer,
  LocalExecutor), the run triggered through Airflow's REST API (:mod:`unipipe_airflow.server`).

Either way the home (``AIRFLOW_HOME``, dags folder, SQLite DB, logs) is a fresh folder, the DB a
copy of one migrated once per Airflow version (``airflow db migrate`` is slow) and cached under
``$UNIPIPE_AIRFLOW_CACHE`` (default: the user's cache dir), and the RunResult is built from
Airflow's task-instance records cross-checked with the shim's trace (:mod:`.results`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from unipipe.compiler.backend import RunOptions
from unipipe.ir.models import Pipeline
from unipipe.params import resolve_params
from unipipe.result import RunResult
from unipipe.runtime.store import user_cache_dir

MODES = ("dags-test", "scheduler")


class AirflowRunError(RuntimeError):
    """Airflow did not produce a DAG run; the message ends with the tail of its log."""


def airflow_version() -> str:
    return dist_version("apache-airflow")


def engine_dialect(version: str | None = None) -> str:
    """The dialect to compile for the installed Airflow."""
    major, minor = (int(x) for x in (version or airflow_version()).split(".")[:2])
    if major >= 3:
        return "3.3" if minor >= 3 else "3.0"
    return "2.11" if minor >= 11 else "2.10"


def cache_root() -> Path:
    return Path(os.environ.get("UNIPIPE_AIRFLOW_CACHE") or Path(user_cache_dir()) / "airflow")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def base_env(home: Path, dags: Path) -> dict[str, str]:
    """Environment that points Airflow at ``home`` and nothing of the user's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def template_db() -> Path:
    """A migrated SQLite metadata DB for the installed Airflow, made once and reused."""
    root = cache_root() / airflow_version()
    db = root / "airflow.db"
    if db.exists():
        return db
    with _locked(root / ".lock"):
        if db.exists():
            return db
        home = Path(tempfile.mkdtemp(prefix="migrate-", dir=root))
        try:
            (home / "dags").mkdir()
            proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"],
                                  env=base_env(home, home / "dags"), capture_output=True,
                                  text=True, timeout=600, stdin=subprocess.DEVNULL)
            if proc.returncode != 0 or not (home / "airflow.db").exists():
                raise AirflowRunError("airflow db migrate failed:\n" + proc.stdout[-3000:]
                                      + proc.stderr[-3000:])
            os.replace(home / "airflow.db", db)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    return db


@dataclass
class Home:
    """One isolated Airflow home with its DAG file compiled into it."""

    root: Path
    dags: Path
    env: dict[str, str]
    dag_id: str
    trace_dir: Path

    @property
    def db(self) -> Path:
        return self.root / "airflow.db"


def prepare(ir: Pipeline, options: RunOptions) -> Home:
    from unipipe.compiler.driver import compile_ir

    work = Path(options.workdir) if options.workdir else Path(tempfile.mkdtemp(prefix="unipipe-airflow-"))
    root = work / "airflow"
    dags = root / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template_db(), root / "airflow.db")
    compile_ir(ir, "airflow", dags, target_version=options.extra.get("dialect") or engine_dialect(),
               error_level=options.extra.get("error_level", "raise"),
               backoff=options.extra.get("backoff", "exact"), kubernetes=False)
    env = base_env(root, dags)
    trace_dir = Path(env.get("UNIPIPE_TRACE_DIR") or work / "trace")
    env["UNIPIPE_TRACE_DIR"] = str(trace_dir)
    path = [p for p in options.search_path if p]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    if path:
        env["PYTHONPATH"] = os.pathsep.join(path)
    env.update(options.env)
    return Home(root, dags, env, ir.name, trace_dir)


def dags_test(home: Home, conf: dict[str, Any], timeout: float) -> subprocess.CompletedProcess[str]:
    log = home.root / "dags_test.log"
    with open(log, "w") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", home.dag_id, "-c", json.dumps(conf)],
            env=home.env, stdout=fh, stderr=subprocess.STDOUT, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, cwd=home.root)
    return proc


def log_tail(home: Home, name: str = "dags_test.log", chars: int = 4000) -> str:
    path = home.root / name
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def run_pipeline(backend: Any, ir: Pipeline, options: RunOptions) -> RunResult:
    mode = options.extra.get("mode", "dags-test")
    if mode not in MODES:
        raise ValueError(f"airflow run mode is one of {MODES}, not {mode!r}")
    values = resolve_params(ir, options.params)
    home = prepare(ir, options)
    result = _run_prepared(ir, home, values, mode, options)
    if not options.workdir:  # a folder of our own: gone after a run, kept (for its logs) on error
        shutil.rmtree(home.root.parent, ignore_errors=True)
    return result


def _run_prepared(ir: Pipeline, home: Home, values: dict[str, Any], mode: str,
                  options: RunOptions) -> RunResult:
    from unipipe_airflow.results import build_result, read_records

    timeout = float(options.extra.get("timeout", 1800))
    started = time.time()
    if mode == "dags-test":
        dags_test(home, values, timeout)
    else:
        from unipipe_airflow.server import run_on_scheduler

        run_on_scheduler(home, values, timeout)
    records = read_records(home.db, home.dag_id)
    if records.run_id is None:
        raise AirflowRunError(f"Airflow made no run of {home.dag_id} ({mode}, "
                              f"{time.time() - started:.0f}s); logs in {home.root}, tail:\n"
                              + log_tail(home, "dags_test.log" if mode == "dags-test"
                                         else "standalone.log"))
    return build_result(ir, records, home.trace_dir, values)


# ---------------------------------------------------------------- many runs, one Airflow process


@dataclass
class Planned:
    """One run of a batch: a pipeline, its parameters, the dialect to compile it for, and
    environment variables set around the run (the batch's own otherwise)."""

    ir: Pipeline
    params: dict[str, Any] = field(default_factory=dict)
    dialect: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def run_batch(planned: list[Planned], *, workdir: Path, search_path: list[str] | None = None,
              timeout: float = 1800) -> list[RunResult | Exception]:
    """Run every planned pipeline in one Airflow home and one ``dag.test()`` process.

    The same pipeline compiled for two dialects gets the dialect in its DAG id (one dags
    folder holds both); the same pipeline and dialect twice is one DAG run twice.
    """
    from unipipe.compiler.driver import compile_ir
    from unipipe_airflow.results import build_result, read_records

    root = Path(workdir) / "airflow"
    dags = root / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template_db(), root / "airflow.db")
    compiled: dict[tuple[str, str], Pipeline] = {}
    names: dict[str, str] = {}
    manifest, irs, values = [], [], []
    for item in planned:
        dialect = item.dialect or engine_dialect()
        key = (item.ir.name, dialect)
        if key not in compiled:
            ir = item.ir
            if names.setdefault(ir.name, dialect) != dialect:
                ir = ir.model_copy(update={"name": f"{ir.name}-{dialect.replace('.', '-')}"})
            compile_ir(ir, "airflow", dags, target_version=dialect, kubernetes=False)
            compiled[key] = ir
        ir = compiled[key]
        params = resolve_params(item.ir, item.params)
        irs.append(ir)
        values.append(params)
        manifest.append({"dag_id": ir.name, "conf": params, "env": item.env})
    env = base_env(root, dags)
    trace_dir = Path(env.setdefault("UNIPIPE_TRACE_DIR", str(Path(workdir) / "trace")))
    paths = [p for p in search_path or [] if p] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    (root / "manifest.json").write_text(json.dumps(manifest))
    with open(root / "dags_test.log", "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "unipipe_airflow.dagtest",
                               str(root / "manifest.json")], env=env, stdout=subprocess.PIPE,
                              stderr=fh, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              cwd=root)
    reports: dict[int, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("UNIPIPE-RUN "):
            report = json.loads(line.removeprefix("UNIPIPE-RUN "))
            reports[report["index"]] = report
    out: list[RunResult | Exception] = []
    for index, (ir, params) in enumerate(zip(irs, values)):
        report = reports.get(index, {"error": "no report; log tail:\n" + proc.stdout[-2000:]})
        if "run_id" not in report:
            out.append(AirflowRunError(report["error"]))
            continue
        records = read_records(root / "airflow.db", ir.name, report["run_id"])
        out.append(build_result(ir, records, trace_dir, params))
    return out
