"""KFP has no local server here: these tests check the exact requests ``kfp.Client`` sends to a
recording HTTP server on 127.0.0.1 (not exercised against a live Kubeflow Pipelines API)."""

from __future__ import annotations

import json

import pytest
import yaml

import unipipe as up
from deploy.helpers import SHARED_STORES, deploy
from deploy.recording import Recorded, RecordingServer
from unipipe.compiler.driver import compile_ir
from unipipe.deploy.bundle import sha256
from unipipe.store import with_store

pytestmark = pytest.mark.kubeflow


@pytest.fixture
def ir():
    return up.load("deploy.shipped:nightly_report")


@pytest.fixture
def package(ir, tmp_path) -> bytes:
    paths = compile_ir(with_store(ir, SHARED_STORES["kubeflow"]), "kubeflow", tmp_path / "kfp").paths
    return next(p for p in paths if p.suffix == ".yaml").read_bytes()


@pytest.fixture
def home(monkeypatch, tmp_path, shared_store_buckets):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # kfp reads ~/.config/kfp/context.json
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)


class FakeKfp:
    """Just enough of the KFP v2beta1 REST API: a registry of pipelines and versions."""

    def __init__(self) -> None:
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.run_state = "SUCCEEDED"  # what every run ends in
        self.made = 0

    def __call__(self, r: Recorded):
        def named(items):
            if not r.q("filter"):
                return list(items)
            (pred,) = json.loads(r.q("filter"))["predicates"]
            want = pred["stringValue"]
            if pred["operation"] == 9:  # IS_SUBSTRING
                return [i for i in items if want in i["display_name"]]
            assert pred["operation"] == 1, pred  # EQUALS
            return [i for i in items if i["display_name"] == want]

        if r.path == "/apis/v2beta1/healthz":
            return 200, {"multi_user": False}
        if r.path == "/apis/v2beta1/experiments":
            if r.method == "GET":
                found = named(self.experiments.values())
                return 200, ({"experiments": found} if found else {})
            eid = f"e-{len(self.experiments) + 1}"
            self.experiments[eid] = {"experiment_id": eid, **r.json()}
            return 200, self.experiments[eid]
        if r.path == "/apis/v2beta1/recurringruns":
            if r.method == "GET":
                found = [x for x in named(self.recurring.values()) if x["experiment_id"] == r.q("experiment_id")]
                return 200, ({"recurringRuns": found} if found else {})  # this one is camelCase
            self.made += 1
            rid = f"r-{self.made}"
            self.recurring[rid] = {"recurring_run_id": rid, **r.json()}
            return 200, self.recurring[rid]
        if r.method == "DELETE" and r.path.startswith("/apis/v2beta1/recurringruns/"):
            self.recurring.pop(r.path.rsplit("/", 1)[1])
            return 200, {}
        if r.method == "POST" and r.path == "/apis/v2beta1/runs":
            rid = f"run-{len(self.runs) + 1}"
            self.runs[rid] = {"run_id": rid, "state": "PENDING", **r.json()}
            return 200, self.runs[rid]
        if r.method == "GET" and r.path.startswith("/apis/v2beta1/runs/"):
            run = self.runs[r.path.rsplit("/", 1)[1]]
            run["state"] = "RUNNING" if run["state"] == "PENDING" else self.run_state
            return 200, run
        if r.method == "GET" and r.path == "/apis/v2beta1/pipelines":
            want = json.loads(r.q("filter"))["predicates"][0]["stringValue"]
            found = [p for p in self.pipelines.values() if p["display_name"] == want]
            return 200, ({"pipelines": found, "total_size": len(found)} if found else {})
        if r.method == "POST" and r.path == "/apis/v2beta1/pipelines":
            body = r.json()
            pid = f"p-{len(self.pipelines) + 1}"
            self.pipelines[pid] = {"pipeline_id": pid, "display_name": body["display_name"]}
            self.versions[pid] = []
            return 200, self.pipelines[pid]
        if r.method == "GET" and r.path.endswith("/versions"):
            pid = r.path.split("/")[4]
            versions = list(reversed(self.versions[pid]))  # newest first
            if r.q("filter"):
                want = json.loads(r.q("filter"))["predicates"][0]["stringValue"]
                versions = [v for v in versions if v["display_name"] == want]
            versions = versions[: int(r.q("page_size") or 10)]
            return 200, ({"pipeline_versions": versions} if versions else {})
        if r.method == "POST" and r.path == "/apis/v2beta1/pipelines/upload_version":
            pid = r.q("pipelineid")
            vid = f"v-{sum(len(v) for v in self.versions.values()) + 1}"
            version = {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": r.q("name"),
                       "description": r.q("description")}
            self.versions[pid].append(version)
            return 200, version
        return 404, {"error": f"no route {r.method} {r.path}"}


@pytest.fixture
def kfp_api():
    fake = FakeKfp()
    server = RecordingServer(fake)
    server.fake = fake
    yield server
    server.close()


def test_kfp_recorded_requests_first_deploy_creates_pipeline_then_uploads_version(ir, package, kfp_api, home):
    digest = sha256(package)
    out = deploy(ir, "kubeflow", [f"host={kfp_api.url}"])
    assert out.code == 0, out.text
    assert kfp_api.calls() == [
        ("GET", "/apis/v2beta1/healthz"),
        ("GET", "/apis/v2beta1/pipelines"),
        ("GET", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/pipelines"),
        ("POST", "/apis/v2beta1/pipelines/upload_version"),
        ("GET", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/recurringruns"),
    ]
    find, _, create, upload = kfp_api.requests[1:5]
    assert json.loads(find.q("filter")) == {"predicates": [
        {"operation": 1, "key": "display_name", "stringValue": "nightly-report"}]}
    assert create.json() == {"display_name": "nightly-report",
                             "description": "Square some numbers, summarise them, publish a line."}
    assert upload.q("name") == f"nightly-report-{digest[:12]}"
    assert upload.q("pipelineid") == "p-1"
    assert upload.q("description") == f"unipipe-sha256:{digest}"
    assert upload.headers["content-type"].startswith("multipart/form-data")
    assert package in upload.body  # the compiled pipeline YAML, byte for byte
    assert "pipeline_version_id: v-1" in out.text
    assert kfp_api.requests[6].json()["display_name"] == "Default"
    schedule = kfp_api.requests[7].json()
    assert schedule["display_name"] == "nightly-report-schedule"
    assert schedule["experiment_id"] == "e-1"
    assert schedule["trigger"] == {"cron_schedule": {"cron": "0 30 1 * * *"}}  # seconds first
    assert schedule["pipeline_version_reference"] == {"pipeline_id": "p-1", "pipeline_version_id": "v-1"}
    assert schedule["mode"] == "ENABLE" and schedule["max_concurrency"] == 1


def test_kfp_max_active_runs_is_the_recurring_runs_max_concurrency(ir, kfp_api, home):
    """``@up.pipeline(max_active_runs=3)``: KFP starts at most 3 runs of the schedule at once."""
    out = deploy(ir.model_copy(update={"max_active_runs": 3}), "kubeflow", [f"host={kfp_api.url}"])
    assert out.code == 0, out.text
    schedule = next(r for r in kfp_api.requests if r.path == "/apis/v2beta1/recurringruns")
    assert int(schedule.json()["max_concurrency"]) == 3


def test_kfp_recorded_requests_unchanged_redeploy_uploads_nothing(ir, package, kfp_api, home):
    assert deploy(ir, "kubeflow", [f"host={kfp_api.url}"]).code == 0
    first = len(kfp_api.requests)
    again = deploy(ir, "kubeflow", [f"host={kfp_api.url}"])
    assert again.code == 0, again.text
    assert "nothing changed" in again.text
    assert kfp_api.calls()[first:] == [
        ("GET", "/apis/v2beta1/healthz"),
        ("GET", "/apis/v2beta1/pipelines"),
        ("GET", "/apis/v2beta1/pipelines/p-1/versions"),
        ("GET", "/apis/v2beta1/experiments"),
        ("GET", "/apis/v2beta1/recurringruns"),
    ]
    latest = kfp_api.requests[first + 2]
    assert latest.q("sort_by") == "created_at desc" and latest.q("page_size") == "1"


def test_kfp_a_berlin_schedule_is_three_utc_recurring_runs_kept_on_redeploy(ir, kfp_api, home):
    """A cron in Europe/Berlin over 2024: one UTC recurring run per daylight-saving stretch;
    the same deploy again changes nothing; back to UTC, the three are replaced by one."""
    from unipipe.ir.models import Schedule

    berlin = ir.model_copy(update={"schedule": Schedule(
        cron="30 2 * * *", timezone="Europe/Berlin", start="2024-01-01", end="2024-12-31")})
    out = deploy(berlin, "kubeflow", [f"host={kfp_api.url}"])
    assert out.code == 0, out.text
    made = sorted(kfp_api.fake.recurring.values(), key=lambda r: r["display_name"])
    assert [(r["display_name"], r["trigger"]["cron_schedule"]["cron"]) for r in made] == [
        ("nightly-report-schedule-20240101T0130", "0 30 1 * * *"),
        ("nightly-report-schedule-20240401T0030", "0 30 0 * * *"),
        ("nightly-report-schedule-20241028T0130", "0 30 1 * * *")]
    assert made[1]["trigger"]["cron_schedule"]["end_time"] == "2024-10-27T00:30:00Z"
    assert "as 3 UTC recurring runs" in out.text
    first = len(kfp_api.requests)
    again = deploy(berlin, "kubeflow", [f"host={kfp_api.url}"])
    assert again.code == 0 and "nothing changed" in again.text, again.text
    listing = kfp_api.requests[first:][-1]
    assert listing.path == "/apis/v2beta1/recurringruns"
    assert json.loads(listing.q("filter"))["predicates"][0]["operation"] == 9
    assert not [c for c in kfp_api.calls()[first:] if c[0] in ("POST", "DELETE")]
    utc = deploy(ir, "kubeflow", [f"host={kfp_api.url}"])
    assert utc.code == 0, utc.text
    assert [r["display_name"] for r in kfp_api.fake.recurring.values()] == ["nightly-report-schedule"]


def test_kfp_recorded_requests_changed_pipeline_uploads_a_new_version(ir, kfp_api, home):
    assert deploy(ir, "kubeflow", [f"host={kfp_api.url}"]).code == 0
    changed = ir.model_copy(update={"description": "Now with a new description."})
    first = len(kfp_api.requests)
    out = deploy(changed, "kubeflow", [f"host={kfp_api.url}"])
    assert out.code == 0, out.text
    assert kfp_api.calls()[first:] == [
        ("GET", "/apis/v2beta1/healthz"),
        ("GET", "/apis/v2beta1/pipelines"),
        ("GET", "/apis/v2beta1/pipelines/p-1/versions"),
        ("GET", "/apis/v2beta1/pipelines/p-1/versions"),  # was this content deployed before?
        ("GET", "/apis/v2beta1/experiments"),
        ("GET", "/apis/v2beta1/recurringruns"),
        ("POST", "/apis/v2beta1/pipelines/upload_version"),
        ("DELETE", "/apis/v2beta1/recurringruns/r-1"),  # a recurring run cannot be edited: replaced
        ("POST", "/apis/v2beta1/recurringruns"),
    ]
    assert [v["pipeline_version_id"] for v in kfp_api.fake.versions["p-1"]] == ["v-1", "v-2"]
    assert list(kfp_api.fake.recurring) == ["r-2"]
    assert kfp_api.fake.recurring["r-2"]["pipeline_version_reference"]["pipeline_version_id"] == "v-2"


def test_kfp_dry_run_sends_only_reads(ir, kfp_api, home):
    out = deploy(ir, "kubeflow", [f"host={kfp_api.url}"], dry_run=True)
    assert out.code == 0, out.text
    assert [m for m, _ in kfp_api.calls()] == ["GET", "GET", "GET"]
    assert [line.split("  [")[0] for line in out.lines("+")] == [
        "+ create KFP pipeline 'nightly-report'",
        f"+ upload KFP pipeline version 'nightly-report-{out.text.split('nightly-report-')[1][:12]}'",
        "+ create KFP recurring run 'nightly-report-schedule'"]


def test_kfp_recorded_requests_schedule_false_uploads_without_a_recurring_run(ir, kfp_api, home):
    out = deploy(ir, "kubeflow", [f"host={kfp_api.url}", "schedule=false"])
    assert out.code == 0, out.text
    assert not any("recurringruns" in path or "experiments" in path for _, path in kfp_api.calls())


# ---------------------------------------------------------------- unipipe run --backend kubeflow --host


@pytest.mark.parametrize("engine_state, state", [("SUCCEEDED", "success"), ("FAILED", "failed")])
def test_kfp_recorded_requests_run_with_host_submits_the_compiled_spec_and_waits(
        ir, package, kfp_api, home, monkeypatch, tmp_path, capsys, engine_state, state):
    import kfp.client.client as kfp_client

    real_sleep = kfp_client.time.sleep
    monkeypatch.setattr(kfp_client.time, "sleep", lambda s: real_sleep(min(s, 0.05)))  # 5 s polls
    kfp_api.fake.run_state = engine_state
    import fsspec

    from unipipe import sandbox

    pointer = sandbox.code_pointer(SHARED_STORES["kubeflow"],
                                   with_store(ir, SHARED_STORES["kubeflow"]).ir_hash())
    fs, path = fsspec.core.url_to_fs(pointer)
    if fs.exists(path):  # an earlier deploy in this session published it
        fs.rm(path)
    result = up.run(ir, backend="kubeflow", params={"n": 4}, run_id="nightly-1", store=SHARED_STORES["kubeflow"],
                    host=kfp_api.url, pipeline_root=str(tmp_path / "root"))
    assert kfp_api.calls() == [
        ("GET", "/apis/v2beta1/healthz"),
        ("GET", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/runs"),
        ("GET", "/apis/v2beta1/runs/run-1"),  # RUNNING
        ("GET", "/apis/v2beta1/runs/run-1"),  # final
    ]
    assert kfp_api.requests[2].json()["display_name"] == "nightly-report"  # the experiment
    submitted = kfp_api.requests[3].json()
    assert submitted["display_name"] == "nightly-1" and submitted["experiment_id"] == "e-1"
    assert submitted["pipeline_spec"] == yaml.safe_load(package)  # the compiled YAML as is
    assert submitted["runtime_config"]["parameters"] == {"n": 4, "label": "squares"}
    assert (result.backend, result.run_id, result.state) == ("kubeflow", "run-1", state)
    assert result.params == {"n": 4, "label": "squares"}
    out, err = capsys.readouterr()
    assert out == ""  # kfp.Client's links go to stderr: stdout is the RunResult's (--json)
    assert f"Run details: {kfp_api.url}/#/runs/details/run-1" in err
    # the code the submitted components fetch at start is on the store
    fs.invalidate_cache()
    assert fs.cat_file(path).decode().startswith(f"{SHARED_STORES['kubeflow']}/code/")


def test_kfp_run_with_host_and_no_store_is_refused_before_any_request(kfp_api, home):
    """A remote KFP runs each component in a pod of its own: without a shared store a value
    over 64 KiB or a cache entry would stay in the pod that wrote it (exit 2, nothing sent)."""
    from typer.testing import CliRunner

    from unipipe.cli import app

    refused = CliRunner().invoke(app, ["run", "deploy.shipped:nightly_report", "--backend",
                                       "kubeflow", "--host", kfp_api.url])
    assert refused.exit_code == 2, refused.output
    text = " ".join(refused.output.split())
    assert "--backend kubeflow --host" in text and "--store s3://" in text
    assert kfp_api.calls() == []


def test_kfp_deploy_publishes_the_code_package_its_components_fetch(ir, kfp_api, home):
    """The compiled components read <store>/code/pipelines/<IR hash> at start and install the
    wheels it names (unipipe_kubeflow.codegen.unipipe_code): the deploy publishes both to the
    store first, and a redeploy of the same pipeline and code changes nothing there."""
    import boto3

    from unipipe import sandbox

    store = SHARED_STORES["kubeflow"]
    pointer = sandbox.code_pointer(store, with_store(ir, store).ir_hash())
    bucket, prefix = pointer.split("/")[2], pointer.split("/", 3)[3]
    s3 = boto3.client("s3")
    # the shared bucket lives as long as the session's moto server: start without a package
    for o in s3.list_objects_v2(Bucket=bucket, Prefix="runs/code/").get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=o["Key"])
    out = deploy(ir, "kubeflow", [f"host={kfp_api.url}"])
    assert out.code == 0, out.text
    url = s3.get_object(Bucket=bucket, Key=prefix)["Body"].read().decode()
    assert url.startswith(f"{store}/code/") and f"+ upload code package {url}" in out.text
    folder = url.split("/", 3)[3]
    wheels = sorted(o["Key"].rsplit("/", 1)[1].split("-")[0]
                    for o in s3.list_objects_v2(Bucket=bucket, Prefix=folder + "/")["Contents"])
    assert wheels == ["unipipe", "unipipe_code_nightly_report", "unipipe_kubeflow"]
    # the uploaded pipeline's components name that pointer
    import yaml

    upload = next(r for r in kfp_api.requests if r.path.endswith("/upload_version"))
    part = upload.body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
    executors = yaml.safe_load(part)["deploymentSpec"]["executors"]
    sources = [" ".join(e["container"]["command"]) for e in executors.values()]
    assert sources and all(f'unipipe_code("{pointer}")' in src for src in sources)
    again = deploy(ir, "kubeflow", [f"host={kfp_api.url}"])
    assert again.code == 0 and f"= code package {url} (unchanged)" in again.text, again.text
