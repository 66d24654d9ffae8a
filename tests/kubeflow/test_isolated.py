"""Isolated KFP runs (``conform --isolated``): every component launch in a sandbox of its own,
the code only from the code package in the store, a real moto S3 server the only shared medium."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import unipipe as up

pytest.importorskip("kfp")

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parents[1] / "isolation"
sys.path.insert(0, str(HERE))


def test_an_isolated_task_runs_in_its_sandbox_with_code_from_the_package(s3_store, tmp_path,
                                                                         monkeypatch):
    import boto3
    import isolation_pipes

    monkeypatch.setenv("PATH", isolation_pipes.with_a_home_tool_folder(os.environ["PATH"]))
    result = up.run(isolation_pipes.where_tasks_run, backend="kubeflow", isolated=True,
                    store=f"s3://{s3_store}/store")
    assert result.state == "success", result.tasks
    seen = result.output
    sandbox = Path(seen["sandbox"])
    assert sandbox.name.startswith("where-a1") and sandbox.parent.name == "sandboxes"
    # unipipe and the task module come from the code package, which the component itself
    # fetched from the store (the compiled unipipe_code(), after KFP's pip prelude) into a
    # folder of the pod's TMPDIR; not from the checkout (which the workspace installs editable),
    # the test's folder, or anything the launcher put in the sandbox
    code = Path(seen["unipipe"]).parents[1]
    assert code.parent == sandbox / "tmp" and code.name.startswith("unipipe-code-"), code
    assert Path(seen["module"]) == code / "isolation_pipes.py"
    assert seen["no_site"] == 1
    # the image's PATH: none of the user's tool folders reach the component
    assert isolation_pipes.account_home_entries(seen["path"]) == []
    assert (seen["home"], seen["tmp"], seen["cwd"]) == (
        str(sandbox / "home"), str(sandbox / "tmp"), str(sandbox / "work"))
    assert not sandbox.exists()  # gone with the "pod"
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_store)["Contents"]]
    wheels = sorted(k.rsplit("/", 1)[-1].split("-")[0] for k in keys if k.endswith(".whl"))
    assert wheels == ["unipipe", "unipipe_code_where_tasks_run", "unipipe_kubeflow"]
    # the pointer the compiled component read: <store>/code/pipelines/<16 hex of the IR hash>,
    # naming the content-addressed package folder
    ir = up.load(isolation_pipes.where_tasks_run).model_copy(update={"store": f"s3://{s3_store}/store"})
    pointer = f"store/code/pipelines/{ir.ir_hash().split(':')[-1][:16]}"
    assert pointer in keys
    body = boto3.client("s3").get_object(Bucket=s3_store, Key=pointer)["Body"].read().decode()
    assert body.startswith(f"s3://{s3_store}/store/code/") and any(
        k.startswith(body.split("/", 3)[3] + "/") and k.endswith(".whl") for k in keys)


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


@pytest.mark.timeout(2400)  # the 23 required cases, real runs; the default is 900 s
def test_the_required_cases_pass_isolated_on_kubeflow_with_the_s3_store(s3_store, tmp_path):
    """The isolated lane of ``conform --isolated --store s3://...`` on the required cases."""
    from lanes import required_case_failures

    assert required_case_failures("kubeflow", s3_store, tmp_path) == {}
