"""Deploy fixtures: S3 (moto server) and GCS (gcp-storage-emulator) on 127.0.0.1, fake credentials."""

from __future__ import annotations

import itertools

import pytest

from deploy.standins import gcs_emulator

_names = itertools.count(1)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    server = gcs_emulator(tmp_path_factory.mktemp("gcs"))
    yield server
    server.stop()


@pytest.fixture
def aws_env(moto_server, monkeypatch, tmp_path):
    """The standard AWS environment pointed at moto: fake credentials, for the test only."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.url)
    return moto_server


@pytest.fixture
def s3_bucket(aws_env):
    """A fresh versioned bucket on the moto server."""
    import boto3

    name = f"mwaa-{next(_names)}-bucket"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture
def gcs_env(gcs_server, monkeypatch, tmp_path):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    return gcs_server


@pytest.fixture
def gcs_bucket(gcs_env):
    from google.cloud import storage

    name = f"composer-{next(_names)}-bucket"
    storage.Client().create_bucket(name)
    return name


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real ``prefect server start`` on 127.0.0.1 (its own PREFECT_HOME and SQLite database)."""
    from unipipe_prefect.server import LocalPrefectServer

    server = LocalPrefectServer(home=tmp_path_factory.mktemp("prefect-server")).start()
    yield server
    server.stop()


@pytest.fixture
def prefect_api(prefect_server, monkeypatch, tmp_path):
    """PREFECT_API_URL at the local server, for this process (Prefect's settings context) and for
    the subprocesses a test starts (the environment); PREFECT_HOME in the test's temp dir."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    home = tmp_path / "prefect-home"
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.delenv("PREFECT_API_KEY", raising=False)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url, PREFECT_HOME: str(home)}):
        yield prefect_server
