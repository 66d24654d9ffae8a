"""Deploying to MWAA's S3 bucket, against moto in server mode on 127.0.0.1 (versioned bucket)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import unipipe as up
from deploy.helpers import deploy
from unipipe.compiler.driver import compile_ir

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.airflow


@pytest.fixture
def ir():
    return up.load("deploy.shipped:nightly_report")


def _s3():
    import boto3

    return boto3.client("s3")


def _versions(bucket: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in _s3().list_object_versions(Bucket=bucket).get("Versions", []):
        out.setdefault(v["Key"], []).append(v["VersionId"])
    return out


def _get(bucket: str, key: str) -> bytes:
    return _s3().get_object(Bucket=bucket, Key=key)["Body"].read()


def _puts(server, bucket: str) -> list[str]:
    """Object keys in the order the server received PUTs for them (from moto's request log)."""
    log = server.log.read_text(errors="replace")
    return re.findall(rf'"PUT /{re.escape(bucket)}/(\S+?)(?:\?\S*)? HTTP', log)


def test_mwaa_dry_run_prints_every_object_and_uploads_nothing(ir, s3_bucket):
    out = deploy(ir, "mwaa", [f"bucket={s3_bucket}", "airflow_version=2.10.3"], dry_run=True)
    assert out.code == 0, out.text
    targets = [line.split("  [")[0] for line in out.lines("+")]
    assert targets == [f"+ upload s3://{s3_bucket}/dags/deploy/__init__.py",
                       f"+ upload s3://{s3_bucket}/dags/deploy/shipped.py",
                       f"+ upload s3://{s3_bucket}/requirements.txt",
                       f"+ upload s3://{s3_bucket}/dags/nightly_report_dag.py"]
    assert "Airflow 2.10.3, dialect 2.10" in out.text
    assert "dry run: nothing changed" in out.text
    assert _s3().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_mwaa_deploy_uploads_modules_then_requirements_then_the_dag_last(ir, s3_bucket, aws_env, tmp_path):
    out = deploy(ir, "mwaa", [f"bucket={s3_bucket}", "airflow_version=2.10.3", "requirements=scikit-learn==1.5.2"])
    assert out.code == 0, out.text
    assert _puts(aws_env, s3_bucket) == ["dags/deploy/__init__.py", "dags/deploy/shipped.py", "requirements.txt",
                                         "dags/nightly_report_dag.py"]

    expected = compile_ir(ir, "airflow", tmp_path / "c", target_version="2.10").paths
    dag = next(p for p in expected if p.name == "nightly_report_dag.py")
    assert _get(s3_bucket, "dags/nightly_report_dag.py") == dag.read_bytes()
    assert _get(s3_bucket, "dags/deploy/shipped.py") == (HERE / "shipped.py").read_bytes()
    assert _get(s3_bucket, "dags/deploy/__init__.py") == (HERE / "__init__.py").read_bytes()
    requirements = _get(s3_bucket, "requirements.txt").decode().splitlines()
    assert requirements[0] == ('--constraint "https://raw.githubusercontent.com/apache/airflow/'
                               'constraints-2.10.3/constraints-3.11.txt"')
    assert "unipipe==0.1.0" in requirements and "unipipe-airflow==0.1.0" in requirements
    assert "scikit-learn==1.5.2" in requirements
    version = _versions(s3_bucket)["requirements.txt"]
    assert len(version) == 1
    assert f"RequirementsS3ObjectVersion: {version[0]}" in out.text
    assert "RequirementsS3Path: requirements.txt" in out.text


def test_mwaa_redeploy_unchanged_changes_nothing(ir, s3_bucket):
    opts = [f"bucket={s3_bucket}", "airflow_version=2.10.3"]
    assert deploy(ir, "mwaa", opts).code == 0
    before = _versions(s3_bucket)
    again = deploy(ir, "mwaa", opts)
    assert again.code == 0, again.text
    assert "nothing changed" in again.text
    assert again.lines("+") == [] and again.lines("~") == []
    assert len(again.lines("=")) == 4
    assert _versions(s3_bucket) == before  # no new object version anywhere
    assert f"RequirementsS3ObjectVersion: {before['requirements.txt'][0]}" in again.text


def test_mwaa_changed_task_module_updates_module_and_dag_but_not_requirements(s3_bucket, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "mypkg").mkdir()
    (src / "mypkg" / "__init__.py").write_text("")
    module = src / "mypkg" / "steps.py"
    body = textwrap.dedent('''
        import unipipe as up


        @up.task
        def double(x: int) -> int:
            return x * {factor}


        @up.pipeline(name="doubler")
        def doubler(x: int = 2):
            return double(x)
    ''')
    module.write_text(body.format(factor=2))
    ir1 = up.load(f"{module}:doubler")
    opts = [f"bucket={s3_bucket}", "airflow_version=3.0.6", "dags_path=airflow/dags"]
    first = deploy(ir1, "mwaa", opts)
    assert first.code == 0, first.text
    v1 = _versions(s3_bucket)
    assert sorted(v1) == ["airflow/dags/doubler_dag.py", "airflow/dags/mypkg/__init__.py",
                          "airflow/dags/mypkg/steps.py", "requirements.txt"]

    module.write_text(body.format(factor=3))
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        monkeypatch.delitem(sys.modules, name)
    ir2 = up.load(f"{module}:doubler")
    second = deploy(ir2, "mwaa", opts)
    assert second.code == 0, second.text
    assert [line.split("  [")[0] for line in second.lines("~")] == [
        f"~ upload s3://{s3_bucket}/airflow/dags/mypkg/steps.py",
        f"~ upload s3://{s3_bucket}/airflow/dags/doubler_dag.py"]
    v2 = _versions(s3_bucket)
    assert len(v2["airflow/dags/mypkg/steps.py"]) == 2 and len(v2["airflow/dags/doubler_dag.py"]) == 2
    assert v2["requirements.txt"] == v1["requirements.txt"]
    assert b"x * 3" in _get(s3_bucket, "airflow/dags/mypkg/steps.py")


def test_mwaa_uploaded_dags_folder_imports_and_defines_the_dag(ir, s3_bucket, tmp_path):
    """What the scheduler would load: the bucket's dags/ copied to a folder, imported by Airflow's
    Python (Airflow 3.3 here, so the 3.0 dialect that MWAA 3.0.6 runs)."""
    assert deploy(ir, "mwaa", [f"bucket={s3_bucket}", "airflow_version=3.0.6"]).code == 0
    dags = tmp_path / "dags"
    for obj in _s3().list_objects_v2(Bucket=s3_bucket, Prefix="dags/")["Contents"]:
        target = dags / obj["Key"][len("dags/"):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_get(s3_bucket, obj["Key"]))
    code = ("import sys; from airflow.dag_processing.dagbag import DagBag; "
            f"bag = DagBag(dag_folder={str(dags)!r}, ); "
            "print('DAGS', sorted(bag.dag_ids), 'ERRORS', dict(bag.import_errors)); "
            "import deploy.shipped as m; print('MODULE', m.__file__)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow-home"), PYTHONPATH=str(dags))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("DAGS ", "MODULE "))]
    assert lines == ["DAGS ['nightly-report'] ERRORS {}", f"MODULE {dags / 'deploy' / 'shipped.py'}"]


def test_mwaa_bucket_without_versioning_is_refused(ir, aws_env):
    _s3().create_bucket(Bucket="unversioned-mwaa")
    out = deploy(ir, "mwaa", ["bucket=unversioned-mwaa", "airflow_version=2.10.3"])
    assert out.code == 1
    assert "versioning off" in out.text
    assert _s3().list_objects_v2(Bucket="unversioned-mwaa").get("KeyCount") == 0


def test_mwaa_invalid_options_exit_2(ir, aws_env):
    assert deploy(ir, "mwaa", ["bucket=x"]).code == 2  # no Airflow version, no environment
    bad = deploy(ir, "mwaa", ["bucket=x", "airflow_version=2.10.3", "colour=blue"])
    assert bad.code == 2 and "does not take --set colour" in bad.text
    old = deploy(ir, "mwaa", ["bucket=x", "airflow_version=1.10.12"])
    assert old.code == 2 and "not a dialect" in old.text


class FakeMwaa:
    """MWAA's GetEnvironment / UpdateEnvironment (there is no MWAA in moto): the requests boto3
    sends are recorded, and an update changes what the next GetEnvironment returns."""

    def __init__(self, bucket: str) -> None:
        self.env = {"Name": "prod", "AirflowVersion": "2.11.0", "Status": "AVAILABLE",
                    "SourceBucketArn": f"arn:aws:s3:::{bucket}", "DagS3Path": "dags",
                    "RequirementsS3Path": "requirements.txt"}

    def __call__(self, r):
        if r.method == "GET" and r.path == "/environments/prod":
            return 200, {"Environment": self.env}
        if r.method == "PATCH" and r.path == "/environments/prod":
            self.env.update(r.json())
            return 200, {"Arn": "arn:aws:airflow:us-east-1:000000000000:environment/prod"}
        return 404, {"message": "not found"}


@pytest.fixture
def mwaa_api(s3_bucket, monkeypatch):
    from deploy.recording import RecordingServer

    fake = FakeMwaa(s3_bucket)
    server = RecordingServer(fake)
    server.fake = fake
    monkeypatch.setenv("AWS_ENDPOINT_URL_MWAA", server.url)
    yield server
    server.close()


def test_mwaa_recorded_requests_environment_gives_version_and_bucket_and_gets_the_new_requirements(
        ir, s3_bucket, mwaa_api, tmp_path):
    """The MWAA API is a recording server (not exercised against live MWAA); S3 is moto."""
    out = deploy(ir, "mwaa", ["environment=prod", "update_environment=true"])
    assert out.code == 0, out.text
    assert "Airflow 2.11.0, dialect 2.11" in out.text
    assert mwaa_api.calls() == [("GET", "/environments/prod"), ("PATCH", "/environments/prod")]
    version = _versions(s3_bucket)["requirements.txt"]
    assert mwaa_api.requests[1].json() == {"RequirementsS3Path": "requirements.txt",
                                           "RequirementsS3ObjectVersion": version[0]}
    expected = compile_ir(ir, "airflow", tmp_path / "c", target_version="2.11").paths
    dag = next(p for p in expected if p.name == "nightly_report_dag.py")
    assert _get(s3_bucket, "dags/nightly_report_dag.py") == dag.read_bytes()

    again = deploy(ir, "mwaa", ["environment=prod", "update_environment=true"])
    assert again.code == 0 and "nothing changed" in again.text, again.text
    assert mwaa_api.calls()[2:] == [("GET", "/environments/prod")]


def test_mwaa_environment_bucket_must_match(ir, s3_bucket, mwaa_api):
    out = deploy(ir, "mwaa", ["environment=prod", "bucket=another-bucket"])
    assert out.code == 2 and "is not environment 'prod'" in out.text
