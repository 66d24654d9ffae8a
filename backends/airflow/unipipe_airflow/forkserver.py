"""One prepared Airflow per harness lane: a process that pays Airflow's start-up once and forks
a fresh ``airflow dags test`` per run (:mod:`unipipe.forkserver` does the serving).

Where an ``airflow dags test`` of a three-task DAG spends its time on this machine (measured with
a stack sampler, 12 s in all): importing Airflow and its CLI (about 4 s), and, on the first call
of the in-process Execution API, Cadwyn building a router per API version
(``cadwyn/applications.py`` ``Cadwyn.__call__`` -> ``_cadwyn_initialize``: about 7 s, every
run, because ``DAG.test`` builds a new ``InProcessExecutionAPI`` app in each process:
``airflow/api_fastapi/execution_api/app.py`` ``InProcessExecutionAPI.app``). The tasks
themselves take about 1 s.

The server does both once, then forks a child per request. The child is a new process with
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
)


def warm() -> None:
    """Import Airflow and build the in-process Execution API app (routes of every version)."""
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # the ORM's relationships, resolved once for every child
    from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI

    app = InProcessExecutionAPI().app
    if getattr(app, "_cadwyn_initialized", True) is False:
        app._cadwyn_initialize()
    # every DAG.test() of a child makes its own InProcessExecutionAPI; they all get this app
    # (its per-request state is the child's: the transport, its event loop thread, the ORM)
    InProcessExecutionAPI.app = property(lambda self: app)  # type: ignore[assignment,method-assign]


def child(request: dict[str, Any]) -> int:
    """The run, in its own process and environment (:func:`unipipe.forkserver.enter`)."""
    from airflow import configuration, settings

    configuration.AIRFLOW_HOME = request["env"].get("AIRFLOW_HOME", configuration.AIRFLOW_HOME)
    settings.initialize()  # configuration variables, logging and the ORM from this environment
    from airflow.__main__ import main

    sys.argv = ["airflow", *request["argv"]]
    try:
        main()
    except SystemExit as exc:  # ``dags test`` of a failed run exits 1
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    from unipipe.forkserver import serve

    serve(sys.argv[1], warm, child)
