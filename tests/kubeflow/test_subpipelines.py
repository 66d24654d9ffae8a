"""Sub-pipelines on KFP: a @dsl.pipeline per group called as a component, what it takes in and
gives back, its alerts task, the shapes refused before writing, and runs against the reference."""

from __future__ import annotations

import ast
import os

import kfp_subpipelines as S
import pytest
import yaml
from test_compile import all_tasks, compile_

import unipipe as up
from unipipe.compiler.diagnostics import Status, UnsupportedFeature
from unipipe.ir.features import Feature


def dag_of(spec: dict, display: str) -> tuple[dict, dict]:
    """(the task whose display name is ``display``, the DAG component it calls)."""
    task = all_tasks(spec)[display]
    return task, spec["components"][task["componentRef"]["name"]]


def test_support_declares_groups_native_and_group_retries_unsupported():
    from unipipe.compiler.registry import get_backend

    table = get_backend("kubeflow").support()
    assert table[Feature.SUBPIPELINE].status is Status.NATIVE
    assert table[Feature.SUBPIPELINE_ALERT].status is Status.NATIVE
    assert table[Feature.SUBPIPELINE_RETRY].status is Status.UNSUPPORTED
    assert "dag.go" in table[Feature.SUBPIPELINE_RETRY].note


def test_each_group_is_a_pipeline_called_as_a_component(tmp_path):
    module, spec, _ = compile_(S.nested_groups, tmp_path)
    tree = ast.parse(module)
    pipelines = [f.name for f in tree.body if isinstance(f, ast.FunctionDef)
                 and any("pipeline" in ast.unparse(d) for d in f.decorator_list)]
    # inner before outer (kfp runs a pipeline function when it decorates it), in call order
    assert pipelines == ["summarise__sum_squares_pipeline", "summarise_pipeline",
                         "summarise_2__sum_squares_pipeline", "summarise_2_pipeline",
                         "summarise_3__sum_squares_pipeline", "summarise_3_pipeline",
                         "nested_groups_pipeline"]
    ir = up.load(S.nested_groups)
    tasks = all_tasks(spec)
    # every IR task keeps its id as its display name, whatever DAG it sits in
    assert {t.id for t in ir.tasks} <= set(tasks)
    # each group is a DAG task of its parent, named after the group
    outer, comp = dag_of(spec, "summarise")
    assert "dag" in comp
    assert outer["inputs"]["parameters"] == {"n": {"componentInputParameter": "n"},
                                             "limit": {"componentInputParameter": "limit"}}
    # it gives back what is read outside it, wired to the task that produced it
    assert comp["dag"]["outputs"]["parameters"]["summarise__over"]["valueFromParameter"][
        "outputParameterKey"] == "Output"
    assert comp["outputDefinitions"]["parameters"] == {
        "summarise__over": {"parameterType": "BOOLEAN"}}
    inner, inner_comp = dag_of(spec, "summarise__sum_squares")
    assert inner["inputs"]["parameters"]["summarise__numbers_output"] == {
        "taskOutputParameter": {"outputParameterKey": "Output",
                                "producerTask": inner["dependentTasks"][0]}}
    assert list(inner_comp["outputDefinitions"]["parameters"]) == ["summarise__sum_squares__total"]
    # the second call passes the literal 2 inside the spec: only limit comes in
    second, second_comp = dag_of(spec, "summarise_2")
    assert list(second["inputs"]["parameters"]) == ["limit"]
    assert "outputDefinitions" not in second_comp  # nothing of it is read outside
    # the third call is inside up.when(): one dsl.If around the call
    third, _ = dag_of(spec, "summarise_3")
    cond = next(t for t in spec["root"]["dag"]["tasks"].values()
                if "condition" in t.get("triggerPolicy", {}))
    assert spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"].get(
        next(k for k, t in spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"].items()
             if t["taskInfo"]["name"] == "summarise_3"))
    # the cleanup waits for the group's task, and runs whatever it ended as
    tidy = tasks["tidy"]
    assert tidy["dependentTasks"] == [k for k, t in spec["root"]["dag"]["tasks"].items()
                                      if t["taskInfo"]["name"] == "summarise_2"]
    assert tidy["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"


def test_a_group_alert_is_a_final_status_task_after_the_group(tmp_path):
    module, spec, _ = compile_(S.nested_groups, tmp_path)
    alerts = all_tasks(spec)["summarise alerts"]
    group_key = next(k for k, t in spec["root"]["dag"]["tasks"].items()
                     if t["taskInfo"]["name"] == "summarise")
    assert alerts["dependentTasks"] == [group_key]
    assert alerts["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert alerts["inputs"]["parameters"]["status"] == {
        "taskFinalStatus": {"producerTask": group_key}}
    assert alerts["cachingOptions"].get("enableCache") is not True
    body = module.split("def summarise_alerts")[1].split("\n\n\n")[0]
    assert 'group="summarise"' in body and "group_alerts(" in body


@pytest.mark.parametrize(("pipeline", "message"), [
    (S.group_retry, "subpipeline.retry"),
    (S.read_from_inside_if, "reads gated_inside__total_2, which runs under up.when"),
    (S.gate_from_outside, "half_gated__total: runs under a condition on over, outside"),
])
def test_shapes_kfp_cannot_express_are_refused_before_writing(pipeline, message, tmp_path):
    with pytest.raises(UnsupportedFeature, match=message):
        up.compile(pipeline, target="kubeflow", out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_the_subpipeline_cases_declare_the_refused_retry():
    from pathlib import Path

    from unipipe.harness.cases import load_case

    root = Path(__file__).resolve().parents[2] / "comparisons" / "cases"
    assert load_case(root / "subpipeline_retry").declared("kubeflow").status == "unsupported"
    for case in ("subpipeline_group", "subpipeline_member_fails"):
        assert load_case(root / case).declared("kubeflow") is None


def _group_alerts(webhook) -> list[tuple[str, str]]:
    """(group, event) of each sub-pipeline alert the real receiver got, sorted."""
    return sorted((r["unipipe"]["group"], r["unipipe"]["event"]) for r in webhook.received
                  if isinstance(r, dict) and "unipipe" in r and r["unipipe"].get("group"))


def _both(pipeline, webhook):
    ref = up.run(pipeline, backend="local")
    got_ref = _group_alerts(webhook)
    webhook.received.clear()
    cache_url = os.environ["UNIPIPE_CACHE_URL"]
    os.environ["UNIPIPE_CACHE_URL"] = cache_url + "-kubeflow"
    try:
        kfp = up.run(pipeline, backend="kubeflow")
    finally:
        os.environ["UNIPIPE_CACHE_URL"] = cache_url
    return ref, kfp, got_ref, _group_alerts(webhook)


def _view(result: up.RunResult) -> dict:
    return {"state": result.state, "output": result.output,
            "tasks": {k: (t.state, t.attempts, t.output, t.error_type)
                      for k, t in sorted(result.tasks.items())}}


def test_nested_and_repeated_groups_run_as_the_reference(webhook):
    ref, kfp, got_ref, got_kfp = _both(S.nested_groups, webhook)
    assert _view(kfp) == _view(ref)
    assert kfp.tasks["summarise_3__sum_squares__total"].output == 30
    assert kfp.tasks["announce"].output == "over the limit: True"
    # one success alert per group that ran, delivered by its final-status task
    assert got_kfp == got_ref == [("summarise", "success"), ("summarise_2", "success"),
                                  ("summarise_3", "success")]
    assert sorted(a["task"] for a in kfp.alerts) == [
        "group:summarise", "group:summarise_2", "group:summarise_3"]


def test_a_failed_member_fails_its_groups_once_and_a_group_never_started_sends_nothing(webhook):
    ref, kfp, got_ref, got_kfp = _both(S.failing_groups, webhook)
    assert _view(kfp) == _view(ref)
    assert kfp.state == "failed"
    assert kfp.tasks["wrapper__risky__explode"].error_type == "ValueError"
    assert kfp.tasks["wrapper_2__double"].state == "upstream_failed"
    assert kfp.tasks["tidy"].state == "success"
    assert got_kfp == got_ref == [("wrapper", "failure"), ("wrapper__risky", "failure")]


def test_the_final_status_of_a_task_that_never_started_fails_its_reader(tmp_path):
    """The KFP driver resolves a PipelineTaskFinalStatus from the producer's execution and
    fails without one (backend/src/v2/driver/resolve.go): wrapper_2's alerts task fails
    without running, so no alert, and the exit task of an unreached group is recorded so."""
    from unipipe_kubeflow.executor import SpecExecutor

    paths = up.compile(S.failing_groups, target="kubeflow", out_dir=tmp_path / "out")
    spec_path = next(p for p in paths if p.suffix == ".yaml")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(os.path.dirname(S.__file__)), os.environ.get("PYTHONPATH", "")]))
    record = SpecExecutor(spec_path, pipeline_root=tmp_path / "root", env=env).run({"x": 1})
    states = {e.display: (e.state, e.reason) for e in record.executions}
    assert record.state == "FAILED"
    assert states["wrapper_2 alerts"][0] == "FAILED"
    assert "not in tasks" in states["wrapper_2 alerts"][1]
    assert not [e for e in record.executions if e.display == "wrapper_2 alerts" and e.launches]
    # inside the group that never started, everything is upstream-failed
    assert states["wrapper_2__risky alerts"][0] == "UPSTREAM_FAILED"
    assert states["wrapper alerts"][0] == "SUCCEEDED"
    spec = yaml.safe_load(spec_path.read_text())
    assert "retryPolicy" not in str(spec["root"])
