"""Running a pipeline on a real Airflow: an isolated home, a migrated SQLite DB, one DAG run.

Two modes (``up.run(p, backend="airflow", mode=...)``):

- ``"dags-test"`` (default): ``airflow dags test`` in a subprocess -- Airflow's own scheduling
  loop, trigger rules, retries, XCom and callbacks, without a scheduler.
- ``"scheduler"``: ``airflow standalone`` (scheduler + dag-processor + api-server + triggerer,
  LocalExecutor), the run triggered through Airflow's REST API (:mod:`unipipe_airflow.server`).

Two engines (``up.run(p, backend="airflow@2.11")``, ``options.extra["version"]``): the Airflow
installed next to unipipe (3.3), or Airflow 2.11 in a virtual environment of its own that
:func:`unipipe_airflow.dagbag.airflow2_python` builds with uv on first use (:class:`Engine`). The
2.11 engine runs the 2.11 dialect through its own ``airflow dags test``; the unipipe sources reach
it through PYTHONPATH (:func:`source_path`).

Either way the home (``AIRFLOW_HOME``, dags folder, SQLite DB, logs) is a fresh folder, the DB a
copy of one migrated once per Airflow version (``airflow db migrate`` is slow) and cached under
``$UNIPIPE_AIRFLOW_CACHE`` (default: the user's cache dir), and the RunResult is built from
Airflow's task-instance records cross-checked with the shim's trace (:mod:`.results`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from unipipe.compiler.backend import RunOptions
from unipipe.ir.models import Pipeline
from unipipe.params import resolve_params
from unipipe.result import RunResult
from unipipe.runtime.store import user_cache_dir
from unipipe_airflow.forkserver import ENV as FORKSERVER_ENV

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


#: The engine versions besides the installed Airflow: version -> the dialect it runs
OWN_ENGINES = ("2.11",)


def run_versions() -> tuple[str, ...]:
    """What ``airflow@VERSION`` accepts: the installed Airflow's dialect, then 2.11."""
    return tuple(dict.fromkeys([engine_dialect(), *OWN_ENGINES]))


@dataclass(frozen=True)
class Engine:
    """One Airflow installation that runs DAGs."""

    #: the apache-airflow version (the migrated DB template is cached per version)
    version: str
    #: its interpreter: ``python -m airflow ...``
    python: str
    #: a virtual environment of its own: unipipe reaches it through PYTHONPATH
    own_env: bool = False

    @property
    def dialect(self) -> str:
        return engine_dialect(self.version)


def airflow2_venv() -> Path:
    """Where the Airflow 2.11 environment lives: ``$UNIPIPE_AIRFLOW2_VENV``; in a checkout of
    unipipe its git-ignored ``.cache/airflow-2.11`` (shared by the tests and the CLI); else the
    user's cache folder."""
    if os.environ.get("UNIPIPE_AIRFLOW2_VENV"):
        return Path(os.environ["UNIPIPE_AIRFLOW2_VENV"])
    from unipipe.venvs import cache_dir

    return cache_dir("airflow-2.11")


def engine_for(version: str | None = None) -> Engine:
    """The engine ``airflow@version`` runs on (None: the installed Airflow); 2.11's virtual
    environment is built on first use (a few minutes with uv downloading, seconds from its cache)."""
    if version is None or version == engine_dialect():
        return Engine(airflow_version(), sys.executable)
    if version == "2.11":
        from unipipe_airflow.dagbag import AIRFLOW2_VERSION, airflow2_python

        return Engine(AIRFLOW2_VERSION, str(airflow2_python(airflow2_venv())), own_env=True)
    raise ValueError(f"airflow cannot run version {version!r}; it runs {', '.join(run_versions())}")


def source_path(folder: Path) -> Path:
    """A folder that holds only ``unipipe`` and ``unipipe_airflow`` (symlinks to the packages
    this process imports), for the PYTHONPATH of an engine in its own environment.

    Why PYTHONPATH rather than installing them into the 2.11 environment (``--no-deps``): the
    tasks then run exactly the sources this run compiled with (no stale copy after an edit, no
    reinstall, one shared environment for every checkout and worktree), and the environment
    stays a plain Airflow 2.11 whose dependencies nothing of ours changes. The shim needs only
    the standard library and fsspec (which Airflow 2.11 depends on). Symlinks, not the packages'
    parent folders: those are the checkout root or the workspace's site-packages, which would put
    everything else there -- Airflow 3 included -- ahead of the 2.11 installation.
    """
    import unipipe
    import unipipe_airflow

    folder.mkdir(parents=True, exist_ok=True)
    for module in (unipipe, unipipe_airflow):
        link = folder / module.__name__
        target = Path(module.__file__).resolve().parent  # type: ignore[arg-type]
        if not link.is_symlink() or link.resolve() != target:
            tmp = folder / f".{module.__name__}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target, target_is_directory=True)
            os.replace(tmp, link)
    return folder


def _site_folders() -> set[str]:
    """This interpreter's site-packages: never on the PYTHONPATH of another Airflow."""
    import site
    import sysconfig

    folders = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    folders.update(site.getsitepackages())
    folders.add(site.getusersitepackages())
    return {str(Path(f).resolve()) for f in folders}


def engine_pythonpath(engine: Engine, root: Path, search_path: list[str],
                      inherited: str | None) -> str:
    """The engine's PYTHONPATH: the user's module folders (and, for an engine of its own, the
    unipipe sources first; folders of this interpreter's site-packages are left out, a module
    installed only there cannot be imported by that engine)."""
    path = [p for p in search_path if p]
    if inherited:
        path.append(inherited)
    if engine.own_env:
        site_folders = _site_folders()
        path = [str(source_path(root / "pythonpath"))] + [
            p for p in path if str(Path(p).resolve()) not in site_folders]
    return os.pathsep.join(dict.fromkeys(path))


def cache_root() -> Path:
    return Path(os.environ.get("UNIPIPE_AIRFLOW_CACHE") or Path(user_cache_dir()) / "airflow")


#: seconds a connection waits for another process's write lock before "database is locked".
#: Airflow sets WAL mode on SQLite (``utils/orm_event_handlers.py`` ~50) but keeps pysqlite's
#: 5 s busy timeout; under a real scheduler on 2 loaded cores (scheduler, dag-processor,
#: api-server and task processes writing at once) 5 s ran out and the failed write surfaced as
#: an HTTP 500 from the API server or a dag-processor ``PendingRollbackError``.
SQLITE_BUSY_TIMEOUT = 60


def sqlite_url(db: Path) -> str:
    """The metadata DB's URL; ``timeout`` is read by SQLAlchemy's pysqlite and aiosqlite dialects
    (checked: ``PRAGMA busy_timeout`` is 60000 on Airflow 3.3 and 2.11)."""
    return f"sqlite:///{db}?timeout={SQLITE_BUSY_TIMEOUT}"


def home_env(home: Path, dags: Path, db: Path | None = None) -> dict[str, str]:
    """The settings that place one Airflow installation: its home, dags folder, DB and logs."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlite_url(db or home / "airflow.db"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }


def clean_env() -> dict[str, str]:
    """This process's environment without any of the user's Airflow settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"}
    env.update({"AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONUNBUFFERED": "1"})
    return env


def base_env(home: Path, dags: Path) -> dict[str, str]:
    """Environment that points Airflow at ``home`` and nothing of the user's."""
    return {**clean_env(), **home_env(home, dags)}


def template_db(engine: Engine | None = None) -> Path:
    """A migrated SQLite metadata DB for an Airflow version, made once and reused.

    On 2.11 ``airflow db migrate`` on an empty DB creates the tables from the ORM models and
    stamps the head revision, without running migrations (``airflow/utils/db.py`` ``upgradedb``
    ~1664 -> ``initdb`` -> ``_create_db_from_orm`` ~800): a few seconds. It also writes a default
    ``airflow.cfg`` into AIRFLOW_HOME (``configuration.py``
    ``write_default_airflow_configuration_if_needed``), which stays in the throwaway home.
    """
    from unipipe.venvs import sqlite_template

    engine = engine or engine_for()

    def migrate(home: Path) -> Path:
        (home / "dags").mkdir()
        env = base_env(home, home / "dags")
        # in the lane's prepared Airflow (its first run makes the template: without the
        # server, most of the migration's seconds are importing Airflow)
        rc = _in_lane_server(engine, ["db", "migrate"], env, home, home / "migrate.log", 600)
        if rc is None:
            proc = subprocess.run([engine.python, "-m", "airflow", "db", "migrate"],
                                  env=env, capture_output=True, text=True, timeout=600,
                                  stdin=subprocess.DEVNULL)
            rc, out = proc.returncode, proc.stdout[-3000:] + proc.stderr[-3000:]
        else:
            out = (home / "migrate.log").read_text(errors="replace")[-6000:]
        if rc != 0 or not (home / "airflow.db").exists():
            raise AirflowRunError("airflow db migrate failed:\n" + out)
        # Airflow sets WAL mode on SQLite (``utils/orm_event_handlers.py`` ~50): sqlite_template
        # folds the write-ahead log into the DB file, which alone is kept
        return home / "airflow.db"

    return sqlite_template(cache_root() / engine.version / "airflow.db", migrate)


def _in_lane_server(engine: Engine, argv: list[str], env: dict[str, str], cwd: Path,
                    log: Path, timeout: float) -> int | None:
    """``airflow ARGV`` in a child of the harness lane's prepared Airflow (its fork server),
    for the installed Airflow only; the exit code, or None when no server listens (nothing
    ran: the caller starts a process of its own, as without one). A server that went away
    after taking the request raises: the command may have started, and running it again (a
    DAG run, a migration) would do it twice in the same DB."""
    server = os.environ.get(FORKSERVER_ENV)
    if not server or server == "0" or engine.own_env:
        return None
    from unipipe import forkserver

    try:
        return forkserver.run(server, argv, env, cwd, log, timeout)
    except (ConnectionRefusedError, FileNotFoundError):
        return None


def fresh_db(dst: Path, engine: Engine | None = None) -> Path:
    """Put a copy of the migrated template DB at ``dst`` for a new run.

    The files SQLite keeps beside a DB in WAL mode (``-wal``, ``-shm``) go first: a run whose
    Airflow was stopped by a signal leaves its write-ahead log behind, and SQLite would replay
    the old run's pages onto the fresh copy (seen on the scheduler lane, whose home a lane
    reuses: the dag-processor then found no ``dag_bundle`` row and never parsed the DAG)."""
    for suffix in ("-wal", "-shm", "-journal"):
        dst.with_name(dst.name + suffix).unlink(missing_ok=True)
    shutil.copyfile(template_db(engine), dst)
    return dst


@dataclass
class Home:
    """One isolated Airflow home with its DAG file compiled into it."""

    root: Path
    dags: Path
    env: dict[str, str]
    dag_id: str
    trace_dir: Path
    engine: Engine = field(default_factory=lambda: engine_for())

    @property
    def db(self) -> Path:
        return self.root / "airflow.db"


def prepare(ir: Pipeline, options: RunOptions) -> Home:
    from unipipe.compiler.driver import compile_ir

    engine = engine_for(options.extra.get("version"))
    work = Path(options.workdir) if options.workdir else Path(tempfile.mkdtemp(prefix="unipipe-airflow-"))
    root = work / "airflow"
    dags = root / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    fresh_db(root / "airflow.db", engine)
    compile_ir(ir, "airflow", dags, target_version=options.extra.get("dialect") or engine.dialect,
               error_level=options.extra.get("error_level", "raise"),
               backoff=options.extra.get("backoff", "exact"), kubernetes=False)
    env = base_env(root, dags)
    trace_dir = Path(env.get("UNIPIPE_TRACE_DIR") or work / "trace")
    env["UNIPIPE_TRACE_DIR"] = str(trace_dir)
    path = engine_pythonpath(engine, root, options.search_path, env.get("PYTHONPATH"))
    if path:
        env["PYTHONPATH"] = path
    env.update(options.env)
    return Home(root, dags, env, ir.name, trace_dir, engine)


def manual_logical_date(ir: Pipeline, asked: str | None = None) -> str | None:
    """The logical date of a run by hand under ``airflow dags test``: ``asked`` (a backfill's
    date, ``extra["logical_date"]``), else None (Airflow's own: now), except after the end of
    the schedule's window: Airflow runs no task of a run whose logical date is after the DAG's
    end_date (``ti_deps/deps/runnable_exec_date_dep.py`` ~47-60, 2.11 alike), so such a run
    stands for the window's end (declared in the support table)."""
    if asked is not None:
        return asked
    sched = ir.schedule
    if sched is None or sched.end is None:
        return None
    from datetime import UTC, datetime

    from unipipe.schedules import parse_when

    end = parse_when(sched.end, sched.timezone)
    return end.astimezone(UTC).isoformat() if datetime.now(UTC) > end else None


def dags_test(home: Home, conf: dict[str, Any], timeout: float,
              logical_date: str | None = None) -> subprocess.CompletedProcess[str]:
    """``airflow dags test DAG -c CONF`` with the home's engine; the exit code is not the
    verdict (a failed run exits 1), the DB records are.

    On 2.11 (``airflow/cli/commands/dag_command.py`` ``dag_test`` ~604-649 -> ``DAG.test`` in
    ``airflow/models/dag.py`` ~2961-3095): one loop in this process that asks the run for
    schedulable task instances, adds 1 to each one's ``try_number`` and runs it in-process with
    ``_run_task`` -> ``ti._run_raw_task`` (callbacks, ``execution_timeout`` by SIGALRM, XCom); when
    nothing is runnable (a retry waiting for its ``retry_delay``) it sleeps 1 s and looks again.
    The run ends with ``SystemExit("DagRun failed")`` when it failed.
    """
    log = home.root / "dags_test.log"
    argv = ["dags", "test", home.dag_id, *([logical_date] if logical_date else []),
            "-c", json.dumps(conf)]
    rc = _in_lane_server(home.engine, argv, home.env, home.root, log, timeout)
    if rc is not None:
        return subprocess.CompletedProcess([home.engine.python, "-m", "airflow", *argv], rc)
    with open(log, "w") as fh:
        proc = subprocess.run(
            [home.engine.python, "-m", "airflow", *argv],
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
    if mode == "scheduler" and options.extra.get("version") not in (None, engine_dialect()):
        raise NotImplementedError(f"the scheduler mode runs on the installed Airflow "
                                  f"{airflow_version()} only, not airflow@{options.extra['version']}")
    values = resolve_params(ir, options.params)
    if options.extra.get("isolated"):  # many machines on one: Celery workers in sandboxes
        from unipipe_airflow import isolated

        return isolated.run(ir, options, values)
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
    run_id: str | None = None
    if mode == "dags-test":
        dags_test(home, values, timeout,
                  manual_logical_date(ir, options.extra.get("logical_date")))
    else:
        from unipipe.compiler.spec import pipeline_alerts_spec
        from unipipe_airflow.server import run_on_scheduler

        run_id = run_on_scheduler(home, values, timeout, alerts=pipeline_alerts_spec(ir))
    records = read_records(home.db, home.dag_id, run_id)
    if records.run_id is None:
        raise AirflowRunError(f"Airflow made no run of {home.dag_id} ({mode}, "
                              f"{time.time() - started:.0f}s); logs in {home.root}, tail:\n"
                              + log_tail(home, "dags_test.log" if mode == "dags-test"
                                         else "standalone.log"))
    result = build_result(ir, records, home.trace_dir, values)
    if home.engine.own_env:
        result.backend = f"airflow@{home.engine.dialect}"
    return result


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
    fresh_db(root / "airflow.db")
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
        manifest.append({"dag_id": ir.name, "conf": params, "env": item.env,
                         "logical_date": manual_logical_date(item.ir)})
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
