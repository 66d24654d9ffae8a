"""Vertex AI has no local server: these tests check the exact requests google-cloud-aiplatform
sends to a recording HTTP server on 127.0.0.1 (not exercised against the live Vertex AI API).

Credentials come the standard way (Application Default Credentials: a service-account key file
named by GOOGLE_APPLICATION_CREDENTIALS, made for the test with a fresh RSA key); the test checks
the requests carry a token signed with that key.
"""

from __future__ import annotations

import base64
import json

import pytest
import yaml

import unipipe as up
from deploy.helpers import SHARED_STORES, deploy
from deploy.recording import Recorded, RecordingServer, service_account_file
from unipipe.compiler.driver import compile_ir
from unipipe.deploy.bundle import sha256
from unipipe.store import with_store

pytestmark = pytest.mark.kubeflow

PARENT = "/v1/projects/proj-1/locations/us-central1"
EMAIL = "deployer@proj-1.iam.gserviceaccount.com"


class FakeVertex:
    """Schedules and pipeline jobs of one project/location, kept as the client sent them."""

    def __init__(self) -> None:
        self.schedules: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.made = 0

    def __call__(self, r: Recorded):
        if r.path == "/token":
            return 200, {"access_token": "test-token", "expires_in": 3600, "token_type": "Bearer"}
        if r.path == f"{PARENT}/schedules" and r.method == "GET":
            want = r.q("filter").split('"')[1]
            found = [s for s in self.schedules.values() if s["displayName"] == want]
            return 200, ({"schedules": found} if found else {})
        if r.path == f"{PARENT}/schedules" and r.method == "POST":
            body = r.json()
            self.made += 1
            body.update(name=f"{PARENT[4:]}/schedules/s{self.made}", state="ACTIVE")
            self.schedules[body["name"]] = body
            return 200, body
        if r.path.startswith(f"{PARENT}/schedules/") and r.method == "DELETE":
            self.schedules.pop(r.path[4:], None)
            return 200, {"name": f"{r.path[4:]}/operations/1", "done": True,
                         "response": {"@type": "type.googleapis.com/google.protobuf.Empty"}}
        if r.path == f"{PARENT}/pipelineJobs" and r.method == "GET":
            label, value = r.q("filter").split("=", 1)
            key = label.removeprefix("labels.")
            found = [j for j in self.jobs.values() if j.get("labels", {}).get(key) == value.strip('"')]
            return 200, ({"pipelineJobs": found} if found else {})
        if r.path == f"{PARENT}/pipelineJobs" and r.method == "POST":
            body = r.json()
            body.update(name=f"{PARENT[4:]}/pipelineJobs/{r.q('pipelineJobId')}", state=2)
            self.jobs[body["name"]] = body
            return 200, body
        return 404, {"error": {"code": 404, "message": f"no route {r.method} {r.path}"}}


@pytest.fixture
def vertex(monkeypatch, tmp_path, shared_store_buckets):
    fake = FakeVertex()
    server = RecordingServer(fake)
    server.fake = fake
    cred = tmp_path / "service-account.json"
    service_account_file(cred, f"{server.url}/token", EMAIL)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(cred))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    # google-auth looks up a service account's allowed locations at iamcredentials.googleapis.com
    # in a background thread, a URL with no override; it is no part of the deploy's requests and
    # would only reach for the internet (and log its failure). Turn that lookup off here.
    from google.oauth2 import service_account

    monkeypatch.setattr(service_account.Credentials,
                        "_is_regional_access_boundary_lookup_required", lambda self: False,
                        raising=False)
    yield server
    server.close()


@pytest.fixture
def ir():
    return up.load("deploy.shipped:nightly_report")


def _spec(ir, tmp_path) -> tuple[dict, str]:
    paths = compile_ir(with_store(ir, SHARED_STORES["vertex"]), "kubeflow", tmp_path / "kfp").paths
    data = next(p for p in paths if p.suffix == ".yaml").read_bytes()
    return yaml.safe_load(data), sha256(data)[:32]


def _options(vertex) -> list[str]:
    return ["project=proj-1", "region=us-central1", "pipeline_root=gs://vertex-root/runs",
            f"api_endpoint={vertex.url}"]


def _jwt_claims(request: Recorded) -> dict:
    token = request.headers["authorization"].removeprefix("Bearer ")
    if token == "test-token":  # exchanged at the key file's token_uri
        return {"iss": EMAIL}
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_vertex_recorded_requests_scheduled_pipeline_creates_a_schedule(ir, vertex, tmp_path):
    spec, label = _spec(ir, tmp_path)
    out = deploy(ir, "vertex", _options(vertex))
    assert out.code == 0, out.text
    calls = [c for c in vertex.calls() if c[1] != "/token"]
    assert calls == [("GET", f"{PARENT}/schedules"), ("POST", f"{PARENT}/schedules")]
    find, create = [r for r in vertex.requests if r.path != "/token"]
    assert find.q("filter") == 'display_name="nightly-report"'
    body = create.json()
    assert body["displayName"] == "nightly-report"
    assert body["cron"] == "30 1 * * *"
    job = body["createPipelineJobRequest"]["pipelineJob"]
    assert job["pipelineSpec"] == spec  # the compiled KFP pipeline, unchanged
    assert job["labels"] == {"unipipe-sha256": label}
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://vertex-root/runs"
    assert body["createPipelineJobRequest"]["parent"] == PARENT[4:]
    assert _jwt_claims(create)["iss"] == EMAIL  # credentials from GOOGLE_APPLICATION_CREDENTIALS
    assert "schedule: projects/proj-1/locations/us-central1/schedules/s1" in out.text


def test_vertex_recorded_requests_unchanged_schedule_is_left_alone_and_a_change_replaces_it(ir, vertex, tmp_path):
    assert deploy(ir, "vertex", _options(vertex)).code == 0
    n = len(vertex.requests)
    again = deploy(ir, "vertex", _options(vertex))
    assert again.code == 0, again.text
    assert "nothing changed" in again.text
    assert [c for c in vertex.calls()[n:] if c[1] != "/token"] == [("GET", f"{PARENT}/schedules")]

    changed = ir.model_copy(update={"description": "Cubes now."})
    n = len(vertex.requests)
    out = deploy(changed, "vertex", _options(vertex))
    assert out.code == 0, out.text
    assert [c for c in vertex.calls()[n:] if c[1] != "/token"] == [
        ("GET", f"{PARENT}/schedules"),
        ("DELETE", f"{PARENT}/schedules/s1"),
        ("POST", f"{PARENT}/schedules"),
    ]
    assert list(vertex.fake.schedules) == ["projects/proj-1/locations/us-central1/schedules/s2"]


def test_vertex_recorded_requests_unscheduled_pipeline_submits_one_job(ir, vertex, gcs_env, tmp_path):
    """The SDK also makes the pipeline_root bucket when it is missing: that goes to the GCS
    emulator (with a run-as service account given, it needs no Resource Manager call)."""
    from google.cloud import storage

    once = ir.model_copy(update={"schedule": None})
    spec, label = _spec(once, tmp_path)
    runner = "runner@proj-1.iam.gserviceaccount.com"
    out = deploy(once, "vertex", _options(vertex) + ["param.n=5", f"service_account={runner}"])
    assert out.code == 0, out.text
    assert storage.Client().lookup_bucket("vertex-root") is not None
    calls = [c for c in vertex.calls() if c[1] != "/token" and "/storage/" not in c[1]]
    assert calls == [("GET", f"{PARENT}/pipelineJobs"), ("POST", f"{PARENT}/pipelineJobs")]
    find, submit = [r for r in vertex.requests if r.path.startswith(PARENT)]
    assert find.q("filter") == f'labels.unipipe-sha256="{label}"'
    job = submit.json()
    assert submit.q("pipelineJobId").startswith("nightly-report-")
    assert job["pipelineSpec"] == spec
    assert job["labels"] == {"unipipe-sha256": label}
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://vertex-root/runs"
    assert job["runtimeConfig"]["parameterValues"] == {"n": 5}
    assert job["serviceAccount"] == runner

    n = len(vertex.requests)
    again = deploy(once, "vertex", _options(vertex) + ["param.n=5", f"service_account={runner}"])
    assert again.code == 0 and "nothing changed" in again.text
    assert [c for c in vertex.calls()[n:] if c[1] != "/token"] == [("GET", f"{PARENT}/pipelineJobs")]


def test_vertex_dry_run_reads_only(ir, vertex):
    out = deploy(ir, "vertex", _options(vertex), dry_run=True)
    assert out.code == 0, out.text
    assert {m for m, p in vertex.calls() if p != "/token"} == {"GET"}
    assert any(line.startswith("+ create PipelineJobSchedule 'nightly-report'  [schedules.create, cron '30 1 * * *'")
               for line in out.lines("+"))
