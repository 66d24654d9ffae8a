"""Deploying to Cloud Composer's dags folder, against gcp-storage-emulator on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

import unipipe as up
from deploy.helpers import SHARED_STORES, deploy
from unipipe.compiler.driver import compile_ir
from unipipe.store import with_store

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

pytestmark = pytest.mark.airflow


@pytest.fixture
def ir():
    return up.load("deploy.shipped:nightly_report")


def _blobs(bucket: str) -> dict[str, tuple[int, bytes]]:
    from google.cloud import storage

    return {b.name: (b.generation, b.download_as_bytes())
            for b in storage.Client().list_blobs(bucket)}


def test_composer_dry_run_lists_objects_and_packages_and_uploads_nothing(ir, gcs_bucket):
    out = deploy(ir, "composer", [f"dags_folder=gs://{gcs_bucket}/dags", "airflow_version=2.10.5"],
                 dry_run=True)
    assert out.code == 0, out.text
    targets = [line.split("  [")[0].removeprefix(f"+ upload gs://{gcs_bucket}/") for line in out.lines("+")]
    # the code package as local Python libraries in dags/ (Composer's documented way), the DAG last
    assert targets[-1] == "dags/nightly_report_dag.py"
    assert {"dags/deploy/__init__.py", "dags/deploy/shipped.py", "dags/deploy/.airflowignore",
            "dags/unipipe/runtime/__init__.py", "dags/unipipe/.airflowignore",
            "dags/unipipe_airflow/runtime.py", "dags/unipipe_airflow/.airflowignore"} <= set(targets)
    assert not any(".dist-info" in t for t in targets)
    packages = next(line for line in out.text.splitlines() if line.startswith("packages: "))
    assert "unipipe" not in packages and "pydantic<3,>=2.7" in packages
    assert _blobs(gcs_bucket) == {}


def test_composer_deploy_uploads_module_then_dag_and_is_idempotent(ir, gcs_bucket, gcs_env, tmp_path):
    opts = [f"bucket={gcs_bucket}", "airflow_version=2.10.5"]
    first = deploy(ir, "composer", opts)
    assert first.code == 0, first.text
    expected = compile_ir(with_store(ir, SHARED_STORES["composer"]), "airflow", tmp_path / "c", target_version="2.10").paths
    dag = next(p for p in expected if p.name == "nightly_report_dag.py")
    blobs = _blobs(gcs_bucket)
    assert blobs["dags/nightly_report_dag.py"][1] == dag.read_bytes()
    assert blobs["dags/deploy/shipped.py"][1] == (HERE / "shipped.py").read_bytes()
    assert blobs["dags/unipipe/runtime/invoke.py"][1] == (ROOT / "unipipe/runtime/invoke.py").read_bytes()
    assert blobs["dags/unipipe/.airflowignore"][1] == b".*\n"  # regexp: Airflow 2.x's ignore syntax
    assert "from airflow.decorators import dag, task" in dag.read_text()  # the 2.x dialect
    # generations are write timestamps (ns): the code was written before the DAG file
    assert max(blobs, key=lambda name: blobs[name][0]) == "dags/nightly_report_dag.py"

    again = deploy(ir, "composer", opts)
    assert again.code == 0, again.text
    assert "nothing changed" in again.text and again.lines("+") == [] and again.lines("~") == []
    assert _blobs(gcs_bucket) == blobs  # same generations: nothing was rewritten

    newer = deploy(ir, "composer", [f"bucket={gcs_bucket}", "airflow_version=3.0.6"])
    assert newer.code == 0, newer.text
    assert [line.split("  [")[0] for line in newer.lines("~")] == [
        f"~ upload gs://{gcs_bucket}/dags/{top}/.airflowignore" for top in ("deploy", "unipipe", "unipipe_airflow")
    ] + [f"~ upload gs://{gcs_bucket}/dags/nightly_report_dag.py"]  # Airflow 3: glob ignore syntax
    after = _blobs(gcs_bucket)
    assert after["dags/deploy/shipped.py"] == blobs["dags/deploy/shipped.py"]
    assert after["dags/nightly_report_dag.py"][0] != blobs["dags/nightly_report_dag.py"][0]
    assert b"from airflow.sdk import" in after["dags/nightly_report_dag.py"][1]


def test_composer_needs_a_bucket_and_a_version(ir, gcs_env):
    assert deploy(ir, "composer", ["airflow_version=2.10.5"]).code == 2
    out = deploy(ir, "composer", ["bucket=b"])
    assert out.code == 2 and "airflow_version" in out.text
    bad = deploy(ir, "composer", ["dags_folder=s3://b/dags", "airflow_version=2.10.5"])
    assert bad.code == 2 and "gs://" in bad.text


ENV = "projects/proj-1/locations/europe-west1/environments/prod"


class FakeComposer:
    """The Composer API's environments.get / environments.patch (recorded; GCS is the emulator)."""

    def __init__(self, bucket: str) -> None:
        self.env = {"name": ENV, "config": {
            "dagGcsPrefix": f"gs://{bucket}/dags",
            "softwareConfig": {"imageVersion": "composer-2.12.1-airflow-2.10.5",
                               "pypiPackages": {"pandas": "==2.2.3"}}}}

    def __call__(self, r):
        if r.path == "/token":
            return 200, {"access_token": "test-token", "expires_in": 3600, "token_type": "Bearer"}
        if r.path == f"/v1/{ENV}" and r.method == "GET":
            return 200, self.env
        if r.path == f"/v1/{ENV}" and r.method == "PATCH":
            self.env["config"]["softwareConfig"]["pypiPackages"] = r.json()["config"]["softwareConfig"]["pypiPackages"]
            return 200, {"name": f"{ENV[:-len('/environments/prod')]}/operations/op-1", "done": False}
        return 404, {"error": {"code": 404}}


@pytest.fixture
def composer_api(gcs_bucket, monkeypatch, tmp_path):
    from deploy.recording import RecordingServer, service_account_file

    fake = FakeComposer(gcs_bucket)
    server = RecordingServer(fake)
    server.fake = fake
    cred = tmp_path / "service-account.json"
    service_account_file(cred, f"{server.url}/token", "deployer@proj-1.iam.gserviceaccount.com")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(cred))
    yield server
    server.close()


def test_composer_recorded_requests_environment_gives_folder_and_version_and_gets_the_packages(
        ir, gcs_bucket, composer_api, tmp_path):
    """The Composer API is a recording server (not exercised against live Composer); GCS is the emulator."""
    opts = [f"environment={ENV}", f"api_endpoint={composer_api.url}", "update_environment=true"]
    out = deploy(ir, "composer", opts)
    assert out.code == 0, out.text
    assert "Airflow 2.10.5, dialect 2.10" in out.text
    calls = [c for c in composer_api.calls() if c[1] != "/token"]
    assert calls == [("GET", f"/v1/{ENV}"), ("PATCH", f"/v1/{ENV}")]
    patch = [r for r in composer_api.requests if r.method == "PATCH"][0]
    assert patch.q("updateMask") == "config.softwareConfig.pypiPackages"
    wanted = patch.json()["config"]["softwareConfig"]["pypiPackages"]
    assert wanted["pandas"] == "==2.2.3"  # kept
    assert wanted["pydantic"] == "<3,>=2.7" and wanted["croniter"] == ">=2.0"  # unipipe's PyPI dependencies
    assert not any(name.startswith("unipipe") for name in wanted)  # not on PyPI: they are in dags/
    assert patch.headers["authorization"].startswith("Bearer ")
    assert {"dags/deploy/shipped.py", "dags/unipipe/runtime/__init__.py", "dags/unipipe_airflow/runtime.py",
            "dags/nightly_report_dag.py"} <= set(_blobs(gcs_bucket))

    n = len(composer_api.requests)
    again = deploy(ir, "composer", opts)
    assert again.code == 0 and "nothing changed" in again.text, again.text
    assert [c for c in composer_api.calls()[n:] if c[1] != "/token"] == [("GET", f"/v1/{ENV}")]


def test_composer_dags_folder_imports_the_dag_and_the_code_from_itself(ir, gcs_bucket, tmp_path):
    """The bucket's dags/ copied to a folder (what Composer syncs to /home/airflow/gcs/dags):
    DagBag finds only the DAG (.airflowignore keeps the libraries out of DAG parsing) and the
    task module and unipipe's runtime import from that folder."""
    import os
    import subprocess
    import sys

    assert deploy(ir, "composer", [f"bucket={gcs_bucket}", "airflow_version=3.0.6"]).code == 0
    dags = tmp_path / "dags"
    for name, (_, data) in _blobs(gcs_bucket).items():
        target = dags / name.removeprefix("dags/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    code = ("from airflow.dag_processing.dagbag import DagBag; "
            f"bag = DagBag(dag_folder={str(dags)!r}); "
            "print('DAGS', sorted(bag.dag_ids), 'ERRORS', dict(bag.import_errors)); "
            "import deploy.shipped as m, unipipe.runtime as r, unipipe_airflow.runtime as a; "
            "print('FILES', m.__file__, r.__file__, a.__file__)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow-home"), PYTHONPATH=str(dags))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("DAGS ", "FILES "))]
    assert lines[0] == "DAGS ['nightly-report'] ERRORS {}"
    assert lines[1] == (f"FILES {dags / 'deploy/shipped.py'} {dags / 'unipipe/runtime/__init__.py'} "
                        f"{dags / 'unipipe_airflow/runtime.py'}")
