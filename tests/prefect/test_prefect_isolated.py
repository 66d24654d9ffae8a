"""Isolated Prefect runs (``conform --isolated``): a deployment whose pull step copies the code
tree from the store, run by a process worker started for the run in a sandbox of its own
(``unipipe_prefect.isolated.WORKERS``); a real moto S3 server is the only shared medium."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import unipipe as up

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parents[1] / "isolation"
sys.path.insert(0, str(HERE))


@pytest.fixture
def s3_store(prefect_env, s3_store):
    """The shared store bucket (tests/conftest.py), with this module's Prefect environment."""
    return s3_store


def test_an_isolated_flow_run_sees_only_the_code_tree_and_its_workers_sandbox(s3_store, tmp_path,
                                                                            monkeypatch):
    import boto3
    import isolation_pipes as pipes

    monkeypatch.setenv("PATH", pipes.with_a_home_tool_folder(os.environ["PATH"]))
    result = up.run(pipes.where_tasks_run, backend="prefect", isolated=True,
                    store=f"s3://{s3_store}/store", workdir=tmp_path)
    assert result.state == "success", result.tasks
    seen = result.output
    sandbox = Path(seen["sandbox"])
    assert sandbox.parent == tmp_path / "sandboxes" / result.run_id
    assert sandbox.name in ("worker-1", "worker-2")
    assert not sandbox.exists()  # gone with the "machine"
    # the flow run's working folder: a temporary folder of the worker's sandbox, into which the
    # pull step copied the code tree (<bucket>/store/code/<digest>/prefect-<hash>)
    cwd = Path(seen["cwd"])
    assert cwd.is_relative_to(sandbox / "tmp"), cwd
    assert cwd.name.startswith("prefect-") and cwd.parent.parent.name == "code"
    # unipipe and the task module come from the pulled tree, not from the checkout (which the
    # workspace installs editable) or the test's folder
    assert Path(seen["unipipe"]) == cwd / "unipipe" / "__init__.py"
    assert Path(seen["module"]) == cwd / "isolation_pipes.py"
    # the image's PATH: none of the user's tool folders reach the flow run
    assert pipes.account_home_entries(seen["path"]) == []
    assert (seen["home"], seen["tmp"]) == (str(sandbox / "home"), str(sandbox / "tmp"))
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_store)["Contents"]]
    wheels = sorted(k.rsplit("/", 1)[-1].split("-")[0] for k in keys if k.endswith(".whl"))
    assert wheels == ["unipipe", "unipipe_code_where_tasks_run", "unipipe_prefect"]
    # the interpreter ran without `site`: the workspace's editable .pth installs were not read
    assert seen["no_site"] == 1
    # the code tree on the store: the wheels unpacked and the compiled flow at its root
    from unipipe_prefect.codegen import module_filename

    tree = cwd.relative_to(cwd.parents[4]).as_posix()  # <bucket>/store/code/<digest>/<tree>
    assert tree.startswith(f"{s3_store}/store/code/")
    tree_keys = {k.removeprefix(tree.split("/", 1)[1] + "/") for k in keys
                 if k.startswith(tree.split("/", 1)[1] + "/")}
    ir = up.load(pipes.where_tasks_run)
    assert {module_filename(ir), "unipipe/__init__.py", "unipipe_prefect/runtime.py",
            "isolation_pipes.py"} <= tree_keys


def test_a_file_only_the_compiling_machine_has_is_missing_on_the_worker(s3_store, tmp_path):
    import isolation_pipes as pipes

    store = f"s3://{s3_store}/store"
    here = up.run(pipes.reads_a_local_file, backend="prefect", store=store)
    assert here.state == "success" and here.output == "present only where the pipeline was compiled"
    there = up.run(pipes.reads_a_local_file, backend="prefect", store=store, isolated=True)
    assert there.state == "failed"
    task = there.tasks["read_neighbour"]
    assert task.error_type == "FileNotFoundError", task
    assert "only_on_the_compiling_machine.txt" in task.error


def test_an_isolated_prefect_run_needs_a_store(prefect_env):
    import isolation_pipes as pipes

    with pytest.raises(ValueError, match="an isolated run needs a shared store"):
        up.run(pipes.where_tasks_run, backend="prefect", isolated=True)


@pytest.mark.timeout(2400)  # the 23 required cases, real runs; the default is 900 s
def test_the_required_cases_pass_isolated_on_prefect_with_the_s3_store(s3_store, tmp_path):
    """The isolated lane of ``conform --isolated --store s3://...`` on the required cases."""
    from lanes import required_case_failures

    assert required_case_failures("prefect", s3_store, tmp_path) == {}


def test_a_worker_started_with_sigint_ignored_still_stops_on_sigterm(prefect_env, tmp_path):
    """A harness started as a background job (or under ``nohup``) passes SIGINT ignored to the
    workers it starts; ``prefect worker start`` answers SIGTERM with a SIGINT to itself, under
    the handler it found. ``worker_command`` puts SIGINT back, so the worker stops; the plain
    ``python -m prefect worker start`` beside it, started the same way, does not."""
    import signal
    import subprocess
    import time

    from unipipe_prefect.server import worker_command

    # exec with SIGINT ignored, as a shell without job control starts a background command
    ignoring = [sys.executable, "-c", "import os, signal, sys; "
                "signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"]
    env = {**os.environ, "PREFECT_API_URL": prefect_env.api_url}
    commands = {
        "ours": worker_command(sys.executable, "sigint-pool", "ours"),
        "plain": [sys.executable, "-m", "prefect", "worker", "start", "--pool", "sigint-pool",
                  "--type", "process", "--name", "plain"],
    }
    procs, logs = {}, {}
    for name, command in commands.items():
        logs[name] = tmp_path / f"{name}.log"
        with open(logs[name], "wb") as out:
            procs[name] = subprocess.Popen(ignoring + command, env=env, cwd=tmp_path, stdout=out,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not all("started!" in logs[n].read_text() for n in procs):
            assert time.monotonic() < deadline, {n: logs[n].read_text() for n in procs}
            assert all(p.poll() is None for p in procs.values()), {
                n: logs[n].read_text() for n in procs}
            time.sleep(0.2)
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        assert procs["ours"].wait(timeout=15) == 0, logs["ours"].read_text()
        # the plain worker forwarded SIGINT to itself, into SIG_IGN: still polling
        assert procs["plain"].poll() is None
        assert "Sending SIGINT to the process worker" in logs["plain"].read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
