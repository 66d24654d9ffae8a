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
    import fsspec.config

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    # gcsfs (a gs:// store) reaches the emulator through STORAGE_EMULATOR_HOST; without a token
    # of "anon" it would look for Google credentials (fsspec's config for the gcs protocol)
    monkeypatch.setitem(fsspec.config.conf, "gcs", {"token": "anon"})
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    return gcs_server


@pytest.fixture
def gcs_bucket(gcs_env):
    from google.cloud import storage

    name = f"composer-{next(_names)}-bucket"
    storage.Client().create_bucket(name)
    return name


@pytest.fixture
def shared_store_buckets(aws_env, gcs_env):
    """The buckets of ``helpers.SHARED_STORES`` on moto and the GCS emulator: a KFP or Vertex
    deploy publishes the code package there (``unipipe.deploy.to_kfp._code_step``)."""
    import boto3
    from google.api_core.exceptions import Conflict
    from google.cloud import storage

    from deploy.helpers import SHARED_STORES

    for url in sorted(set(SHARED_STORES.values())):
        scheme, bucket = url.split("://", 1)[0], url.split("/")[2]
        if scheme == "s3":
            s3 = boto3.client("s3")
            if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
                s3.create_bucket(Bucket=bucket)
        else:
            try:
                storage.Client().create_bucket(bucket)
            except Conflict:
                pass
    return SHARED_STORES


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
