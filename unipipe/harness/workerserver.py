"""A harness lane's worker fork server: ``python -m unipipe.harness.workerserver SOCKET``.

Every run of a case is a worker process of its own (:mod:`unipipe.harness.worker`). Started
fresh, each one paid its imports again: unipipe's IR, loader and code generators (about 0.5 s
of CPU), and on the Kubeflow lane kfp (about 1.2 s more: ``kfp.client`` imports the
Kubernetes client). A lane makes 70-80 runs per engine. The server pays those imports once
per lane; each run is a child forked from it (:mod:`unipipe.forkserver`: a session of its own,
the run's environment, working folder and ``sys.path``; the child's exit takes its engine
processes with it when the harness kills it at the case's time limit), so a run still starts
in a process that has never run a pipeline: nothing but imported modules is inherited.

What it imports (:func:`warm`): the worker's own modules, the lane's backend module (its entry
point), and the modules the backend names in ``harness_preload`` (a class attribute, optional).
None of them may read the environment when imported: the child runs with the run's
environment, not the server's (this is why Prefect, which does, is not preloaded).

``UNIPIPE_CONFORM_FORK=0`` turns it off: one ``python -m unipipe.harness.worker`` per run.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

#: the lane's backend: its entry-point name (``UNIPIPE_WORKER_BACKEND``, set by the harness)
BACKEND_ENV = "UNIPIPE_WORKER_BACKEND"
#: "0": no server, a fresh interpreter per run
SWITCH_ENV = "UNIPIPE_CONFORM_FORK"

#: what every worker imports before it runs a case (unipipe.harness.worker._run)
BASE = (
    "unipipe.harness.worker", "unipipe.authoring.loader", "unipipe.compiler.backend",
    "unipipe.compiler.codegen", "unipipe.compiler.diagnostics", "unipipe.compiler.driver",
    "unipipe.compiler.registry", "unipipe.ir.errors", "unipipe.store", "unipipe.api",
    "unipipe.runtime.trace",
)


def enabled() -> bool:
    return os.environ.get(SWITCH_ENV, "1") != "0"


def _backend_class(name: str) -> Any:
    from unipipe.compiler.registry import available

    eps = available()
    return eps[name].load() if name in eps else None


def warm() -> None:
    for module in BASE:
        importlib.import_module(module)
    backend = _backend_class(os.environ.get(BACKEND_ENV, ""))
    for module in getattr(backend, "harness_preload", ()):
        importlib.import_module(module)


def child(request: dict[str, Any]) -> int:
    """One worker run: ``argv`` is ``["unipipe.harness.worker", JOB]``."""
    from unipipe.harness import worker

    sys.argv = [worker.__file__ or "worker", *request["argv"][1:]]
    return worker.main(request["argv"][1:])


if __name__ == "__main__":
    from unipipe.forkserver import serve

    serve(sys.argv[1], warm, child)
