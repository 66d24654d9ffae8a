"""``python -m unipipe_airflow.dagtest MANIFEST``: several ``airflow dags test`` runs, one process.

Each manifest item is ``{"dag_id", "conf", "env"}``; items run in order through the same
``DAG.test()`` the ``airflow dags test`` command calls, with ``env`` set around the run (tasks
run in this process). Airflow's start-up (imports, the in-process execution API) is paid once,
which is what makes a test suite of many small runs affordable. One line per run on stdout:
``UNIPIPE-RUN {"index": i, "run_id": ...}`` (or ``"error"``).
"""

from __future__ import annotations

import json
import os
import sys


def main(manifest: str) -> int:
    from airflow.utils import timezone
    from airflow.utils.cli import get_bagged_dag
    from airflow.utils.providers_configuration_loader import providers_configuration_loaded

    with open(manifest) as fh:
        items = json.load(fh)

    @providers_configuration_loaded
    def run_all() -> None:
        for index, item in enumerate(items):
            saved = {k: os.environ.get(k) for k in item.get("env", {})}
            os.environ.update(item.get("env", {}))
            try:
                dag = get_bagged_dag(bundle_names=None, dag_id=item["dag_id"])
                when = (timezone.parse(item["logical_date"]) if item.get("logical_date")
                        else timezone.utcnow())  # engine.manual_logical_date
                run = dag.test(logical_date=when, run_conf=item.get("conf"))
                report = {"index": index, "run_id": run.run_id}
            except Exception as exc:  # noqa: BLE001 - reported per run, the others go on
                report = {"index": index, "error": f"{type(exc).__name__}: {exc}"}
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
            print("UNIPIPE-RUN " + json.dumps(report), flush=True)

    run_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
