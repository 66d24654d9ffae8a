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


# ---------------------------------------------------------------- mapped sub-pipelines


def test_support_declares_mapped_groups_native():
    from unipipe.compiler.registry import get_backend

    note = get_backend("kubeflow").support()[Feature.SUBPIPELINE_MAP]
    assert note.status is Status.NATIVE
    assert "ParallelFor" in note.note and "for_loop.py" in note.note


def _loop_of(spec: dict, display: str) -> tuple[dict, dict]:
    """(the ParallelFor task around the call of sub-pipeline ``display``, its loop DAG)."""
    for dag in [spec["root"]] + [c for c in spec["components"].values() if "dag" in c]:
        for task in dag["dag"].get("tasks", {}).values():
            loop = spec["components"][task["componentRef"]["name"]]
            if "parameterIterator" in task and any(
                    t["taskInfo"]["name"] == display for t in loop["dag"]["tasks"].values()):
                return task, loop
    raise AssertionError(f"no ParallelFor around {display}")


def test_a_mapped_group_is_its_call_inside_a_parallel_for(tmp_path):
    module, spec, _ = compile_(S.mapped_groups, tmp_path)
    tree = ast.parse(module)
    loops = [n for n in ast.walk(tree) if isinstance(n, ast.With)
             and "ParallelFor" in ast.unparse(n.items[0].context_expr)]
    assert [ast.unparse(w.items[0]) for w in loops] == [
        "dsl.ParallelFor(items=per_label_items_task.output) as label_item",
        "dsl.ParallelFor(items=['\"x\"', '\"y\"']) as label_item_",
        "dsl.ParallelFor(items=shards_task.output, parallelism=2) as shard_item"]
    # the loop body is the call alone, the item as the sub-pipeline's first argument
    assert [ast.unparse(s) for s in loops[2].body] == [
        "per_shard_task = per_shard_pipeline(shard=shard_item)",
        "per_shard_task.set_display_name('per_shard')"]
    # max_parallel=2 -> iteratorPolicy.parallelismLimit; the items are the task's LIST output
    loop, body = _loop_of(spec, "per_shard")
    assert loop["iteratorPolicy"] == {"parallelismLimit": 2}
    assert "inputParameter" in loop["parameterIterator"]["items"]
    assert body["inputDefinitions"]["parameters"][loop["parameterIterator"]["itemInput"]] == {
        "parameterType": "STRING"}
    # the sub-pipeline's members read the item (a key path on it is the shim's: the spec)
    call, comp = dag_of(spec, "per_shard")
    assert comp["inputDefinitions"]["parameters"] == {"shard": {"parameterType": "STRING"}}
    weigh = all_tasks(spec)["per_shard__weigh"]
    assert weigh["inputs"]["parameters"]["shard_id"] == {"componentInputParameter": "shard"}
    assert weigh["retryPolicy"]["maxRetryCount"] == 1
    # a task outside reads a member as dsl.Collected: the loop DAG's LIST output, wired to
    # the sub-pipeline task's own output
    assert body["outputDefinitions"]["parameters"] == {
        "pipelinechannel--per-shard-per_shard__weigh": {"parameterType": "LIST"}}
    assert body["dag"]["outputs"]["parameters"][
        "pipelinechannel--per-shard-per_shard__weigh"]["valueFromParameter"] == {
        "outputParameterKey": "per_shard__weigh", "producerSubtask": next(
            k for k, t in body["dag"]["tasks"].items() if t is call)}
    assert "def total(values: list)" in module
    # each member tells the adapter it runs once per item (task[i])
    assert module.count("element=True") == 3  # rows_of, weigh, check (one component for
    # per_label__check and per_label_2__check, told its task by unipipe_task_id)
    # a parameter's JSON text becomes the list by a small component, a literal list is raw
    param_loop, _ = _loop_of(spec, "per_label")
    assert param_loop["parameterIterator"]["items"] == {
        "inputParameter": "pipelinechannel--per-label-items-Output"}
    assert all_tasks(spec)["per_label items"]["inputs"]["parameters"] == {
        "items": {"componentInputParameter": "labels"}}
    literal_loop, _ = _loop_of(spec, "per_label_2")
    assert literal_loop["parameterIterator"]["items"] == {"raw": '["\\"x\\"", "\\"y\\""]'}
    assert "iteratorPolicy" not in literal_loop


@pytest.mark.parametrize(("pipeline", "message"), [
    (S.map_over_a_key, "sub-pipeline per_label: map over a key path"),
    (S.gate_on_a_copy, "condition on flagged__over, which runs once per item"),
])
def test_mapped_group_shapes_kfp_cannot_express_are_refused(pipeline, message, tmp_path):
    with pytest.raises(UnsupportedFeature, match=message):
        up.compile(pipeline, target="kubeflow", out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_mapped_groups_run_as_the_reference(webhook):
    ref, kfp, _, _ = _both(S.mapped_groups, webhook)
    assert _view(kfp) == _view(ref)
    assert kfp.output == [25, ["A", "C"], ["X", "Y"]]  # (0+1) + (0+1+2)*2 + (0+..+3)*3
    assert kfp.tasks["per_shard__weigh[1]"].attempts == 2
    assert kfp.tasks["per_shard__weigh"].attempts == 4
    assert kfp.tasks["per_label_2__check[1]"].output == "Y"


def test_a_failed_copy_leaves_the_others_and_fails_the_reader(webhook):
    ref, kfp, _, _ = _both(S.mapped_group_fails, webhook)
    assert _view(kfp) == _view(ref)
    assert [kfp.tasks[f"per_label__check[{i}]"].state for i in range(3)] == [
        "success", "failed", "success"]
    assert kfp.tasks["per_label__check"].error_type == "ValueError"
    assert kfp.tasks["announce"].state == "upstream_failed"
    assert kfp.state == "failed"


def test_the_mapped_group_cases_run_on_kubeflow():
    from pathlib import Path

    from unipipe.harness.cases import load_case

    root = Path(__file__).resolve().parents[2] / "comparisons" / "cases"
    for case in ("subpipeline_map", "subpipeline_map_fails"):
        assert load_case(root / case).declared("kubeflow") is None


def test_a_mapped_group_inside_a_plain_one_returns_its_copies_as_a_list(webhook, tmp_path):
    module, _, _ = compile_(S.mapped_inside_a_group, tmp_path)
    assert "class SumEachOutputs(NamedTuple):" in module
    assert "sum_each__per_label__check: list" in module  # returned as dsl.Collected
    returned = next(ast.unparse(n) for n in ast.walk(ast.parse(module))
                    if isinstance(n, ast.Return) and "SumEachOutputs" in ast.unparse(n))
    assert ("sum_each__per_label__check=dsl.Collected("
            "sum_each__per_label_task.outputs['sum_each__per_label__check'])") in returned
    ref, kfp, _, _ = _both(S.mapped_inside_a_group, webhook)
    assert _view(kfp) == _view(ref)
    assert kfp.output == ["P/Q", 7]  # 1 + (0+1+2)*2
