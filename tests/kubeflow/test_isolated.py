"""Isolated KFP runs (``conform --isolated``): every component launch in a sandbox of its own,
the code only from the code package in the store, a real moto S3 server the only shared medium."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import unipipe as up

pytest.importorskip("kfp")

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "isolation"
sys.path.insert(0, str(HERE))


def test_an_isolated_task_runs_in_its_sandbox_with_code_from_the_package(s3_store, tmp_path):
    import boto3
    import isolation_pipes

    result = up.run(isolation_pipes.where_tasks_run, backend="kubeflow", isolated=True,
                    store=f"s3://{s3_store}/store")
    assert result.state == "success", result.tasks
    seen = result.output
    sandbox = Path(seen["sandbox"])
    assert sandbox.name.startswith("where-a1") and sandbox.parent.name == "sandboxes"
    site = sandbox / "site"
    # unipipe and the task module come from the code package unpacked in the sandbox, not from
    # the checkout (which the workspace installs editable) or the test's folder
    assert Path(seen["unipipe"]) == site / "unipipe" / "__init__.py"
    assert Path(seen["module"]) == site / "isolation_pipes.py"
    assert (seen["home"], seen["tmp"], seen["cwd"]) == (
        str(sandbox / "home"), str(sandbox / "tmp"), str(sandbox / "work"))
    assert not sandbox.exists()  # gone with the "pod"
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_store)["Contents"]]
    wheels = sorted(k.rsplit("/", 1)[-1].split("-")[0] for k in keys if k.endswith(".whl"))
    assert wheels == ["unipipe", "unipipe_code_where_tasks_run", "unipipe_kubeflow"]


def test_a_file_only_the_compiling_machine_has_is_missing_in_the_sandbox(s3_store):
    import isolation_pipes

    store = f"s3://{s3_store}/store"
    here = up.run(isolation_pipes.reads_a_local_file, backend="kubeflow", store=store)
    assert here.state == "success" and here.output == "present only where the pipeline was compiled"
    there = up.run(isolation_pipes.reads_a_local_file, backend="kubeflow", store=store,
                   isolated=True)
    assert there.state == "failed"
    task = there.tasks["read_neighbour"]
    assert task.error_type == "FileNotFoundError", task
    assert "only_on_the_compiling_machine.txt" in task.error


def test_an_isolated_run_needs_a_store():
    import isolation_pipes

    with pytest.raises(ValueError, match="an isolated run needs a shared store"):
        up.run(isolation_pipes.where_tasks_run, backend="kubeflow", isolated=True)


def test_the_required_cases_pass_isolated_on_kubeflow_with_the_s3_store(s3_store, tmp_path):
    """The isolated lane of ``conform --isolated --store s3://...`` on the required cases."""
    from unipipe.harness.cases import discover
    from unipipe.harness.execute import Placement, run_suite

    required = [c for c in discover([ROOT / "comparisons" / "cases"]) if c.required]
    assert "store_large_value" in {c.id for c in required}
    suite = run_suite(required, ["kubeflow"], tmp_path, jobs=2,
                      placement=Placement(store=f"s3://{s3_store}/conform", isolated=True))
    failures = {o.case: (o.status, o.reason, o.diffs) for o in suite.failures()}
    assert failures == {}
