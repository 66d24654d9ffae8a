"""One prepared Airflow per harness lane: a process that pays Airflow's start-up once and forks
a fresh ``airflow dags test`` per run (:mod:`unipipe.forkserver` does the serving).

Where an ``airflow dags test`` of a three-task DAG spends its time on this machine (measured with
a stack sampler, 12 s in all): importing Airflow and its CLI (about 4 s), and, on the first call
of the in-process Execution API, Cadwyn building a router per API version
(``cadwyn/applications.py`` ``Cadwyn.__call__`` -> ``_cadwyn_initialize``: about 7 s, every
run, because ``DAG.test`` builds a new ``InProcessExecutionAPI`` app in each process:
``airflow/api_fastapi/execution_api/app.py`` ``InProcessExecutionAPI.app``). The tasks
themselves take about 1 s.

The server does both once, then forks a child per request. Measured per run after that (a
five-task case, cProfile of a child), it also pays once what each child paid again before its
first task: the CLI's argument parser, the metrics registry's YAML, about 160 modules a run
imported (TaskFlow decorators, the DAG-to-DB sync, the WSGI bridge, unipipe's runtime shim)
and, skipped instead, the migration-heads check of a DB copied from a template this Airflow
migrated: about 0.4 s less from a worker's start to the first task (1.2 s -> 0.8 s). A lane's
first run also migrates that template in a child (``engine.template_db``) instead of starting
``airflow db migrate`` (4-5 s -> under 1 s). The child is a new process with
nothing of an earlier run: it takes the run's environment (home, dags folder, metadata DB copy,
trace folder, receivers), working folder and log, re-reads Airflow's settings from that
environment (``airflow.settings.initialize``: configuration variables, logging, a new ORM
engine) and runs Airflow's own CLI entry point with ``dags test DAG -c CONF``, as the
subprocess did. The parent never opens a database, starts a thread or runs a task, so what a
child inherits is imported code and the Execution API's routes, built for no run in particular.

Used by the harness (:meth:`unipipe_airflow.backend.Backend.lane_service` starts one per lane
of the installed Airflow in ``dags-test`` mode and hands its socket to the lane's workers as
``UNIPIPE_AIRFLOW_FORKSERVER``); ``unipipe run`` outside the harness starts ``airflow dags test``
as before (one run gains nothing from a server whose warm-up costs more than it saves).
"""

from __future__ import annotations

import sys
from typing import Any

#: the environment variable that names a lane's fork server socket
ENV = "UNIPIPE_AIRFLOW_FORKSERVER"

_PRELOAD = (
    "airflow", "airflow.__main__", "airflow.cli.cli_parser", "airflow.cli.commands.dag_command",
    "airflow.models", "airflow.sdk", "airflow.sdk.definitions.dag",
    "airflow.sdk.execution_time.supervisor", "airflow.sdk.execution_time.task_runner",
    "airflow.providers.standard.operators.python", "airflow.api_fastapi.execution_api.app",
    # what every child imported again before its first task (seen by diffing ``sys.modules``
    # around a child): the TaskFlow decorators a DAG file uses, the DAG-to-DB sync, the local
    # bundle, the in-process API's WSGI bridge and its anyio backend, and the runtime shim
    "airflow.providers.standard.decorators.python", "airflow.sdk.definitions.decorators",
    "airflow.dag_processing.collection", "airflow.dag_processing.bundles.local",
    "a2wsgi", "anyio._backends._asyncio", "jinja2.ext", "tomllib", "timeit", "encodings.idna",
    "airflow.version", "airflow.sdk.definitions.asset.metadata",
    "airflow.providers.standard.operators.empty",
    "airflow.providers.standard.operators.trigger_dagrun",
    "airflow.providers.standard.sensors.external_task",
    # unipipe's own modules a task imports (never the user's: each run imports its own)
    "unipipe.authoring.decorators", "unipipe_airflow.runtime", "unipipe.runtime",
    "unipipe.runtime.store", "unipipe.runtime.trace", "unipipe.runtime.retry",
    "unipipe.runtime.loading", "unipipe.runtime.forking", "unipipe.runtime.zygote",
)


def warm() -> None:
    """Import Airflow and build the in-process Execution API app (routes of every version)."""
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # the ORM's relationships, resolved once for every child
    # the CLI's argument parser (``airflow/cli/cli_parser.py`` ``get_parser`` ~227, ``@cache``d;
    # its commands were collected when the module was imported above, from this environment's
    # settings as they would be in the child) and the metrics registry every DAG run's first
    # ``Stats.incr`` loads from a YAML file (``_shared/observability/metrics/stats.py``
    # ``_get_registry`` ~108, a module global): data only, no database, no thread
    from airflow._shared.observability.metrics import stats
    from airflow.cli.cli_parser import get_parser

    get_parser()
    stats._get_registry()
    from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI

    app = InProcessExecutionAPI().app
    if getattr(app, "_cadwyn_initialized", True) is False:
        app._cadwyn_initialize()
    # every DAG.test() of a child makes its own InProcessExecutionAPI; they all get this app
    # (its per-request state is the child's: the transport, its event loop thread, the ORM)
    InProcessExecutionAPI.app = property(lambda self: app)  # type: ignore[assignment,method-assign]


def child(request: dict[str, Any]) -> int:
    """The run, in its own process and environment (:func:`unipipe.forkserver.enter`)."""
    from unipipe.runtime import zygote
    from unipipe_airflow.runtime import ZYGOTE_PRELOAD

    # the attempts' zygote, forked now while this process has one thread (``dags test`` starts
    # its in-process API's threads below); unipipe_airflow.runtime._in_child forks from it
    zygote.start(ZYGOTE_PRELOAD)
    from airflow import configuration, settings

    configuration.AIRFLOW_HOME = request["env"].get("AIRFLOW_HOME", configuration.AIRFLOW_HOME)
    settings.initialize()  # configuration variables, logging and the ORM from this environment
    # The CLI wrapper compares the DB's alembic heads with the migration scripts' before every
    # command (``airflow/utils/cli.py`` ``action_logging`` wrapper ~105 ->
    # ``utils/db.py`` ``check_and_run_migrations`` ~953: alembic and mako imported, the
    # scripts read): the run's DB is a copy of a template this Airflow migrated itself
    # (``engine.template_db``), so its heads are the scripts'. An environment that sets the
    # option keeps its own value (the variable wins over ``conf.set``).
    configuration.conf.set("database", "check_migrations", "False")
    from airflow.__main__ import main

    sys.argv = ["airflow", *request["argv"]]
    try:
        main()
    except SystemExit as exc:  # ``dags test`` of a failed run exits 1
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        # the child leaves by ``os._exit``: close the ORM's connections as an exiting process
        # would, so SQLite folds its write-ahead log into the DB file (``settings.dispose_orm``)
        settings.dispose_orm()
    return 0


if __name__ == "__main__":
    from unipipe.forkserver import serve

    serve(sys.argv[1], warm, child)
