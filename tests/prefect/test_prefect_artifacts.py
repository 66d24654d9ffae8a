"""File artifacts, metrics and reports on a real Prefect server: each successful attempt leaves
Prefect artifacts on its task run (link per output, table of metrics, markdown report), and
RunResult.metrics / .artifacts / .reports are read back from them through the Prefect API."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import fsspec
import ml_artifacts
import pytest
from unipipe_prefect import codegen as flowgen
from unipipe_prefect.results import records_from_artifacts
from unipipe_prefect.runtime import artifact_key

import unipipe as up

pytestmark = [pytest.mark.prefect]

CASES = Path(__file__).resolve().parents[2] / "comparisons" / "cases"
MODEL_SHA = "c976bea846752f787732a0bff97e54b833a18547c32c201407ba1c54bb26cfdd"
DATA_SHA = "02ebcb6e63afaa110184cda71c1066bd91e1b639a3ac1cbf8196581e6699cef2"
REPORT = "# Evaluation\n\n| metric | value |\n|---|---|\n| R2 | 0.9988 |\n| slope | 2.963455 |\n"


def _case(name: str, monkeypatch):
    """The pipeline of a conformance case, imported from its folder as the harness does."""
    monkeypatch.syspath_prepend(str(CASES / name))
    return importlib.import_module(f"case_{name}").pipe


def _latest_flow_run(server, flow_name: str):
    """The last flow run of ``flow_name`` and its artifacts and task runs, from the API."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        with get_client(sync_client=True) as client:
            [run] = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(
                any_=[flow_name])), sort=FlowRunSort.START_TIME_DESC, limit=1)
            only = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            arts = client.read_artifacts(flow_run_filter=only)
            task_runs = {str(tr.id): tr for tr in client.read_task_runs(flow_run_filter=only)}
    return run, arts, task_runs


def test_ml_artifacts_records_are_prefect_artifacts_read_back_through_the_api(prefect_env):
    prefect = up.run(ml_artifacts.training, backend="prefect")
    local = up.run(ml_artifacts.training, backend="local")
    assert prefect.state == local.state == "success"
    assert prefect.output == local.output == {"r2": 0.9988, "model_sha256": MODEL_SHA}
    # the RunResult (read from Prefect's artifacts) equals the reference's (read from the store)
    assert prefect.metrics == local.metrics == {"train": {"rows": 40, "slope": 2.963455},
                                                "evaluate": {"r2": 0.9988}}
    assert prefect.reports == local.reports == {"evaluate": REPORT}
    assert prefect.artifacts["train"]["model"]["sha256"] == MODEL_SHA
    assert prefect.artifacts["download"]["data"]["sha256"] == DATA_SHA
    assert {t: {n: (a["type"], a["sha256"]) for n, a in named.items()}
            for t, named in prefect.artifacts.items()} == {
        t: {n: (a["type"], a["sha256"]) for n, a in named.items()}
        for t, named in local.artifacts.items()}

    # what the Prefect API itself holds for the flow run
    run, arts, task_runs = _latest_flow_run(prefect_env, "ml-artifacts")
    by_key = {a.key: a for a in arts}
    assert sorted(by_key) == ["download-data", "evaluate-metrics", "evaluate-report",
                              "train-metrics", "train-metrics-file", "train-model"]
    for art in arts:  # each made inside its task's run, so it names the task run
        assert art.flow_run_id == run.id
        assert task_runs[str(art.task_run_id)].name == art.key.split("-")[0]
    model = by_key["train-model"]
    assert model.type == "markdown"  # Prefect stores a link artifact as markdown
    fields = json.loads(model.description.rsplit("unipipe:", 1)[1])
    assert (fields["type"], fields["sha256"], fields["name"]) == ("Model", MODEL_SHA, "model")
    assert model.data == f"[train: model]({fields['uri']})"
    with fsspec.open(fields["uri"], "rb") as fh:  # the bytes the link points at
        assert hashlib.sha256(fh.read()).hexdigest() == MODEL_SHA
    assert json.loads(by_key["train-metrics"].data) == [{"metric": "rows", "value": 40},
                                                        {"metric": "slope", "value": 2.963455}]
    assert by_key["evaluate-report"].data == REPORT


def test_a_retried_task_keeps_only_its_successful_attempts_metrics(prefect_env, monkeypatch):
    """metrics_and_report: score logs 'partial' on its failed first attempt; only the second
    attempt's metrics become a table artifact."""
    pipe = _case("metrics_and_report", monkeypatch)
    prefect = up.run(pipe, backend="prefect")
    local = up.run(pipe, backend="local")
    assert prefect.state == local.state == "success"
    assert prefect.tasks["score"].attempts == 2
    assert prefect.metrics == local.metrics == {"score": {"accuracy": 0.7, "rows": 40},
                                                "summarise": {"passed": 1, "margin": 0.1}}
    assert prefect.reports == local.reports == {
        "summarise": "## Quality gate\n\naccuracy **0.7** against 0.6"}
    _, arts, _ = _latest_flow_run(prefect_env, "case-metrics-and-report")
    tables = [json.loads(a.data) for a in arts if a.key == "score-metrics"]
    assert tables == [[{"metric": "accuracy", "value": 0.7}, {"metric": "rows", "value": 40}]]


def test_a_cached_task_with_artifacts_hits_on_its_input_files_and_brings_its_record_back(
        prefect_env, monkeypatch, tmp_path):
    """train is cached by the shim, not Prefect: the key covers the input file (another day,
    same parameters: a miss, where Prefect's INPUTS policy would hit), and a hit ends the task
    run 'Cached' with its artifacts shown again, so evaluate reads the model in this run."""
    runs = [up.run(ml_artifacts.training, backend="prefect", params=p)
            for p in ({}, {}, {"day": "2024-01-02"})]
    monkeypatch.setenv("UNIPIPE_CACHE_URL", str(tmp_path / "local-cache"))  # a cache of its own
    local = [up.run(ml_artifacts.training, backend="local", params=p)
             for p in ({}, {}, {"day": "2024-01-02"})]
    assert [r.tasks["train"].cache_hit for r in runs] == [
        r.tasks["train"].cache_hit for r in local] == [False, True, False]
    assert [r.state for r in runs] == ["success"] * 3
    assert runs[1].output == runs[0].output and runs[1].tasks["train"].attempts == 1
    assert runs[1].metrics == runs[0].metrics == local[1].metrics
    assert runs[1].artifacts["train"]["model"]["sha256"] == MODEL_SHA
    assert runs[2].output == local[2].output != runs[0].output
    # the second run's train task run, as Prefect recorded it
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_env.api_url}):
        with get_client(sync_client=True) as client:
            flow_runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(
                any_=["ml-artifacts"])), sort=FlowRunSort.START_TIME_DESC, limit=3)
            names = {tr.name: tr.state.name for tr in _task_runs(client, flow_runs[1].id)}
    assert names == {"download": "Completed", "train": "Cached", "evaluate": "Completed"}


def _task_runs(client, flow_run_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
        any_=[flow_run_id])))


def test_a_missing_package_fails_the_task_at_once(prefect_env, monkeypatch):
    pipe = _case("packages_missing", monkeypatch)
    result = up.run(pipe, backend="prefect")
    assert result.state == "failed"
    fit = result.tasks["fit"]
    assert (fit.state, fit.attempts, fit.error_type) == ("failed", 1, "PackagesMissing")
    assert "unipipe-no-such-package==1.0 (not installed)" in fit.error
    assert result.tasks["publish"].state == "upstream_failed"


# ---------------------------------------------------------------- without a server


def test_artifact_keys_are_what_prefect_accepts():
    assert artifact_key("train", None, "model") == "train-model"
    assert artifact_key("train_model", 3, "Out.File") == "train-model-3-out-file"
    assert artifact_key("__x__", None, "metrics") == "x-metrics"


def test_records_come_from_the_current_task_runs_artifacts_only():
    def art(task_run, fields, data):
        return {"task_run_id": task_run, "data": data,
                "description": f"text\n\nunipipe:{json.dumps(fields)}"}

    out = {"kind": "output", "name": "model", "type": "Model", "uri": "file:///m", "sha256": "ab",
           "size": 3}
    arts = [
        art("old", {**out, "sha256": "stale"}, "[x](file:///m)"),  # an earlier try of the run
        art("t1", out, "[train: model](file:///m)"),
        art("t1", {"kind": "metrics"}, json.dumps([{"metric": "rows", "value": 40}])),
        art("t2", {"kind": "report"}, "# hi"),
        art("t3", {"kind": "metrics"}, json.dumps([{"metric": "x", "value": 1}])),  # element
        {"task_run_id": "t1", "data": "user's own", "description": "made by the task itself"},
    ]
    runs = {"t1": ("train", None), "t2": ("evaluate", None), "t3": ("score", 0)}
    assert records_from_artifacts(arts, runs) == {
        "train": {"artifacts": {"model": {"type": "Model", "uri": "file:///m", "sha256": "ab",
                                          "size": 3}},
                  "metrics": {"rows": 40}},
        "evaluate": {"artifacts": {}, "metrics": {}, "report": "# hi"},
    }


def test_consumers_wait_for_their_artifact_producers_and_the_shim_caches_them(tmp_path):
    paths = up.compile(ml_artifacts.training, target="prefect", out_dir=tmp_path)
    text = next(p for p in paths if p.suffix == ".py").read_text()
    assert "train_state = train(alpha=alpha, wait_for=[download_state], return_state=True)" in text
    assert ("evaluate_state = evaluate(wait_for=[train_state, download_state], "
            "return_state=True)") in text
    assert "if rt.ready(train_state, download_state):" in text
    # train (cached, with artifacts): Prefect does not cache it, the shim does
    assert '@task(name="train", task_run_name="train", cache_policy=NO_CACHE)' in text
    assert 'return invoke(SPECS["train"], {"alpha": alpha}, emulate=("cache",))' in text
    assert "INPUTS" not in text
    ir = up.load(ml_artifacts.training)
    specs = {t.id: flowgen.generated_spec(ir, t) for t in ir.tasks}
    assert [t for t, s in specs.items() if flowgen.shim_caches(s)] == ["train"]


def test_a_mapped_consumer_and_a_subflow_with_artifacts_match_the_reference(prefect_env):
    """read_rows.map(..., wait_for=[write_rows_state]) reads one file per element; the group's
    tasks write and read their own file inside the subflow run (their artifacts carry its
    flow run id); a map element's metrics stay on its own task run, as the reference keeps
    whole tasks' records only."""
    import pipelines_prefect as pp

    prefect = up.run(pp.artifact_shapes, backend="prefect")
    local = up.run(pp.artifact_shapes, backend="local")
    assert prefect.state == local.state == "success"
    assert prefect.output == local.output == {"per": [3, 6, 9], "inner": 3}
    assert prefect.metrics == local.metrics == {"rows_group__summarise_rows": {"total": 3}}
    assert prefect.reports == local.reports == {"rows_group__summarise_rows": "**3**"}
    assert {t: sorted(a) for t, a in prefect.artifacts.items()} == {
        t: sorted(a) for t, a in local.artifacts.items()} == {
        "write_rows": ["table"], "rows_group__write_rows": ["table"]}
    _, arts, task_runs = _latest_flow_run(prefect_env, "artifact-shapes")
    assert sorted(a.key for a in arts if a.key.startswith("read-rows")) == [
        "read-rows-0-metrics", "read-rows-1-metrics", "read-rows-2-metrics"]
