"""Deploying to MWAA's S3 bucket, against moto in server mode on 127.0.0.1 (versioned bucket)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import unipipe as up
from deploy.helpers import SHARED_STORES, deploy
from unipipe.compiler.driver import compile_ir
from unipipe.store import with_store

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
    assert targets == [f"+ upload s3://{s3_bucket}/plugins.zip",
                       f"+ upload s3://{s3_bucket}/requirements.txt",
                       f"+ upload s3://{s3_bucket}/dags/nightly_report_dag.py"]
    assert "Airflow 2.10.3, dialect 2.10" in out.text
    assert "dry run: nothing changed" in out.text
    assert _s3().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def _zip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_mwaa_deploy_uploads_plugins_then_requirements_then_the_dag_last(ir, s3_bucket, aws_env, tmp_path):
    out = deploy(ir, "mwaa", [f"bucket={s3_bucket}", "airflow_version=2.10.3", "requirements=scikit-learn==1.5.2"])
    assert out.code == 0, out.text
    assert _puts(aws_env, s3_bucket) == ["plugins.zip", "requirements.txt", "dags/nightly_report_dag.py"]

    expected = compile_ir(with_store(ir, SHARED_STORES["mwaa"]), "airflow", tmp_path / "c", target_version="2.10", airflow_executor="celery").paths
    dag = next(p for p in expected if p.name == "nightly_report_dag.py")
    assert _get(s3_bucket, "dags/nightly_report_dag.py") == dag.read_bytes()
    # plugins.zip holds the code package's wheels at its top level (MWAA: /usr/local/airflow/plugins)
    plugins = _zip(_get(s3_bucket, "plugins.zip"))
    names = sorted(plugins)
    assert names[:2] == ["unipipe-0.1.0-py3-none-any.whl", "unipipe_airflow-0.1.0-py3-none-any.whl"]
    assert len(names) == 3 and re.fullmatch(r"unipipe_code_nightly_report-0\+[0-9a-f]{12}-py3-none-any\.whl", names[2])
    code = _zip(plugins[names[2]])
    assert code["deploy/shipped.py"] == (HERE / "shipped.py").read_bytes()
    assert code["deploy/__init__.py"] == (HERE / "__init__.py").read_bytes()
    assert "unipipe/runtime/__init__.py" in _zip(plugins[names[0]])
    requirements = _get(s3_bucket, "requirements.txt").decode().splitlines()
    code_version = names[2].split("-")[1]
    assert requirements == [
        '--constraint "https://raw.githubusercontent.com/apache/airflow/constraints-2.10.3/constraints-3.11.txt"',
        "--find-links /usr/local/airflow/plugins",
        "unipipe==0.1.0", "unipipe-airflow==0.1.0", f"unipipe-code-nightly-report=={code_version}",
        "scikit-learn==1.5.2"]
    plugin_version = _versions(s3_bucket)["plugins.zip"]
    assert len(plugin_version) == 1 and f"PluginsS3ObjectVersion: {plugin_version[0]}" in out.text
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
    assert len(again.lines("=")) == 3
    assert _versions(s3_bucket) == before  # no new object version anywhere
    assert f"RequirementsS3ObjectVersion: {before['requirements.txt'][0]}" in again.text


def test_mwaa_changed_task_module_updates_the_code_wheel_its_pin_and_the_dag(s3_bucket, tmp_path, monkeypatch):
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
    assert sorted(v1) == ["airflow/dags/doubler_dag.py", "plugins.zip", "requirements.txt"]
    z1 = _zip(_get(s3_bucket, "plugins.zip"))

    module.write_text(body.format(factor=3))
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        monkeypatch.delitem(sys.modules, name)
    ir2 = up.load(f"{module}:doubler")
    second = deploy(ir2, "mwaa", opts)
    assert second.code == 0, second.text
    assert [line.split("  [")[0] for line in second.lines("~")] == [
        f"~ upload s3://{s3_bucket}/plugins.zip",
        f"~ upload s3://{s3_bucket}/requirements.txt",  # the code wheel's version is its digest
        f"~ upload s3://{s3_bucket}/airflow/dags/doubler_dag.py"]
    v2 = _versions(s3_bucket)
    assert all(len(v2[k]) == 2 for k in v1)
    z2 = _zip(_get(s3_bucket, "plugins.zip"))
    assert z2["unipipe-0.1.0-py3-none-any.whl"] == z1["unipipe-0.1.0-py3-none-any.whl"]
    (old,) = [n for n in z1 if n.startswith("unipipe_code_doubler-")]
    (new,) = [n for n in z2 if n.startswith("unipipe_code_doubler-")]
    assert old != new and old not in z2  # the older code wheel is replaced, not kept
    assert b"x * 3" in _zip(z2[new])["mypkg/steps.py"]
    assert f"unipipe-code-doubler=={new.split('-')[1]}" in _get(s3_bucket, "requirements.txt").decode().split()


def test_mwaa_keeps_the_entries_of_an_existing_plugins_zip_that_are_not_ours(ir, s3_bucket):
    from unipipe.deploy.package import deterministic_zip

    theirs = deterministic_zip({"my_plugin.py": b"# theirs\n", "unipipe-0.0.9-py3-none-any.whl": b"old",
                                "unipipe_code_other-0+aaaaaaaaaaaa-py3-none-any.whl": b"other pipeline"})
    _s3().put_object(Bucket=s3_bucket, Key="plugins.zip", Body=theirs)
    _s3().put_object(Bucket=s3_bucket, Key="requirements.txt",
                     Body=b"--find-links /usr/local/airflow/plugins\nunipipe-code-other==0+aaaaaaaaaaaa\n")
    out = deploy(ir, "mwaa", [f"bucket={s3_bucket}", "airflow_version=2.10.3"])
    assert out.code == 0, out.text
    assert [line.split("  [")[0] for line in out.lines("~")][:2] == [
        f"~ upload s3://{s3_bucket}/plugins.zip", f"~ upload s3://{s3_bucket}/requirements.txt"]
    plugins = _zip(_get(s3_bucket, "plugins.zip"))
    assert plugins["my_plugin.py"] == b"# theirs\n"
    assert plugins["unipipe_code_other-0+aaaaaaaaaaaa-py3-none-any.whl"] == b"other pipeline"
    assert "unipipe-0.0.9-py3-none-any.whl" not in plugins and "unipipe-0.1.0-py3-none-any.whl" in plugins
    assert "unipipe-code-other==0+aaaaaaaaaaaa" in _get(s3_bucket, "requirements.txt").decode().splitlines()
    again = deploy(ir, "mwaa", [f"bucket={s3_bucket}", "airflow_version=2.10.3"])
    assert again.code == 0 and "nothing changed" in again.text, again.text


def test_mwaa_uploaded_dags_folder_imports_and_defines_the_dag(ir, s3_bucket, tmp_path):
    """What the scheduler would load: plugins.zip unpacked as MWAA does, the requirements' unipipe
    lines installed from it with --find-links into an empty folder, the bucket's dags/ copied to a
    folder, imported by Airflow's Python (Airflow 3.3 here, so the 3.0 dialect MWAA 3.0.6 runs)."""
    assert deploy(ir, "mwaa", [f"bucket={s3_bucket}", "airflow_version=3.0.6"]).code == 0
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(io.BytesIO(_get(s3_bucket, "plugins.zip"))) as zf:
        zf.extractall(plugins)
    ours = [line for line in _get(s3_bucket, "requirements.txt").decode().splitlines() if line.startswith("unipipe")]
    assert len(ours) == 3
    site = tmp_path / "site"
    # --no-deps: their PyPI dependencies are the checkout's environment's already (no network here)
    inst = subprocess.run(["uv", "pip", "install", "--python", sys.executable, "--target", str(site), "--no-deps",
                           "--no-index", "--find-links", str(plugins), *ours], capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr
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
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow-home"), PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("DAGS ", "MODULE "))]
    assert lines == ["DAGS ['nightly-report'] ERRORS {}", f"MODULE {site / 'deploy' / 'shipped.py'}"]
    assert sorted(p.name for p in dags.iterdir()) == ["nightly_report_dag.py"]  # no module in dags/


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
    plugins = _versions(s3_bucket)["plugins.zip"]
    assert mwaa_api.requests[1].json() == {"RequirementsS3Path": "requirements.txt",
                                           "RequirementsS3ObjectVersion": version[0],
                                           "PluginsS3Path": "plugins.zip",
                                           "PluginsS3ObjectVersion": plugins[0]}
    expected = compile_ir(with_store(ir, SHARED_STORES["mwaa"]), "airflow", tmp_path / "c", target_version="2.11", airflow_executor="celery").paths
    dag = next(p for p in expected if p.name == "nightly_report_dag.py")
    assert _get(s3_bucket, "dags/nightly_report_dag.py") == dag.read_bytes()

    again = deploy(ir, "mwaa", ["environment=prod", "update_environment=true"])
    assert again.code == 0 and "nothing changed" in again.text, again.text
    assert mwaa_api.calls()[2:] == [("GET", "/environments/prod")]


def test_mwaa_environment_bucket_must_match(ir, s3_bucket, mwaa_api):
    out = deploy(ir, "mwaa", ["environment=prod", "bucket=another-bucket"])
    assert out.code == 2 and "is not environment 'prod'" in out.text
