"""Loading generated DAG files with Airflow's own DagBag, on any installed Airflow.

``load(folder, python=...)`` runs DagBag in a subprocess of the given interpreter (the
workspace's Airflow 3.x, or an Airflow 2.11 virtual environment from :func:`airflow2_python`)
with a throwaway AIRFLOW_HOME, and returns the DAG ids, task ids, TaskGroups (sub-pipelines)
and import errors it saw, plus the parse time of each file as DagBag measured it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: The Airflow 2 line the test suite checks generated DAGs against.
AIRFLOW2_VERSION = "2.11.0"
#: pinned so that every clone builds the same environment (the marker file records them:
#: a changed pin rebuilds it)
AIRFLOW2_PACKAGES = (f"apache-airflow=={AIRFLOW2_VERSION}",
                     "apache-airflow-providers-cncf-kubernetes==10.25.0")

_SCRIPT = r"""
import json, sys, time
try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow 3.1+
except ImportError:
    from airflow.models.dagbag import DagBag
import airflow
started = time.perf_counter()
try:
    bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
except TypeError:  # Airflow 3.3 dropped the examples switch
    bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - started
stats = []
for s in getattr(bag, "dagbag_stats", []) or []:
    d = s._asdict() if hasattr(s, "_asdict") else dict(vars(s))
    stats.append({"file": str(d.get("file")), "duration": d["duration"].total_seconds()
                  if hasattr(d.get("duration"), "total_seconds") else d.get("duration")})
def groups(dag):
    # each TaskGroup (sub-pipeline): its parent group, tooltip and own tasks
    out = {}
    for gid, group in dag.task_group_dict.items():
        parent = group.parent_group
        out[gid] = {"parent": parent.group_id if parent is not None else None,
                    "tooltip": group.tooltip,
                    "tasks": sorted(c.task_id for c in group.children.values()
                                    if hasattr(c, "task_id"))}
    return out
print("UNIPIPE-DAGBAG " + json.dumps({
    "airflow": airflow.__version__,
    "dags": {dag_id: sorted(dag.task_ids) for dag_id, dag in bag.dags.items()},
    "task_groups": {dag_id: groups(dag) for dag_id, dag in bag.dags.items()},
    "import_errors": {str(k): v for k, v in bag.import_errors.items()},
    "seconds": elapsed,
    "stats": stats,
}))
"""


def load(folder: str | Path, python: str | Path | None = None,
         env: dict[str, str] | None = None, timeout: float = 600) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="unipipe-dagbag-") as home:
        full = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        full.update({"AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                     "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
                     "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
                     "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"})
        full.update(env or {})
        proc = subprocess.run([str(python or sys.executable), "-c", _SCRIPT, str(folder)],
                              env=full, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    for line in proc.stdout.splitlines():
        if line.startswith("UNIPIPE-DAGBAG "):
            return json.loads(line.removeprefix("UNIPIPE-DAGBAG "))
    raise RuntimeError(f"DagBag did not report (exit {proc.returncode}):\n"
                       f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def airflow2_python(cache: str | Path) -> Path:
    """The interpreter of an Airflow 2.11 virtual environment under ``cache``, created with uv
    on first use (the uv cache makes later creations fast) and reused while it is complete."""
    from unipipe.venvs import ensure_venv

    return ensure_venv(cache, AIRFLOW2_PACKAGES)
