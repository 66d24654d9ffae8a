"""Deploys and the shared store: multi-machine targets refuse to deploy without one, the URL is
compiled into what is uploaded, and Prefect's own results land in the store on a real worker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import unipipe as up
from deploy.helpers import deploy

SHIPPED = "deploy.shipped:nightly_report"


@pytest.fixture
def ir():
    return up.load(SHIPPED)


def _objects(bucket: str) -> list[str]:
    import boto3

    return [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.parametrize("to, opts", [
    ("mwaa", ["bucket=b", "airflow_version=2.10.3"]),
    ("composer", ["dags_folder=gs://b/dags", "airflow_version=2.10.5"]),
    ("kubeflow", ["host=http://127.0.0.1:9"]),
    ("vertex", ["project=p", "region=us-central1", "pipeline_root=gs://b/root"]),
])
def test_a_multi_machine_target_without_a_store_exits_2_and_says_why(ir, to, opts):
    out = deploy(ir, to, opts, dry_run=True, store=None)
    assert out.code == 2, out.text
    assert f"--to {to} runs tasks on many machines" in out.text
    assert "Pass --store s3://bucket/prefix" in out.text and "--store local" in out.text


@pytest.mark.airflow
def test_mwaa_without_a_store_uploads_nothing(ir, s3_bucket):
    out = deploy(ir, "mwaa", [f"bucket={s3_bucket}", "airflow_version=2.10.3"], store=None)
    assert out.code == 2
    assert _objects(s3_bucket) == []


@pytest.mark.airflow
def test_store_local_deploys_for_one_machine_when_asked(ir, s3_bucket):
    out = deploy(ir, "mwaa", [f"bucket={s3_bucket}", "airflow_version=2.10.3"], dry_run=True,
                 store=None, store_local=True)
    assert out.code == 0, out.text
    assert "store: none: each machine's own ~/.cache/unipipe (--store local)" in out.text


@pytest.mark.airflow
def test_the_store_url_is_compiled_into_the_uploaded_dag(ir, s3_bucket):
    import boto3

    store = f"s3://{s3_bucket}/unipipe-store"
    out = deploy(ir, "mwaa", [f"bucket={s3_bucket}", "airflow_version=2.10.3"], store=store)
    assert out.code == 0, out.text
    assert f"store: {store}" in out.text
    dag = boto3.client("s3").get_object(Bucket=s3_bucket, Key="dags/nightly_report_dag.py")
    text = dag["Body"].read().decode()
    # each task spec carries it, so the Celery workers need no configuration to find it
    assert text.count(repr(store).replace("'", '"')) == 3
    assert "testing" not in text  # the moto credentials stay in the environment


def test_cli_store_with_credentials_exits_2_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from unipipe.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compile", f"{Path(__file__).parent / 'shipped.py'}:nightly_report",
                                      "--target", "kubeflow", "--out", str(out),
                                      "--store", "s3://AKIAX:secret@bucket/p"])
    assert result.exit_code == 2
    assert "--store: store 's3://***@bucket/p' holds credentials" in result.output
    assert "secret" not in result.output
    assert not out.exists()


@pytest.mark.prefect
def test_a_prefect_container_pool_without_a_store_exits_2(ir, prefect_api, tmp_path):
    out = deploy(ir, "prefect", [f"code_dir={tmp_path / 'code'}", "work_pool=containers",
                                 "work_pool_type=docker"], dry_run=True, store=None)
    assert out.code == 2, out.text
    assert "work pool type 'docker'" in out.text


@pytest.mark.prefect
@pytest.mark.slow
def test_prefect_results_go_to_the_s3_store_on_a_real_worker(ir, prefect_api, s3_bucket, tmp_path,
                                                           monkeypatch):
    """The deploy saves the result-storage block the flow names; the worker's flow run persists
    Prefect's results (its cache) under <store>/prefect-results on the moto S3 server."""
    from prefect.blocks.core import Block
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    # s3fs (inside the worker's flow run) reads the endpoint from the standard variable
    monkeypatch.setenv("AWS_ENDPOINT_URL", os.environ["AWS_ENDPOINT_URL_S3"])
    store = f"s3://{s3_bucket}/unipipe-store"
    pool, name = f"pool-{uuid.uuid4().hex[:8]}", f"run-{uuid.uuid4().hex[:6]}"
    out = deploy(ir, "prefect", [f"code_dir={tmp_path / 'code'}", f"work_pool={pool}",
                                 f"name={name}", "param.n=5"], store=store)
    assert out.code == 0, out.text
    assert "+ create result storage block 'remote-file-system/unipipe-store-" in out.text
    from unipipe_prefect.storage import block_slug

    assert Block.load(block_slug(store), _sync=True).basepath == f"{store}/prefect-results"
    again = deploy(ir, "prefect", [f"code_dir={tmp_path / 'code'}", f"work_pool={pool}",
                                   f"name={name}", "param.n=5"], store=store)
    assert "result storage block" in again.text and "(unchanged)" in again.text
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(f"nightly-report/{name}")
        run = client.create_flow_run_from_deployment(dep.id)
    env = {**os.environ, "PREFECT_API_URL": prefect_api.api_url,
           "PREFECT_HOME": str(tmp_path / "worker-home")}
    subprocess.run([str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool",
                    pool, "--run-once", "--type", "process"],
                   env=env, cwd=tmp_path, check=True, timeout=300, capture_output=True)
    with get_client(sync_client=True) as client:
        final = client.read_flow_run(run.id)
    assert final.state.type == StateType.COMPLETED, final.state
    keys = _objects(s3_bucket)
    results = [k for k in keys if k.startswith("unipipe-store/prefect-results/")]
    assert results, keys  # summarise is cached: Prefect persisted its result (and cache record)
