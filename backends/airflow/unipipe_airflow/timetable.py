"""The runs Airflow's own timetable would create for a generated DAG in a window.

``planned_runs(folder, dag_id, start, end, engine)`` loads the DAG file with Airflow's DagBag in
the engine's interpreter (the installed 3.3 or the 2.11 environment) and walks the DAG's
timetable the way the scheduler does, with a ``TimeRestriction`` clipped to the DAG's
start_date/end_date and ``catchup=True`` (every fire time, not only the latest):

- 3.3: the SDK timetable is turned into the scheduler's one with
  ``airflow.serialization.encoders.coerce_to_core_timetable`` (what the DAG serializer does),
  then ``next_dagrun_info_v2(last_dagrun_info=..., restriction=...)``
  (``airflow/timetables/base.py``);
- 2.11: ``dag.timetable.next_dagrun_info(last_automated_data_interval=..., restriction=...)``
  (``airflow/timetables/base.py``, 2.11).

It returns each run's logical date (ISO 8601, UTC), oldest first: what tests compare with
:func:`unipipe.schedules.fire_times` (docs/facts/events-schedules-artifacts.md, ``tt3.py`` /
``tt2.py``).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path

from unipipe_airflow.engine import Engine, base_env, engine_for

_SCRIPT = r"""
import json, sys
from datetime import datetime
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
from airflow.timetables.base import TimeRestriction
folder, dag_id, start, end = sys.argv[1:5]
try:
    bag = DagBag(dag_folder=folder, include_examples=False)
except TypeError:
    bag = DagBag(dag_folder=folder)
if dag_id not in bag.dags:
    print("UNIPIPE-TIMETABLE " + json.dumps({"error": str(bag.import_errors)}))
    sys.exit(0)
dag = bag.dags[dag_id]
tt = dag.timetable
try:
    from airflow.serialization.encoders import coerce_to_core_timetable
    tt = coerce_to_core_timetable(tt)
except ImportError:
    pass
earliest = max(datetime.fromisoformat(start), dag.start_date) if dag.start_date else datetime.fromisoformat(start)
latest = datetime.fromisoformat(end)
if dag.end_date is not None:
    latest = min(latest, dag.end_date)
restriction = TimeRestriction(earliest=earliest, latest=latest, catchup=True)
out, info = [], None
for _ in range(100000):
    if hasattr(tt, "next_dagrun_info_v2"):
        info = tt.next_dagrun_info_v2(last_dagrun_info=info, restriction=restriction)
    else:
        info = tt.next_dagrun_info(
            last_automated_data_interval=info.data_interval if info else None,
            restriction=restriction)
    if info is None:
        break
    out.append(info.logical_date.isoformat())
print("UNIPIPE-TIMETABLE " + json.dumps({"runs": out, "timetable": type(tt).__name__}))
"""


def planned_runs(folder: Path, dag_id: str, start: datetime, end: datetime,
                 engine: Engine | None = None) -> list[datetime]:
    """Logical dates of the runs the DAG's timetable creates in ``[start, end]``."""
    engine = engine or engine_for()
    with tempfile.TemporaryDirectory(prefix="unipipe-timetable-") as home:
        env = base_env(Path(home), Path(folder))
        if engine.own_env:
            from unipipe_airflow.engine import engine_pythonpath

            env["PYTHONPATH"] = engine_pythonpath(engine, Path(home), [], None)
        proc = subprocess.run([engine.python, "-c", _SCRIPT, str(folder), dag_id,
                               start.isoformat(), end.isoformat()], env=env,
                              capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL, cwd=home)
    for line in proc.stdout.splitlines():
        if line.startswith("UNIPIPE-TIMETABLE "):
            data = json.loads(line.removeprefix("UNIPIPE-TIMETABLE "))
            if "error" in data:
                raise RuntimeError(f"DAG {dag_id} did not load: {data['error']}")
            return [datetime.fromisoformat(r) for r in data["runs"]]
    raise RuntimeError("the timetable listing printed nothing:\n" + proc.stdout[-2000:]
                       + proc.stderr[-3000:])
