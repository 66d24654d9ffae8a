"""The example compiled for MWAA (celery profile) runs in a plain Airflow home, as a new user runs it.

Issue 12: compiled for MWAA, the training task (it asks for resources) became @task.kubernetes and
failed under ``airflow dags test`` with "Service host/port is not set". Here the deploy's own
compile step writes the DAG, the DAG and its one user module are copied into an empty dags
folder of a fresh Airflow home (nothing of the checkout on PYTHONPATH), and the run through the
``airflow dags test`` command must succeed with the reference runner's values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import ml_training
from unipipe_airflow.engine import Home, base_env, dags_test, engine_dialect, log_tail, template_db
from unipipe_airflow.results import build_result, read_records

import unipipe as up
from unipipe.deploy.common import compile_files, dialect
from unipipe.deploy.options import Options
from unipipe.deploy.to_airflow import MWAA_OPTIONS
from unipipe.params import resolve_params

EXAMPLE = Path(ml_training.__file__).resolve()


def test_mwaa_celery_dag_runs_in_a_plain_airflow_home_like_the_reference(tmp_path):
    ir = up.load(ml_training.training)
    # what `unipipe deploy --to mwaa` compiles (its default profile is celery); the dialect is the
    # installed Airflow's, the one this machine can run
    opts = Options.parse(["airflow_version=3.0.6"], target="mwaa", known=(*MWAA_OPTIONS, "allow_unsupported"))
    files, notes = compile_files(ir, "airflow", engine_dialect(), opts=opts, airflow_executor="celery")
    assert dialect("airflow", "3.0.6") == "3.0"
    assert any("task 'train_model' asks for cpu=1, memory=1Gi: NOT honoured" in n for n in notes)
    dag = next(f for f in files if f.relpath.endswith(".py"))
    assert b"task.kubernetes" not in dag.data

    root = tmp_path / "airflow"
    dags = root / "dags"
    dags.mkdir(parents=True)
    (dags / dag.relpath).write_bytes(dag.data)
    shutil.copyfile(EXAMPLE, dags / EXAMPLE.name)  # the user's module, next to the DAG
    shutil.copyfile(template_db(), root / "airflow.db")
    env = base_env(root, dags)
    env.pop("PYTHONPATH", None)  # the module comes from the dags folder only
    env["UNIPIPE_TRACE_DIR"] = str(tmp_path / "trace")
    home = Home(root, dags, env, ir.name, tmp_path / "trace")
    values = resolve_params(ir, {})
    proc = dags_test(home, values, timeout=900)
    assert proc.returncode == 0, log_tail(home)
    got = build_result(ir, read_records(home.db, home.dag_id), home.trace_dir, values)

    ref = up.run(ml_training.training, "local")
    assert got.state == ref.state == "success", log_tail(home)
    assert got.output == ref.output
    assert {k: t.state for k, t in got.tasks.items()} == {k: t.state for k, t in ref.tasks.items()}
    assert {k: t.output for k, t in got.tasks.items()} == {k: t.output for k, t in ref.tasks.items()}
    assert "Service host/port is not set" not in log_tail(home, chars=10**6)
