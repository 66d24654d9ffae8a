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
            "attempt_folder": os.environ.get("UNIPIPE_ATTEMPT_FOLDER"),
            "path": os.environ.get("PATH", "")}


def _account_home() -> str:
    import pwd

    return os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir)


def with_a_home_tool_folder(path: str) -> str:
    """``path`` with the account's ``~/.local/bin`` in front: a folder of the user's own tools,
    which a test puts on the PATH it starts an isolated run with."""
    return os.pathsep.join([os.path.join(_account_home(), ".local", "bin"), path])


def account_home_entries(path: str) -> list[str]:
    """Entries of a task's PATH under the account's home folder (``~/.local/bin``,
    ``~/.cargo/bin``, pyenv's shims): folders an image does not have, so an isolated task must
    not see them."""
    home = _account_home().rstrip(os.sep) + os.sep
    return [e for e in path.split(os.pathsep) if e and os.path.realpath(e).startswith(home)]


@up.task
def read_neighbour() -> str:
    return Path(__file__).with_name("only_on_the_compiling_machine.txt").read_text().strip()


@up.pipeline(name="where-tasks-run")
def where_tasks_run():
    return where()


@up.pipeline(name="reads-a-local-file")
def reads_a_local_file():
    return read_neighbour()
