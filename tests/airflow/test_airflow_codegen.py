"""The generated DAG file: golden files, determinism, safety, dialects and the retry mapping."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import ml_artifacts
import ml_training
import pipelines_airflow as pa
import pipelines_assets
import pytest
from pipelines import features
from unipipe_airflow.backend import Backend
from unipipe_airflow.dagbag import load

import unipipe as up
from unipipe.compiler.diagnostics import Status, UnsupportedFeature
from unipipe.ir.features import Feature
from unipipe.store import with_store

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "comparisons" / "golden" / "airflow"
CASES = {
    "fanout": (features.fanout, "3.3"),
    "ml-training": (ml_training.training, "3.3"),
    "retries-exhausted": (features.retries_exhausted, "3.3"),
    "retries-exhausted-2.11": (features.retries_exhausted, "2.11"),
    "quality-gate": (features.quality_gate, "3.3"),
    # up.otherwise() (a negated short-circuit), run_if as trigger rules, the watcher
    "cleanup-else": (features.cleanup_else, "3.3"),
    "failure-path": (features.failure_path, "3.3"),
    "failure-path-2.11": (features.failure_path, "2.11"),
    "map-sources": (pa.map_sources, "3.3"),
    # the celery executor profile (MWAA, Composer): tasks with resources/image are plain @task
    "ml-training-celery": (ml_training.training, "3.3", {"airflow_executor": "celery"}),
    "pod-tasks-celery": (pa.pod_tasks, "3.3", {"airflow_executor": "celery"}),
    # a shared store: in every task spec and in the fan-out's items function
    "fanout-store": (with_store(up.load(features.fanout), "s3://unipipe-store/runs"), "3.3"),
    # command tasks: a plain @task calling the shim's argv runner; with an image on the
    # kubernetes executor, @task.kubernetes (never @task.bash or KubernetesPodOperator)
    "command-tasks": (features.command_tasks, "3.3"),
    "command-tasks-2.11": (features.command_tasks, "2.11", {"airflow_executor": "celery"}),
    # max_parallel -> max_active_tis_per_dagrun, max_active_runs on the DAG
    "limits": (features.limits, "3.3"),
    "limits-2.11": (features.limits, "2.11"),
    # @up.pipeline(timeout=): the shim's deadline in each spec, dagrun_timeout as a backstop
    "run-timeout": (features.run_timeout, "3.3"),
    "run-timeout-2.11": (features.run_timeout, "2.11"),
    # sub-pipelines: nested and repeated TaskGroups (prefix_group_id=False), a mapped task, a
    # gate and a run_if task inside groups, a group's alerts task, the watcher
    "subpipelines": (pa.subpipelines, "3.3"),
    "subpipelines-2.11": (pa.subpipelines, "2.11"),
    # a mapped sub-pipeline: @task_group + .partial().expand(), max_parallel on each member,
    # an items helper for a key path, the consumer's collected list, the watcher
    "mapped-groups": (pa.mapped_groups, "3.3"),
    "mapped-groups-2.11": (pa.mapped_groups, "2.11"),
    # file artifacts, metrics, a report and packages: consumers after their producers (>>),
    # no artifact argument passed, the artifacts/logs/packages in each spec
    "ml-artifacts": (ml_artifacts.training, "3.3"),
    "ml-artifacts-2.11": (ml_artifacts.training, "2.11"),
    "schedule-assets": (pipelines_assets.combined, "3.3"),
    "schedule-assets-2.11": (pipelines_assets.combined, "2.11"),
    "assets-all": (pipelines_assets.all_of, "3.3"),
    "assets-all-2.11": (pipelines_assets.all_of, "2.11"),
}
#: every pipeline the suite compiles, loaded by DagBag on Airflow 3.3 and 2.11
ALL = [features.fanout, features.retry_then_succeed, features.retries_exhausted,
       features.non_retryable, features.jitter, features.cached, features.timeout,
       features.quality_gate, features.cleanup_else, features.failure_path,
       features.success_alert, ml_training.training, pa.hostile,
       pa.reserved, pa.map_sources, pa.capped_backoff, pa.pod_tasks, pa.empty_map,
       pa.killed_once, features.command_tasks, features.limits, features.run_timeout,
       pa.subpipelines, pa.subpipeline_failures, pa.mapped_groups, pa.mapped_group_edges,
       pa.mapped_group_empty, ml_artifacts.training, pipelines_assets.producer,
       pipelines_assets.consumer, pipelines_assets.nightly, pipelines_assets.combined,
       pipelines_assets.all_of]
_SUM_SQUARES = "Squares 1..n (one mapped task instance each) and sums them."
#: the TaskGroups of ``subpipelines`` as DagBag sees them, on 3.3 and 2.11 alike: task ids are
#: the IR's (no "group." prefix), the inner group keeps its IR id and its parent
SUBPIPELINE_GROUPS = {
    "checked_total": {
        "parent": None, "tooltip": "Sums the squares, labels a big total, then tidies up.",
        "tasks": ["checked_total__big_label", "checked_total__is_big", "checked_total__tidy",
                  "checked_total__unipipe_alerts", "when_checked_total__is_big"]},
    "checked_total__sum_squares": {
        "parent": "checked_total", "tooltip": _SUM_SQUARES,
        "tasks": ["checked_total__sum_squares__numbers", "checked_total__sum_squares__square_it",
                  "checked_total__sum_squares__total"]},
    "sum_squares": {
        "parent": None, "tooltip": _SUM_SQUARES,
        "tasks": ["sum_squares__numbers", "sum_squares__square_it", "sum_squares__total"]},
}

#: the mapped TaskGroup of ``mapped-groups`` as DagBag sees it (3.3 and 2.11): the IR's ids
MAPPED_GROUPS = {
    "shift_shard": {"parent": None, "tooltip": "Shifts one shard by the offset and labels it.",
                    "tasks": ["shift_shard__labelled", "shift_shard__shifted"]},
}


def _dag(pipeline, out: Path, version: str = "3.3", **extra) -> str:
    paths = up.compile(pipeline, target="airflow", out_dir=out, target_version=version, **extra)
    return next(p for p in paths if p.suffix == ".py").read_text()


@pytest.mark.parametrize("name", sorted(CASES))
def test_generated_dag_matches_golden(name, tmp_path):
    pipeline, version, *extra = CASES[name]
    text = _dag(pipeline, tmp_path, version, **(extra[0] if extra else {}))
    golden = GOLDEN / f"{name}.py"
    if os.environ.get("UNIPIPE_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_same_ir_gives_same_bytes_and_no_temp_files(tmp_path):
    first = _dag(ml_training.training, tmp_path / "a")
    second = _dag(ml_training.training, tmp_path / "b")
    assert first == second
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "ml_training_dag.py", "ml_training_dag.requirements.txt"]


def test_header_names_unipipe_version_ir_hash_and_target(tmp_path):
    ir = up.load(features.fanout)
    for version in ("3.3", "2.11"):
        lines = _dag(features.fanout, tmp_path / version, version).splitlines()[:3]
        assert lines == [
            f"# Generated by unipipe {up.__version__} for airflow {version}. Do not edit by hand.",
            "# Pipeline: fanout",
            f"# IR hash: sha256:{ir.ir_hash()}",
        ]


def _top_level_imports(text: str) -> set[str]:
    found = set()
    for node in ast.parse(text).body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module or "")
    return found


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("pipeline", ALL, ids=lambda p: p.name)
def test_top_level_imports_only_airflow_and_stdlib(pipeline, tmp_path):
    assert _top_level_imports(_dag(pipeline, tmp_path / "3")) <= {
        "airflow.sdk", "pendulum", "datetime"}
    assert _top_level_imports(_dag(pipeline, tmp_path / "2", "2.11", error_level="warn")) <= {
        "airflow.decorators", "airflow.models.param", "airflow.utils.task_group", "pendulum",
        "datetime", "airflow.datasets", "airflow.timetables.trigger",
        "airflow.timetables.datasets"}


def test_user_strings_stay_literals(tmp_path):
    text = _dag(pa.hostile, tmp_path)
    tree = ast.parse(text)
    constants = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    assert pa.HOSTILE in constants
    assert 'Strings that must stay data: """ {{ ds }}' in [
        ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    # nothing but the generator's own calls: no os, no system()
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "os" not in names and "system" not in {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


def test_no_user_string_reaches_an_airflow_template_field(tmp_path):
    """Literal inputs live in the spec inside the body; a call passes only XCom references."""
    text = _dag(pa.map_sources, tmp_path)
    tree = ast.parse(text)
    dag_fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    wiring = [n for n in dag_fn.body if not isinstance(n, ast.FunctionDef)]
    for stmt in wiring:
        for node in ast.walk(stmt):
            assert not (isinstance(node, ast.Constant) and isinstance(node.value, str)), (
                ast.unparse(stmt))


def test_names_airflow_reserves_are_renamed(tmp_path):
    text = _dag(pa.reserved, tmp_path)
    assert '@task(task_id="task")\n    def task_2():' in text
    assert '@task(task_id="dag")\n    def dag_2(run_task_2):' in text
    assert '{"run_task": run_task_2}' in text and "dag_2(run_task_2=task_result)" in text
    # parameters named like context keys are read from the context, never passed as kwargs
    assert '"params": {"params": "params", "ti": "ti"}' in text


def test_constant_delay_is_native_everywhere(tmp_path):
    for version in ("3.3", "2.11"):
        text = _dag(features.retries_exhausted, tmp_path / version, version)
        assert "retries=2, retry_delay=timedelta(seconds=0.2)" in text
        assert "UnipipeRetry" not in text and '"emulate"' not in text


def test_exponential_backoff_uses_a_retry_policy_on_3_3(tmp_path):
    text = _dag(pa.capped_backoff, tmp_path)
    assert "retry_policy=UnipipeRetry(" in text
    assert "class UnipipeRetry(RetryPolicy):" in text
    assert "retry_exponential_backoff" not in text and '"emulate"' not in text


def test_exponential_backoff_is_slept_by_the_shim_before_3_3(tmp_path):
    for version in ("3.0", "2.11", "2.10"):
        text = _dag(pa.capped_backoff, tmp_path / version, version)
        assert "retries=3, retry_delay=timedelta(seconds=0)" in text
        assert '"emulate": ["retry.delay"]' in text
        assert "UnipipeRetry" not in text


def test_native_airflow_backoff_is_a_float_on_3_3_and_a_bool_before(tmp_path):
    text = _dag(pa.capped_backoff, tmp_path / "3", backoff="airflow")
    assert "retry_exponential_backoff=2.0" in text
    assert "max_retry_delay=timedelta(seconds=2.5)" in text
    text = _dag(pa.capped_backoff, tmp_path / "2", "2.11", backoff="airflow")
    assert "retry_exponential_backoff=True" in text


def test_native_backoff_reports_the_hash_jitter_difference(tmp_path):
    from unipipe.compiler.driver import compile_ir

    result = compile_ir(up.load(pa.capped_backoff), "airflow", tmp_path, backoff="airflow")
    assert any("hash jitter" in d.message and d.level == "warning" for d in result.diagnostics)


def test_exception_filter_is_a_policy_on_3_3_and_the_adapter_before(tmp_path):
    text = _dag(features.non_retryable, tmp_path / "3")
    assert '"retry_policy": True' in text and "retry_policy=UnipipeRetry(" in text
    text = _dag(features.non_retryable, tmp_path / "2", "2.11")
    assert "retry_policy" not in text
    assert '"fail_on": ["builtins:ValueError"]' in text


def test_cache_is_emulated_and_timeout_native(tmp_path):
    text = _dag(features.cached, tmp_path / "c")
    assert '"emulate": ["cache"]' in text
    text = _dag(features.timeout, tmp_path / "t")
    assert "execution_timeout=timedelta(seconds=2)" in text


def test_alerts_become_callbacks(tmp_path):
    text = _dag(features.retries_exhausted, tmp_path)
    assert 'on_retry_callback=send_alerts(\n' in text or 'on_retry_callback=send_alerts("retry"' in text
    assert 'on_failure_callback=send_alerts(' in text
    assert "pipeline=True" in text  # the DAG-level email alert


def test_resources_run_in_a_pod_and_need_the_provider(tmp_path):
    paths = up.compile(pa.pod_tasks, target="airflow", out_dir=tmp_path)
    text = next(p for p in paths if p.suffix == ".py").read_text()
    reqs = next(p for p in paths if p.name.endswith("requirements.txt")).read_text().split()
    assert "apache-airflow-providers-cncf-kubernetes" in reqs
    assert text.count("@task.kubernetes(") == 2
    assert '"limits": {"cpu": "500m", "memory": "256Mi", "nvidia.com/gpu": "1"}' in text
    assert 'image="ghcr.io/example/worker:1.2"' in text
    assert "schedule=timedelta(hours=1)" in text
    local = _dag(pa.pod_tasks, tmp_path / "local", kubernetes=False)
    assert "task.kubernetes" not in local


@pytest.mark.parametrize("executor", ["celery", "local"])
def test_celery_and_local_profiles_never_make_a_pod_and_say_what_is_not_honoured(executor, tmp_path):
    from unipipe.compiler.driver import compile_ir

    result = compile_ir(up.load(pa.pod_tasks), "airflow", tmp_path, target_version="3.3",
                        airflow_executor=executor)
    text = next(p for p in result.paths if p.suffix == ".py").read_text()
    reqs = next(p for p in result.paths if p.name.endswith("requirements.txt")).read_text().split()
    assert "task.kubernetes" not in text and "kubernetes" not in text
    assert reqs == ["unipipe", "unipipe-airflow"]  # no cncf.kubernetes provider
    notes = {(d.level, d.feature.value, d.message.split(":")[0]) for d in result.diagnostics}
    assert notes >= {("warning", "resources", "task 'in_a_pod' asks for cpu=500m, memory=256Mi"),
                     ("warning", "resources.gpu", "task 'in_a_pod' asks for 1 GPU"),
                     ("warning", "image", "task 'in_a_pod' asks for image 'python"),
                     ("warning", "image", "task 'image_only' asks for image 'ghcr.io/example/worker")}
    assert all("NOT honoured" in d.message for d in result.diagnostics if d.feature.value not in ("retry.backoff", "store"))


def test_the_kubernetes_profile_is_the_default_and_unknown_profiles_are_refused(tmp_path):
    from unipipe.compiler.driver import compile_ir

    default = _dag(pa.pod_tasks, tmp_path / "a")
    assert default == _dag(pa.pod_tasks, tmp_path / "b", airflow_executor="kubernetes")
    with pytest.raises(ValueError, match="not one of kubernetes, celery, local"):
        compile_ir(up.load(pa.pod_tasks), "airflow", tmp_path / "c", airflow_executor="swarm")


def test_cli_compile_prints_the_not_honoured_diagnostic(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "unipipe.cli", "compile", "examples/ml_training.py:training",
                           "-t", "airflow", "-o", str(tmp_path), "--airflow-executor", "celery"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 0, proc.stderr
    assert "warning: airflow: resources: task 'train_model' asks for cpu=1, memory=1Gi: NOT honoured" in proc.stderr
    assert "task.kubernetes" not in (tmp_path / "airflow" / "ml_training_dag.py").read_text()
    bad = subprocess.run([sys.executable, "-m", "unipipe.cli", "compile", "examples/ml_training.py:training",
                          "-t", "airflow", "-o", str(tmp_path / "x"), "--airflow-executor", "swarm"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert bad.returncode == 2 and not (tmp_path / "x").exists()


def test_scheduled_dag_with_required_params_is_refused(tmp_path):
    @up.pipeline(name="needs-n", schedule="@daily")
    def needs_n(n: int):
        return features.square(n)

    with pytest.raises(UnsupportedFeature, match="needs a default for every parameter"):
        up.compile(needs_n, target="airflow", out_dir=tmp_path)
    assert not list(tmp_path.iterdir())
    with pytest.warns(UserWarning):
        text = _dag(needs_n, tmp_path, error_level="warn")
    assert "schedule=None" in text


def test_exception_filter_in_a_pod_is_refused_without_retry_policy(tmp_path):
    with pytest.raises(UnsupportedFeature, match="train_model run in a pod"):
        up.compile(ml_training.training, target="airflow", out_dir=tmp_path,
                   target_version="2.11")
    text = _dag(ml_training.training, tmp_path, "3.3")
    assert "pod=True" in text


def test_support_is_declared_for_every_feature_and_dialect():
    backend = Backend()
    for version in backend.versions:
        table = backend.support(version)
        assert set(table) == set(Feature)
    assert backend.versions[0] == "3.3"
    assert backend.support("3.3")[Feature.RETRY_BACKOFF].status is Status.NATIVE
    assert backend.support("2.11")[Feature.RETRY_BACKOFF].status is Status.EMULATED
    assert backend.support("2.11")[Feature.CACHE].status is Status.EMULATED


def test_every_generated_dag_loads_on_airflow_3(tmp_path):
    for pipeline in ALL:
        up.compile(pipeline, target="airflow", out_dir=tmp_path, target_version="3.3")
    bag = load(tmp_path)
    assert bag["airflow"].startswith("3.3")
    assert bag["import_errors"] == {}
    assert sorted(bag["dags"]) == sorted(p.name for p in ALL)
    assert "when_quality_gate" in bag["dags"]["ml-training"]
    assert bag["dags"]["reserved-names"] == ["dag", "task"]
    assert bag["dags"]["map-sources"] == sorted([
        "table", "shout_items", "shout", "double_items", "double", "shout_2_items", "shout_2",
        "when_not_table_ok", "not_ok_branch"])
    assert bag["task_groups"]["subpipelines"] == SUBPIPELINE_GROUPS
    ir = up.load(pa.subpipelines)
    assert set(bag["dags"]["subpipelines"]) == {t.id for t in ir.tasks} | {
        "checked_total__unipipe_alerts", "when_checked_total__is_big", "unipipe_watcher"}
    assert bag["task_groups"]["mapped-groups"] == MAPPED_GROUPS


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_generated_dag_loads_on_airflow_2_11(tmp_path, airflow2_python):
    allowed = {"ml-training"}  # exception filter in a pod: refused on 2.x unless allowed
    for pipeline in ALL:
        up.compile(pipeline, target="airflow", out_dir=tmp_path, target_version="2.11",
                   error_level="warn" if pipeline.name in allowed else "raise")
    bag = load(tmp_path, python=airflow2_python)
    assert bag["airflow"] == "2.11.0"
    assert bag["import_errors"] == {}
    assert sorted(bag["dags"]) == sorted(p.name for p in ALL)
    assert bag["dags"]["quality-gate"] == sorted([
        "score", "passes", "when_passes", "register", "after_register"])
    assert bag["task_groups"]["subpipelines"] == SUBPIPELINE_GROUPS
    assert bag["task_groups"]["mapped-groups"] == MAPPED_GROUPS


def test_cli_airflow_version_selects_the_dialect_and_a_refusal_exits_2(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "unipipe.cli", *args], capture_output=True,
                              text=True, cwd=root, timeout=300)

    ok = cli("compile", "tests/pipelines/features.py:retries_exhausted", "--target", "airflow",
             "--airflow-version", "2.11", "--out", str(tmp_path / "ok"))
    assert ok.returncode == 0, ok.stderr
    text = (tmp_path / "ok" / "airflow" / "retries_exhausted_dag.py").read_text()
    assert "for airflow 2.11." in text and "from airflow.decorators import dag, task" in text
    refused = cli("compile", "examples/ml_training.py:training", "--target", "airflow",
                  "--airflow-version", "2.11", "--out", str(tmp_path / "no"))
    assert refused.returncode == 2
    assert "train_model run in a pod" in refused.stderr
    assert not (tmp_path / "no").exists()


# ---------------------------------------------------------------- sub-pipelines

SUBPIPELINE_RETRY = ROOT / "comparisons" / "cases" / "subpipeline_retry" / "case_subpipeline_retry.py"


def test_support_declares_subpipelines_native_alerts_emulated_and_group_retries_refused():
    backend = Backend()
    for version in backend.versions:
        table = backend.support(version)
        assert table[Feature.SUBPIPELINE].status is Status.NATIVE
        assert table[Feature.SUBPIPELINE_ALERT].status is Status.EMULATED
        assert table[Feature.SUBPIPELINE_RETRY].status is Status.UNSUPPORTED
        assert "TaskGroup takes no retries" in table[Feature.SUBPIPELINE_RETRY].note


@pytest.mark.parametrize("version", ["3.3", "2.11"])
def test_a_group_is_a_with_task_group_block_keeping_the_ir_ids(version, tmp_path):
    text = _dag(pa.subpipelines, tmp_path, version)
    tree = ast.parse(text)
    imported = {(n.module, a.name) for n in tree.body if isinstance(n, ast.ImportFrom)
                for a in n.names}
    assert ("airflow.sdk" if version == "3.3" else "airflow.utils.task_group",
            "TaskGroup") in imported
    dag_fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    withs = [n for n in ast.walk(dag_fn) if isinstance(n, ast.With)]
    calls = {w.items[0].context_expr.args[0].value: w for w in withs}
    assert sorted(calls) == ["checked_total", "checked_total__sum_squares", "sum_squares"]
    for w in withs:
        kwargs = {k.arg: ast.literal_eval(k.value) for k in w.items[0].context_expr.keywords}
        assert kwargs["prefix_group_id"] is False
    # the inner group's block is nested in its parent's
    assert calls["checked_total__sum_squares"] in calls["checked_total"].body
    # the group's own calls are in its block: the mapped task, the gate, the run_if task
    own = ast.unparse(calls["checked_total"])
    for name in ("when_checked_total__is_big(", "checked_total__tidy()",
                 "checked_total__unipipe_alerts()",
                 # square_it, the function the three sum_squares groups share, named after the
                 # callable; its first task's id is in its decorator
                 "checked_total__sum_squares__square_it_result = square_it.expand("):
        assert name in own
    assert "sum_squares__numbers()" not in own.replace("checked_total__sum_squares__numbers", "")
    assert '@task(task_id="checked_total__sum_squares__square_it")\n    def square_it(x)' in text


def test_a_group_with_alerts_gets_an_all_done_task_after_every_member(tmp_path):
    text = _dag(pa.subpipelines, tmp_path)
    assert '@task(trigger_rule="all_done", retries=0)\n    def checked_total__unipipe_alerts():' in text
    members = [t for t in up.load(pa.subpipelines).tasks if t.group and
               t.group.startswith("checked_total")]
    edge = "[\n" + "".join(f"        {t.id}_result,\n" for t in members) + \
        "    ] >> checked_total__unipipe_alerts_result"
    assert edge in text
    assert "sum_squares__unipipe_alerts" not in text  # no alerts, no task
    assert "unipipe_watcher_result = unipipe_watcher()" in text  # keeps a failed run failed


def test_group_retries_are_refused_before_anything_is_written(tmp_path):
    for version in ("3.3", "2.11"):
        out = tmp_path / version
        with pytest.raises(UnsupportedFeature, match="subpipeline.retry"):
            up.compile(f"{SUBPIPELINE_RETRY}:pipe", target="airflow", out_dir=out,
                       target_version=version)
        assert not out.exists() or not list(out.rglob("*"))


def test_cli_compile_of_a_group_with_retries_exits_2_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "unipipe.cli", "compile", f"{SUBPIPELINE_RETRY}:pipe",
                           "-t", "airflow", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    assert "subpipeline.retry" in proc.stderr and "TaskGroup takes no retries" in proc.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*"))


# ---------------------------------------------------------------- mapped sub-pipelines


def test_support_declares_mapped_subpipelines_native_with_max_parallel_per_member():
    backend = Backend()
    for version in backend.versions:
        support = backend.support(version)[Feature.SUBPIPELINE_MAP]
        assert support.status is Status.NATIVE
        assert "max_active_tis_per_dagrun" in support.note and "each member" in support.note


def _same_code(text: str) -> str:
    return ast.unparse(ast.parse(text))


def _decorated(fn: ast.FunctionDef) -> tuple[str, dict]:
    dec = fn.decorator_list[0]
    if isinstance(dec, ast.Call):
        return ast.unparse(dec.func), {k.arg: ast.literal_eval(k.value) for k in dec.keywords}
    return ast.unparse(dec), {}


@pytest.mark.parametrize("version", ["3.3", "2.11"])
def test_a_mapped_group_is_a_task_group_function_expanded_over_its_items(version, tmp_path):
    text = _dag(pa.mapped_groups, tmp_path, version)
    tree = ast.parse(text)
    imported = {(n.module, a.name) for n in tree.body if isinstance(n, ast.ImportFrom)
                for a in n.names}
    module = "airflow.sdk" if version == "3.3" else "airflow.decorators"
    assert (module, "task_group") in imported
    assert not any(name == "TaskGroup" for _, name in imported)  # no unmapped group here
    dag_fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    funcs = {n.name: n for n in dag_fn.body if isinstance(n, ast.FunctionDef)}
    assert _decorated(funcs["shift_shard"]) == ("task_group", {
        "prefix_group_id": False, "tooltip": "Shifts one shard by the offset and labels it."})
    # the item and the outside output the members read are the group function's parameters
    assert [a.arg for a in funcs["shift_shard"].args.args] == ["shard", "offset_of_result"]
    body = ast.unparse(funcs["shift_shard"])
    assert "shift_shard__shifted(shard=shard, offset=offset_of_result)" in body
    assert "shift_shard__labelled(value=shift_shard__shifted_result, shard=shard)" in body
    # it returns what the code after it needs (here both: the watcher waits for every task)
    assert body.endswith("return (shift_shard__shifted_result, shift_shard__labelled_result)")
    assert _same_code(
        "shift_shard__shifted_result, shift_shard__labelled_result = shift_shard.partial("
        "offset_of_result=offset_of_result).expand(shard=shift_shard_items_result)"
    ) in ast.unparse(dag_fn)
    # max_parallel=2 on every member; the key path goes through an items helper task
    for member in ("shift_shard__shifted", "shift_shard__labelled"):
        assert _decorated(funcs[member]) == ("task", {"max_active_tis_per_dagrun": 2})
    assert 'map_items({"path": ["shards"]}, value)' in text
    # the consumer outside re-reads every copy's output as a list (runtime._collected)
    assert '"collect": {"labels": "shift_shard__labelled"}' in text


def test_a_mapped_group_over_a_plain_output_expands_over_it_and_returns_only_what_is_read(
        tmp_path):
    case = ROOT / "comparisons" / "cases" / "subpipeline_map" / "case_subpipeline_map.py"
    text = _dag(f"{case}:pipe", tmp_path)
    code = ast.unparse(ast.parse(text))
    assert "per_shard__score_result = per_shard.expand(shard=list_shards_result)" in code
    assert "        return per_shard__score_result\n" in text
    assert "'fan_out': True" in code  # list_shards hands its list over item by item
    assert "per_shard_items" not in text and "unipipe_watcher" not in text
    # the item's key path is applied by the shim: the task gets the whole item
    assert "'paths': {'shard_id': ['id']}" in code
    assert "per_shard__clean(rows=per_shard__load_shard_result, shard_id=shard)" in code


def test_pipelines_without_mapped_groups_import_no_task_group_decorator(tmp_path):
    for pipeline in (pa.subpipelines, features.fanout):
        assert "task_group" not in _dag(pipeline, tmp_path / pipeline.name)


def test_tasks_of_one_callable_and_policies_share_one_task_function(tmp_path):
    """A chain of five calls of add_one: add_one (a parameter) and add_one_2 (an upstream) are
    two definitions, add_one_3..5 call add_one_2 with ``.override(task_id=...)``; Airflow's own
    DagBag sees five tasks."""
    [path] = [p for p in up.compile(features.one_callable, target="airflow", out_dir=tmp_path)
              if p.suffix == ".py"]
    source = path.read_text()
    defs = [n.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)
            and any("task" in ast.unparse(d) for d in n.decorator_list)]
    assert sorted(defs) == ["add_one", "add_one_2"]
    for i in (3, 4, 5):
        assert f'add_one_2.override(task_id="add_one_{i}")(x=' in source
    parsed = load(tmp_path)
    assert parsed["import_errors"] == {}
    assert parsed["dags"] == {"one-callable": ["add_one", *(f"add_one_{i}" for i in range(2, 6))]}
