"""``unipipe deploy`` through the real CLI: exit codes and the printed plan."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from unipipe.cli import app

SPEC = f"{Path(__file__).resolve().parent / 'shipped.py'}:nightly_report"
STORE = "s3://unipipe-shared-store/runs"  # compiled into the DAG; planning never touches it

pytestmark = pytest.mark.airflow


def test_cli_deploy_dry_run_prints_the_plan_and_exits_0(s3_bucket):
    result = CliRunner().invoke(app, ["deploy", SPEC, "--to", "mwaa", "--store", STORE, "--dry-run",
                                      "--set", f"bucket={s3_bucket}", "--set", "airflow_version=2.10.3"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("+ ")]
    assert [line.split("  [")[0] for line in lines] == [
        f"+ upload s3://{s3_bucket}/plugins.zip",
        f"+ upload s3://{s3_bucket}/requirements.txt",
        f"+ upload s3://{s3_bucket}/dags/nightly_report_dag.py"]
    assert "dry run: nothing changed" in result.output


def test_cli_deploy_unknown_target_or_bad_option_exits_2():
    unknown = CliRunner().invoke(app, ["deploy", SPEC, "--to", "dagster"])
    assert unknown.exit_code == 2 and "unknown deploy target 'dagster'" in unknown.output
    bad = CliRunner().invoke(app, ["deploy", SPEC, "--to", "kubeflow", "--set", "host"])
    assert bad.exit_code == 2 and "must look like name=value" in bad.output


def test_cli_deploy_unreachable_service_exits_1(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = CliRunner().invoke(app, ["deploy", SPEC, "--to", "mwaa", "--store", STORE, "--set", "bucket=some-bucket",
                                      "--set", "airflow_version=2.10.3"])
    assert result.exit_code == 1, result.output
    assert "deploy failed" in result.output


def test_cli_dry_run_without_the_service_still_prints_every_object(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = CliRunner().invoke(app, ["deploy", SPEC, "--to", "mwaa", "--store", STORE, "--dry-run", "--set",
                                      "bucket=some-bucket", "--set", "airflow_version=2.10.3"])
    assert result.exit_code == 0, result.output
    assert "note: remote state not read (EndpointConnectionError" in result.output
    lines = [line.split("  [")[0] for line in result.output.splitlines() if line.startswith("? ")]
    assert lines == ["? upload s3://some-bucket/plugins.zip (remote state not read)",
                     "? upload s3://some-bucket/requirements.txt (remote state not read)",
                     "? upload s3://some-bucket/dags/nightly_report_dag.py (remote state not read)"]


def test_cli_deploy_airflow_executor_notes_come_before_the_plan_and_kubernetes_is_a_choice(s3_bucket):
    import ml_training  # examples/: its training task asks for cpu and memory

    spec = f"{ml_training.__file__}:training"
    base = ["deploy", spec, "--to", "mwaa", "--store", STORE, "--dry-run", "--set", f"bucket={s3_bucket}",
            "--set", "airflow_version=3.0.6"]
    celery = CliRunner().invoke(app, base)  # the default profile for mwaa/composer
    assert celery.exit_code == 0, celery.output
    text = celery.output
    note = text.index("note: warning: airflow: resources: task 'train_model' asks for cpu=1, memory=1Gi: NOT honoured")
    assert note < text.index("+ upload")
    # the kubernetes profile makes the pod again: on this dialect (3.0) that is refused for a task
    # with an exception filter, exactly as `compile` refuses it
    pods = CliRunner().invoke(app, [*base, "--airflow-executor", "kubernetes"])
    assert pods.exit_code == 2 and "run in a pod (resources/image)" in pods.output
    allowed = CliRunner().invoke(app, [*base, "--airflow-executor", "kubernetes", "--set", "allow_unsupported=true"])
    assert allowed.exit_code == 0 and "NOT honoured" not in allowed.output, allowed.output
    bad = CliRunner().invoke(app, [*base, "--airflow-executor", "swarm"])
    assert bad.exit_code == 2 and "choose one of celery, local, kubernetes" in bad.output
