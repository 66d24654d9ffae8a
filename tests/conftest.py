"""Shared fixtures: isolated stores, and real alert receivers on 127.0.0.1."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from unipipe.harness.receivers import SmtpReceiver, WebhookReceiver

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
# gcsfs (gcsfs/__init__.py) swaps in its ExtendedGcsFileSystem unless this is false; that one asks
# the Storage Control gRPC API for each bucket's layout, which gcp-storage-emulator does not
# serve: every gs:// call would wait 60 s for that lookup to time out. Read at import: set first.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
sys.path.insert(0, str(ROOT / "examples"))


#: the CPU-heavy lanes (``file::function``, every parametrization): one xdist work unit
LANES = frozenset({
    "tests/airflow/test_airflow_isolated.py::"
    "test_the_required_cases_pass_isolated_on_airflow_with_the_s3_store",
    "tests/harness/test_conformance.py::test_backend_conforms",
    "tests/harness/test_conformance.py::test_recorded_results_match_this_run",
    "tests/harness/test_conformance.py::test_airflow_real_scheduler_smoke_set",
    "tests/harness/test_conformance.py::test_airflow_2_11_conforms_on_the_required_cases",
    "tests/kubeflow/test_isolated.py::"
    "test_the_required_cases_pass_isolated_on_kubeflow_with_the_s3_store",
    "tests/prefect/test_prefect_isolated.py::"
    "test_the_required_cases_pass_isolated_on_prefect_with_the_s3_store",
})


def lane_scope(nodeid: str) -> str:
    """The xdist work unit of a test: ``"lanes"`` for the tests of :data:`LANES`, else its own."""
    return "lanes" if nodeid.split("[", 1)[0] in LANES else nodeid


def pytest_xdist_make_scheduler(config, log):
    """The whole suite (scripts/test.sh) runs on two pytest-xdist workers with ``--dist
    loadgroup``: the CPU-heavy lanes (:data:`LANES`: the conformance suite, the isolated lanes,
    Airflow 2.11's and the real scheduler's required cases) are one work unit, so they run one
    after another on one worker, in file order (the 2.11 and real-scheduler lanes reuse the
    conformance suite's reference records, the Prefect lane the KFP test's side-by-side run);
    the largest unit, it starts first. Every other test, mostly waiting on engines and servers,
    runs on the other worker meanwhile.

    The unit is made here, from the test ids, because xdist 3.8's own ``xdist_group`` mark does
    nothing under pytest 9: it renames ``item._nodeid`` (``xdist/remote.py`` ~253), and pytest 9
    reads a node's id from ``item._id`` (``_pytest/nodes.py`` ``nodeid``); the groups then
    split across workers (seen: the conformance suite ran on both)."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return lane_scope(nodeid)

    return LaneScheduling(config, log)


def pytest_collection_finish(session):
    """Tell tests/isolation/lanes.py which isolated lanes this session runs (the KFP and Prefect
    lanes run side by side when both are selected, on one worker: see
    :func:`pytest_xdist_make_scheduler`; split across workers, each runs alone)."""
    import re

    sys.path.insert(0, str(ROOT / "tests" / "isolation"))
    import lanes

    pattern = re.compile(r"test_the_required_cases_pass_isolated_on_(\w+?)_with_")
    lanes.SELECTED = {m.group(1) for item in session.items if (m := pattern.match(item.name))}
    # an xdist worker sees ``dist`` as "no" (``xdist/remote.py`` ~393-396); ``loadgroup`` keeps
    # whether the session's was, which is when our scheduler keeps the lanes on one worker
    if hasattr(session.config, "workerinput") and not getattr(session.config.option,
                                                              "loadgroup", False):
        lanes.SELECTED = set()


@pytest.fixture(scope="session", autouse=True)
def wheel_cache(tmp_path_factory):
    """unipipe's own wheels (for code packages) built once per session, outside the user's home."""
    old = os.environ.get("UNIPIPE_WHEEL_CACHE")
    os.environ["UNIPIPE_WHEEL_CACHE"] = str(tmp_path_factory.mktemp("wheels"))
    yield os.environ["UNIPIPE_WHEEL_CACHE"]
    if old is None:
        os.environ.pop("UNIPIPE_WHEEL_CACHE", None)
    else:
        os.environ["UNIPIPE_WHEEL_CACHE"] = old


@pytest.fixture(autouse=True)
def isolated_stores(tmp_path, monkeypatch):
    """Cache, artifacts and traces in the test's temp dir: tests never touch the user's home."""
    monkeypatch.setenv("UNIPIPE_CACHE_URL", str(tmp_path / "cache"))
    monkeypatch.setenv("UNIPIPE_ARTIFACT_URL", str(tmp_path / "artifacts"))
    monkeypatch.setenv("UNIPIPE_TRACE_DIR", str(tmp_path / "trace"))
    return tmp_path


@pytest.fixture
def webhook(monkeypatch):
    receiver = WebhookReceiver()
    monkeypatch.setenv("UNIPIPE_TEST_WEBHOOK", receiver.url)
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
    yield receiver
    receiver.close()


@pytest.fixture
def smtp(monkeypatch):
    receiver = SmtpReceiver()
    monkeypatch.setenv("UNIPIPE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("UNIPIPE_SMTP_PORT", str(receiver.port))
    yield receiver
    receiver.close()


@pytest.fixture
def clean_env():
    """Environment for engine subprocesses: ours, minus anything pointing at the user's home."""
    env = dict(os.environ)
    return env


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """A real moto S3 server on 127.0.0.1 for the session (deploys, shared stores)."""
    from deploy.standins import moto_s3

    server = moto_s3(tmp_path_factory.mktemp("moto"))
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
def s3_store(aws_env, monkeypatch):
    """A fresh bucket on the session's moto server, reached the way s3fs reads it on a worker:
    the environment of ``aws_env`` plus the endpoint for every AWS service (AWS_ENDPOINT_URL),
    which a sandboxed task's s3fs inherits."""
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env.url)
    bucket = f"iso-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket
