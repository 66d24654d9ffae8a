"""Isolated Airflow runs (``conform --isolated``): a scheduler, dag-processor and API server with
the CeleryExecutor, two Celery workers, each in a sandbox of its own made only from what the store
holds (the code package, the DAG file); a real Redis the broker, a real moto S3 server the store."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pytest

import unipipe as up

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parents[1] / "isolation"
sys.path.insert(0, str(HERE))

pytestmark = pytest.mark.slow


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_a_task_runs_on_a_celery_worker_in_its_sandbox_with_code_from_the_store(s3_store,
                                                                               tmp_path,
                                                                               monkeypatch):
    import boto3
    import isolation_pipes

    monkeypatch.setenv("PATH", isolation_pipes.with_a_home_tool_folder(os.environ["PATH"]))
    result = up.run(isolation_pipes.where_tasks_run, backend="airflow", isolated=True,
                    store=f"s3://{s3_store}/store", workdir=tmp_path, keep=True)
    assert result.state == "success", result.tasks
    seen = result.output
    sandbox = Path(seen["sandbox"])
    assert sandbox.name in ("worker-1", "worker-2")
    run_dir = sandbox.parent.parent
    assert run_dir.parent == tmp_path / "isolated"
    # unipipe and the task module come from the code package unpacked in the worker's sandbox,
    # not from the checkout (which the workspace installs editable) or the test's folder
    assert Path(seen["unipipe"]) == sandbox / "site" / "unipipe" / "__init__.py"
    assert Path(seen["module"]) == sandbox / "site" / "isolation_pipes.py"
    assert seen["no_site"] == 1
    # the image's PATH: none of the user's tool folders reach the worker's task
    assert isolation_pipes.account_home_entries(seen["path"]) == []
    # the attempt's own HOME, TMPDIR and working folder, inside its worker's sandbox
    attempt = Path(seen["attempt_folder"])
    assert attempt.parent == sandbox / "attempts"
    assert (seen["home"], seen["tmp"], seen["cwd"]) == (
        str(attempt / "home"), str(attempt / "tmp"), str(attempt / "work"))
    # Airflow's own record says which worker ran it (the CeleryExecutor, not the scheduler)
    db = sandbox.parent / "control-plane" / "airflow" / "airflow.db"
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT task_id, hostname, queue FROM task_instance").fetchall()
    assert rows == [("where", sandbox.name, "default")]
    # a worker never opened the metadata DB: its own sql_alchemy_conn names a file of its
    # sandbox, which holds no Airflow table
    for worker in ("worker-1", "worker-2"):
        own = sandbox.parent / worker / "airflow" / "not-the-metadata-db.sqlite"
        assert not own.exists() or "task_instance" not in _tables(own)
    # what reached the store: the wheels and the DAG file, nothing else of the checkout
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_store)["Contents"]]
    wheels = sorted(k.rsplit("/", 1)[-1].split("-")[0] for k in keys if k.endswith(".whl"))
    assert wheels == ["unipipe", "unipipe_airflow", "unipipe_code_where_tasks_run"]
    from unipipe_airflow.codegen import dag_filename

    dags = [k for k in keys if "/airflow-dags/" in k]
    assert len(dags) == 1 and dags[0].endswith("/" + dag_filename(up.load(isolation_pipes.where_tasks_run)))
    worker_dag = sandbox / "dags" / dags[0].split("/airflow-dags/", 1)[1]
    assert worker_dag.read_bytes() == boto3.client("s3").get_object(
        Bucket=s3_store, Key=dags[0])["Body"].read()


def test_a_file_only_the_compiling_machine_has_is_missing_on_the_worker(s3_store, tmp_path):
    import isolation_pipes

    store = f"s3://{s3_store}/store"
    here = up.run(isolation_pipes.reads_a_local_file, backend="airflow", store=store,
                  workdir=tmp_path / "here")
    assert here.state == "success" and here.output == "present only where the pipeline was compiled"
    there = up.run(isolation_pipes.reads_a_local_file, backend="airflow", store=store,
                   isolated=True, workdir=tmp_path / "there")
    assert there.state == "failed"
    task = there.tasks["read_neighbour"]
    assert task.error_type == "FileNotFoundError", task
    assert "only_on_the_compiling_machine.txt" in task.error
    assert list((tmp_path / "there" / "isolated").glob("*/sandboxes")) == []  # gone with them


def test_an_isolated_airflow_run_needs_a_store():
    import isolation_pipes

    with pytest.raises(ValueError, match="an isolated run needs a shared store"):
        up.run(isolation_pipes.where_tasks_run, backend="airflow", isolated=True)


@pytest.mark.timeout(2400)  # the 23 required cases, real runs; the default is 900 s
def test_the_required_cases_pass_isolated_on_airflow_with_the_s3_store(s3_store, tmp_path):
    """The isolated lane of ``conform --isolated --store s3://...`` on the required cases."""
    from lanes import required_case_failures

    assert required_case_failures("airflow", s3_store, tmp_path) == {}


def test_two_runs_in_one_lane_meet_fresh_workers_and_the_lanes_control_plane(s3_store, tmp_path,
                                                                             monkeypatch):
    """A harness lane's control plane (broker, scheduler, API server) serves both runs; each run
    still gets workers of its own, made from its code package, and the lane forgets its DAG."""
    import isolation_pipes
    from unipipe_airflow.isolated import LANE_ENV, Lane, lane_control_plane

    store = f"s3://{s3_store}/store"
    with lane_control_plane(tmp_path / "lane", store) as env:
        monkeypatch.setenv(LANE_ENV, env[LANE_ENV])
        lane = Lane.from_env()
        assert lane is not None
        sandboxes, run_ids = [], []
        for n in (1, 2):
            result = up.run(isolation_pipes.where_tasks_run, backend="airflow", isolated=True,
                            store=store, workdir=tmp_path / f"run-{n}", keep=True)
            assert result.state == "success", result.tasks
            sandbox = Path(result.output["sandbox"])
            # a worker of this run, made from this run's package, in this run's folder
            assert sandbox.name in ("worker-1", "worker-2")
            assert sandbox.parent.parent.parent == tmp_path / f"run-{n}" / "isolated"
            assert Path(result.output["unipipe"]) == sandbox / "site" / "unipipe" / "__init__.py"
            assert Path(result.output["module"]) == sandbox / "site" / "isolation_pipes.py"
            # the run's DAG file left the lane's dags folder with the run
            assert list(Path(lane.dags).rglob("*.py")) == []
            sandboxes.append(sandbox)
            run_ids.append(result.run_id)
        assert sandboxes[0].parent != sandboxes[1].parent and lane.alive()
        # both runs are in the lane's one metadata DB, each run's task on a worker of its own
        with sqlite3.connect(lane.db) as con:
            rows = con.execute("SELECT run_id, task_id, hostname FROM task_instance "
                               "ORDER BY id").fetchall()
    assert sorted(rows) == sorted([(run_ids[0], "where", sandboxes[0].name),
                                   (run_ids[1], "where", sandboxes[1].name)])
    assert not lane.alive()  # the lane's end stops its control plane
