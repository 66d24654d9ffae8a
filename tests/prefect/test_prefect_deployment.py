"""The generated prefect.yaml deployed with ``prefect deploy`` to the session's real server, a run
triggered through the API, and executed by a real ``prefect worker`` on a process work pool."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import ml_training
import pytest
from unipipe_prefect.server import prefect_executable

import unipipe as up
from unipipe.runtime import trace

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_generated_deployment_runs_on_a_real_worker(prefect_env, tmp_path, webhook):
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    server = prefect_env
    project = tmp_path / "project"
    results = tmp_path / "results"
    up.compile(ml_training.training, target="prefect", out_dir=project, work_pool="unipipe-test",
               results_path=str(results))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=server.api_url, PREFECT_HOME=str(tmp_path / "home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONPATH=os.pathsep.join([str(ROOT / "examples"),
                                           str(ROOT / "backends" / "prefect")]))
    with temporary_settings(updates={PREFECT_API_URL: server.api_url,
                                     PREFECT_HOME: str(tmp_path / "home")}):
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name="unipipe-test", type="process"))
        deploy = subprocess.run([prefect_executable(), "--no-prompt", "deploy", "--all"],
                                cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("ml-training/ml-training")
            assert dep.work_pool_name == "unipipe-test"
            assert [s.schedule.cron for s in dep.schedules] == ["0 2 * * *"]
            assert dep.job_variables["env"]["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] == str(results)
            assert dep.parameter_openapi_schema["properties"]["n_rows"]["type"] == "integer"
            run = client.create_flow_run_from_deployment(dep.id, parameters={"n_rows": 40})
        worker = subprocess.run(
            [prefect_executable(), "worker", "start", "--pool", "unipipe-test", "--run-once",
             "--type", "process"], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=600)
        assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 60
            while True:
                flow_run = client.read_flow_run(run.id)
                task_runs = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
                done = flow_run.state.is_final() and all(t.state and t.state.is_final()
                                                         for t in task_runs)
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    assert flow_run.state.is_completed(), flow_run.state
    names = sorted(t.name for t in task_runs)
    assert names == sorted(["validate_data", "compute_features", "train_model", "evaluate_model",
                            "quality_gate", "register_model", "shard_ids"]
                           + [f"score_shard[{i}]" for i in range(4)])
    assert all(t.state.is_completed() for t in task_runs)
    # the unipipe runtime ran inside the worker's flow process: one trace event per task run,
    # under the flow-run id (no runner set UNIPIPE_RUN_ID)
    events = [e for e in trace.read(os.environ["UNIPIPE_TRACE_DIR"], str(run.id))
              if e["kind"] == "attempt"]
    assert sorted(f"{e['task']}[{e['map_index']}]" if e["map_index"] is not None else e["task"]
                  for e in events) == names
    assert {e["backend"] for e in events} == {"prefect"}
    assert any(results.iterdir())  # compute_features' cached result, where the yaml said
    assert webhook.received == []  # a successful run sends no failure alert
