"""Pipelines that look at where their tasks run: the isolated lanes' tests of every backend
(tests/kubeflow/test_isolated.py, tests/prefect/test_prefect_isolated.py,
tests/airflow/test_airflow_isolated.py).

This folder is on the test's search path; ``only_on_the_compiling_machine.txt`` lies next to this
module in the checkout and is not part of the pipeline's code package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import unipipe as up


@up.task
def where() -> dict:
    import unipipe

    return {"unipipe": unipipe.__file__, "module": __file__, "home": os.environ["HOME"],
            "tmp": os.environ["TMPDIR"], "cwd": os.getcwd(),
            "sandbox": os.environ.get("UNIPIPE_SANDBOX"), "no_site": sys.flags.no_site,
            "attempt_folder": os.environ.get("UNIPIPE_ATTEMPT_FOLDER")}


@up.task
def read_neighbour() -> str:
    return Path(__file__).with_name("only_on_the_compiling_machine.txt").read_text().strip()


@up.pipeline(name="where-tasks-run")
def where_tasks_run():
    return where()


@up.pipeline(name="reads-a-local-file")
def reads_a_local_file():
    return read_neighbour()
