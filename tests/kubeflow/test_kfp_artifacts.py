"""File artifacts, metrics, reports and packages on KFP: the compiled components' signatures,
and RunResult.metrics / .artifacts / .reports read back from the executor's own record (each
component's executor_output.json and the files at the artifact URIs), against the reference."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import kfp_artifacts as ka
import ml_artifacts
import pytest
import yaml

import unipipe as up
from unipipe.compiler.diagnostics import UnsupportedFeature
from unipipe.runtime import artifacts as rt_artifacts
from unipipe.runtime import store

MODEL_SHA = "c976bea846752f787732a0bff97e54b833a18547c32c201407ba1c54bb26cfdd"
DATA_SHA = "02ebcb6e63afaa110184cda71c1066bd91e1b639a3ac1cbf8196581e6699cef2"
REPORT = ("# Evaluation\n\n| metric | value |\n|---|---|\n| R2 | 0.9988 |\n"
          "| slope | 2.963455 |\n")


def compile_(pipeline, out: Path) -> tuple[str, dict]:
    paths = up.compile(pipeline, target="kubeflow", out_dir=out)
    module = next(p for p in paths if p.suffix == ".py").read_text()
    spec = next(yaml.safe_load_all(next(p for p in paths if p.suffix == ".yaml").read_text()))
    return module, spec


def executor_output(root: Path, run_id: str, launch: str) -> dict:
    """What KFP's executor wrote for one launch (kfp/dsl/executor.py ~318-348)."""
    return json.loads((root / run_id / launch / "executor_output.json").read_text())


def sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_components_declare_the_artifacts_hidden_outputs_and_packages(tmp_path):
    module, spec = compile_(ml_artifacts.training, tmp_path)
    comps = spec["components"]
    assert comps["comp-download"]["outputDefinitions"]["artifacts"]["data"]["artifactType"] == {
        "schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"}
    train = comps["comp-train"]
    assert train["inputDefinitions"]["artifacts"]["data"]["artifactType"]["schemaTitle"] == \
        "system.Dataset"
    assert {k: v["artifactType"]["schemaTitle"]
            for k, v in train["outputDefinitions"]["artifacts"].items()} == {
        "model": "system.Model", "metrics": "system.Metrics"}
    # up.log_metric / up.report need declared outputs for KFP to record them
    assert {k: v["artifactType"]["schemaTitle"]
            for k, v in comps["comp-evaluate"]["outputDefinitions"]["artifacts"].items()} == {
        "unipipe_metrics": "system.Metrics", "unipipe_report": "system.Markdown"}
    # the return value is then outputs["Output"]; artifacts are wired producer.outputs[name]
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["evaluate"]["inputs"]["artifacts"] == {
        "model": {"taskOutputArtifact": {"outputArtifactKey": "model", "producerTask": "train"}},
        "data": {"taskOutputArtifact": {"outputArtifactKey": "data", "producerTask": "download"}}}
    # packages: KFP's pip prelude in train's command only
    command = " ".join(spec["deploymentSpec"]["executors"]["exec-train"]["container"]["command"])
    assert "pip install --quiet --no-warn-script-location 'packaging>=21'" in command
    assert "pip install" not in " ".join(
        spec["deploymentSpec"]["executors"]["exec-evaluate"]["container"]["command"])
    assert "from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output" in module
    # a task reading an artifact is cached by the shim (by the bytes), not by KFP
    assert tasks["train"].get("cachingOptions", {}).get("enableCache") is not True


def test_one_component_serves_calls_on_different_producers_and_an_importer(tmp_path):
    module, spec = compile_(ka.shared, tmp_path / "a")
    # one Python component (kfp writes a component and executor per task, all alike)
    assert module.count("\ndef size(") == 1
    sizes = [e["container"] for k, e in spec["deploymentSpec"]["executors"].items()
             if k.startswith("exec-size")]
    assert len(sizes) == 2 and sizes[0] == sizes[1]
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["size-2"]["inputs"]["artifacts"]["data"]["taskOutputArtifact"][
        "producerTask"] == "make-2"
    src = tmp_path / "in.txt"
    _, spec = compile_(ka.imported(src.as_uri()), tmp_path / "b")
    importer = next(e["importer"] for e in spec["deploymentSpec"]["executors"].values()
                    if "importer" in e)
    assert importer["artifactUri"]["constant"] == src.as_uri()
    assert importer["typeSchema"]["schemaTitle"] == "system.Dataset"


def test_an_artifact_across_a_sub_pipeline_is_refused_naming_file_line_and_field(tmp_path):
    @up.pipeline(name="inner")
    def inner(d):
        return ka.size(data=d)

    @up.pipeline(name="kfp-cross")
    def cross():
        return inner(ka.make("abc").outputs["data"])

    with pytest.raises(UnsupportedFeature) as err:
        up.compile(cross, target="kubeflow", out_dir=tmp_path)
    text = str(err.value)
    assert "test_kfp_artifacts.py:" in text and "[tasks.inner__size.artifacts.data]" in text
    assert not any(tmp_path.iterdir())


def test_metrics_artifacts_and_report_come_from_the_executor_output(tmp_path, kfp_pipeline_root):
    params = {"day": "2024-01-01", "rows": 40, "alpha": 0.01}
    ref = up.run(ml_artifacts.training, backend="local", params=params)
    res = up.run(ml_artifacts.training, backend="kubeflow", params=params)
    assert res.state == "success" and res.output["model_sha256"] == MODEL_SHA
    assert res.metrics == ref.metrics == {"train": {"rows": 40, "slope": 2.963455},
                                          "evaluate": {"r2": 0.9988}}
    assert res.reports == ref.reports == {"evaluate": REPORT}
    assert res.artifacts["train"]["model"]["sha256"] == MODEL_SHA
    assert res.artifacts["download"]["data"]["sha256"] == DATA_SHA
    assert res.artifacts["train"]["metrics"]["type"] == "Metrics"
    assert set(res.artifacts) == {"download", "train"}  # the hidden outputs are not listed

    # The engine's own record: each launch's executor_output.json and the files it names
    train = executor_output(kfp_pipeline_root, res.run_id, "train-a1")["artifacts"]
    model = train["model"]["artifacts"][0]
    assert model["metadata"] == {"framework": "closed-form ridge"}
    assert res.artifacts["train"]["model"]["uri"] == model["uri"]
    assert sha(model["uri"]) == MODEL_SHA
    assert train["metrics"]["artifacts"][0]["metadata"] == {"rows": 40, "slope": 2.963455}
    evaluate = executor_output(kfp_pipeline_root, res.run_id, "evaluate-a1")["artifacts"]
    report = evaluate["unipipe_report"]["artifacts"][0]["uri"]
    assert Path(report).read_text() == REPORT
    assert evaluate["unipipe_metrics"]["artifacts"][0]["metadata"] == {"r2": 0.9988}
    # ... and not the store route's record, which the native route never writes
    store.use(None)
    assert rt_artifacts.read_record(res.run_id, "train") is None


def test_a_second_run_hits_the_cache_and_the_consumer_gets_the_same_model(tmp_path,
                                                                          kfp_pipeline_root):
    first = up.run(ml_artifacts.training, backend="kubeflow")
    second = up.run(ml_artifacts.training, backend="kubeflow")
    assert [first.tasks["train"].cache_hit, second.tasks["train"].cache_hit] == [False, True]
    assert second.tasks["evaluate"].cache_hit is False
    assert second.output == first.output
    assert second.output["model_sha256"] == MODEL_SHA
    # the hit put the cached model into this run's own output path, with its metadata
    model = executor_output(kfp_pipeline_root, second.run_id, "train-a1")["artifacts"]["model"]
    uri = model["artifacts"][0]["uri"]
    assert second.run_id in uri and sha(uri) == MODEL_SHA
    assert model["artifacts"][0]["metadata"] == {"framework": "closed-form ridge"}
    assert second.metrics == first.metrics
    assert second.artifacts["train"]["model"]["sha256"] == MODEL_SHA


def test_shared_component_and_importer_run(tmp_path):
    res = up.run(ka.shared, backend="kubeflow")
    assert res.output == {"a": 3, "b": 5}
    assert res.metrics == {"size": {"chars": 3}, "size_2": {"chars": 5}}
    assert res.reports == {"size": "**3** characters", "size_2": "**5** characters"}
    assert res.artifacts["make_2"]["data"]["sha256"] == hashlib.sha256(b"hello").hexdigest()
    src = tmp_path / "in.txt"
    src.write_text("imported!")
    res = up.run(ka.imported(src.as_uri()), backend="kubeflow")
    assert res.state == "success" and res.output == 9
    assert res.metrics == {"size": {"chars": 9}}


def test_a_failed_pip_install_fails_the_task_before_it_runs(tmp_path):
    res = up.run(ka.packages_missing, backend="kubeflow")
    assert res.state == "failed"
    fit = res.tasks["needs_missing"]
    assert (fit.state, fit.attempts, fit.error_type) == ("failed", 1, "PackagesMissing")
    assert "unipipe-no-such-package==1.0" in fit.error
    assert res.tasks["after_missing"].state == "upstream_failed"


def test_kfps_own_cache_hit_hands_the_consumer_the_recorded_artifact(tmp_path):
    first = up.run(ka.native_cache, backend="kubeflow")
    second = up.run(ka.native_cache, backend="kubeflow")
    assert [first.tasks["make_cached"].cache_hit, second.tasks["make_cached"].cache_hit] == [
        False, True]
    assert second.output == first.output == len("cached bytes")
    # the hit reused the first run's recorded outputs: the same URI, metrics and file
    assert second.artifacts["make_cached"] == first.artifacts["make_cached"]
    assert first.run_id in second.artifacts["make_cached"]["data"]["uri"]
    assert second.metrics == first.metrics == {"make_cached": {"chars": 12},
                                               "size": {"chars": 12}}


@pytest.mark.parametrize("text", ["abcd", "ab"])
def test_artifacts_read_inside_a_condition_and_a_fan_out_match_the_reference(text, tmp_path):
    from unipipe.harness.normalise import artifact_digests

    ref = up.run(ka.in_blocks, backend="local", params={"text": text})
    res = up.run(ka.in_blocks, backend="kubeflow", params={"text": text})
    assert res.output == ref.output
    assert res.output["per"] == [len(text), 2 * len(text)]
    assert {t: r.state for t, r in res.tasks.items()} == {t: r.state for t, r in ref.tasks.items()}
    assert res.metrics == ref.metrics
    assert res.reports == ref.reports
    assert artifact_digests(res.artifacts) == artifact_digests(ref.artifacts)
    assert res.artifacts["make"]["data"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
