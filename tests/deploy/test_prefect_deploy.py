"""Deploying to a real ``prefect server start`` on 127.0.0.1, then running the deployment with a
real ``prefect worker`` (process work pool)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import unipipe as up
from deploy.helpers import deploy

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
FLOW = "nightly-report"


@pytest.fixture
def ir():
    return up.load("deploy.shipped:nightly_report")


def _options(tmp_path: Path, pool: str, *extra: str) -> list[str]:
    return [f"code_dir={tmp_path / 'code'}", f"work_pool={pool}",
            f"results_path={tmp_path / 'results'}", *extra]


def _read(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def test_prefect_deploy_creates_pool_and_deployment_with_schedule_params_and_tags(ir, prefect_api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    pool = f"pool-{uuid.uuid4().hex[:8]}"
    opts = _options(tmp_path, pool, "param.n=4", "tags=nightly")
    plan = deploy(ir, "prefect", opts, dry_run=True)
    assert plan.code == 0, plan.text
    assert f"+ create work pool '{pool}'  [type process]" in plan.lines("+")
    assert any(line.startswith("+ create deployment nightly-report/nightly-report  [flow 'nightly-report'")
               for line in plan.lines("+"))
    assert "dry run: nothing changed" in plan.text
    assert not (tmp_path / "code").exists()  # a dry run writes nothing ...
    with get_client(sync_client=True) as client, pytest.raises(ObjectNotFound):
        client.read_work_pool(pool)  # ... and creates nothing

    first = deploy(ir, "prefect", opts)
    assert first.code == 0, first.text
    dep = _read("nightly-report/nightly-report")
    assert dep.work_pool_name == pool
    assert dep.entrypoint == "nightly_report_flow.py:nightly_report"
    assert dep.path == str(tmp_path / "code")
    assert dep.parameters == {"n": 4}
    assert sorted(dep.tags) == ["nightly", "reports"]
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in dep.schedules] == [("30 1 * * *", "UTC", True)]
    assert dep.job_variables["env"]["PYTHONPATH"] == str(tmp_path / "code")
    assert (tmp_path / "code" / "deploy" / "shipped.py").read_bytes() == (HERE / "shipped.py").read_bytes()
    assert (tmp_path / "code" / "deploy" / "__init__.py").exists()
    assert (tmp_path / "code" / "nightly_report_flow.py").exists()


def test_prefect_redeploy_unchanged_changes_nothing_and_a_change_updates(ir, prefect_api, tmp_path):
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    name = f"dep-{uuid.uuid4().hex[:6]}"
    opts = _options(tmp_path, pool, f"name={name}")
    assert deploy(ir, "prefect", opts).code == 0
    before = _read(f"nightly-report/{name}")

    again = deploy(ir, "prefect", opts)
    assert again.code == 0, again.text
    assert "unchanged: 'nightly-report' is already deployed to prefect; nothing changed" in again.text
    assert again.lines("+") == [] and again.lines("~") == []
    after = _read(f"nightly-report/{name}")
    assert after.updated == before.updated

    changed = deploy(ir, "prefect", opts + ["param.label=cubes"])
    assert changed.code == 0, changed.text
    assert [line.split("  [")[0] for line in changed.lines("~")] == [f"~ update deployment nightly-report/{name}"]
    assert "changed: parameters" in changed.text
    assert _read(f"nightly-report/{name}").parameters == {"label": "cubes"}
    assert _read(f"nightly-report/{name}").id == before.id


def test_prefect_deployed_flow_runs_on_a_real_worker(ir, prefect_api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    pool = f"pool-{uuid.uuid4().hex[:8]}"
    name = f"run-{uuid.uuid4().hex[:6]}"
    out = deploy(ir, "prefect", _options(tmp_path, pool, f"name={name}", "param.n=4"))
    assert out.code == 0, out.text
    dep = _read(f"nightly-report/{name}")
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(dep.id)
    env = {**os.environ, "PREFECT_API_URL": prefect_api.api_url, "PREFECT_HOME": str(tmp_path / "worker-home")}
    # run from a folder that does not hold the code: the deployment must bring it
    subprocess.run([str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", pool,
                    "--run-once", "--type", "process"],
                   env=env, cwd=tmp_path, check=True, timeout=300, capture_output=True)
    with get_client(sync_client=True) as client:
        final = client.read_flow_run(run.id)
    assert final.state.type == StateType.COMPLETED, final.state
    assert final.parameters == {"n": 4}
    events = [json.loads(line) for line in
              (Path(os.environ["UNIPIPE_TRACE_DIR"]) / f"{run.id}.jsonl").read_text().splitlines()]
    done = {(e["task"], e.get("map_index")) for e in events if e.get("kind") == "attempt" and e["outcome"] == "success"}
    assert done == {("extract", None), ("summarise", None), ("publish", None)}


def test_a_container_pool_with_a_store_gets_its_code_from_the_store_by_the_pull_step(
        ir, prefect_api, aws_env, s3_bucket, tmp_path):
    """No code_dir: the code tree (code package unpacked, the compiled flow at its root) goes to
    the store and the deployment's pull step copies it into the flow run's folder."""
    import asyncio

    import fsspec
    from prefect.deployments.steps.core import run_steps

    from unipipe import sandbox

    store = f"s3://{s3_bucket}/runs"
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    name = f"containers-{uuid.uuid4().hex[:6]}"
    out = deploy(ir, "prefect", [f"work_pool={pool}", "work_pool_type=kubernetes", f"name={name}"],
                 store=store)
    assert out.code == 0, out.text
    dep = _read(f"nightly-report/{name}")
    assert dep.path is None and "PYTHONPATH" not in (dep.job_variables.get("env") or {})
    [step] = dep.pull_steps
    url = step["prefect.deployments.steps.pull_from_remote_storage"]["url"]
    assert url.startswith(f"{store}/code/") and url.rsplit("/", 1)[-1].startswith("prefect-")
    assert any(line.startswith("+ upload code tree " + url) for line in out.text.splitlines()), out.text
    fs, root = fsspec.core.url_to_fs(url)
    assert fs.exists(f"{root}.complete")
    again = deploy(ir, "prefect", [f"work_pool={pool}", "work_pool_type=kubernetes", f"name={name}"],
                   store=store)
    assert f"= code tree {url} (unchanged)" in again.text, again.text

    # the pull step, as a worker's flow run executes it, in a folder of a fresh sandbox
    box = sandbox.make(tmp_path / "box", {})
    os.chdir(box.work)
    try:
        output = asyncio.run(run_steps(dep.pull_steps))
    finally:
        os.chdir(tmp_path)
    pulled = box.work / output["directory"]
    flow_file, _, fn = dep.entrypoint.rpartition(":")
    assert (pulled / flow_file).is_file() and (pulled / "unipipe" / "__init__.py").is_file()
    # the sandbox's interpreter (no checkout on its path) loads the flow from the pulled tree
    probe = ("import sys; from prefect.flows import load_flow_from_entrypoint as load; "
             f"f = load({dep.entrypoint!r}); import unipipe, deploy.shipped as m; "
             "print(f.name, unipipe.__file__, m.__file__)")
    done = subprocess.run([str(box.python), "-c", probe], cwd=pulled, env=box.env(os.environ),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    flow, core, module = done.stdout.split()
    assert flow == FLOW
    assert Path(core) == pulled / "unipipe" / "__init__.py"
    assert Path(module) == pulled / "deploy" / "shipped.py"


def test_max_active_runs_is_the_deployments_concurrency_limit_and_a_redeploy_sees_it(ir, prefect_api,
                                                                                     tmp_path):
    """``@up.pipeline(max_active_runs=N)``: the server holds the deployment's limit (read back as
    its global concurrency limit); the same limit again is no change, another is an update."""
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    name = f"lim-{uuid.uuid4().hex[:6]}"
    opts = _options(tmp_path, pool, f"name={name}")
    one = ir.model_copy(update={"max_active_runs": 1})
    assert deploy(one, "prefect", opts).code == 0
    dep = _read(f"nightly-report/{name}")
    assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1
    again = deploy(one, "prefect", opts)
    assert again.code == 0 and again.lines("~") == [], again.text
    two = deploy(ir.model_copy(update={"max_active_runs": 2}), "prefect", opts)
    assert two.code == 0 and "changed: version, concurrency_limit]" in two.text, two.text
    assert _read(f"nightly-report/{name}").global_concurrency_limit.limit == 2


def test_declared_packages_become_a_pip_pull_step_that_a_real_worker_runs(prefect_api, tmp_path):
    """``@up.task(packages=[...])``: the code folder gets unipipe-requirements.txt and the
    deployment's pull steps install it (pip_install_requirements, into the flow-run process's
    Python) before the flow loads; a real process worker runs them and then the flow."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    from unipipe.deploy.to_prefect import REQUIREMENTS

    arts = up.load("ml_artifacts:training")
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    name = f"pkgs-{uuid.uuid4().hex[:6]}"
    code = tmp_path / "code"
    out = deploy(arts, "prefect", _options(tmp_path, pool, f"name={name}"))
    assert out.code == 0, out.text
    assert any(line.startswith(f"+ write {code / REQUIREMENTS}  [the tasks' packages]")
               for line in out.lines("+")), out.text
    lines = (code / REQUIREMENTS).read_text().splitlines()
    assert [x for x in lines if not x.startswith("#")] == ["packaging>=21"]
    dep = _read(f"ml-artifacts/{name}")
    assert dep.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(code)}},
        {"prefect.deployments.steps.pip_install_requirements": {
            "directory": str(code), "requirements_file": REQUIREMENTS}}]
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(dep.id)
    env = {**os.environ, "PREFECT_API_URL": prefect_api.api_url,
           "PREFECT_HOME": str(tmp_path / "worker-home")}
    worker = subprocess.run([str(Path(sys.executable).with_name("prefect")), "worker", "start",
                             "--pool", pool, "--run-once", "--type", "process"],
                            env=env, cwd=tmp_path, check=True, timeout=300, capture_output=True,
                            text=True)
    # pip ran in the flow run's process (its output streams through the worker); the package
    # is already in this environment, so it installs nothing and needs no index
    assert "Requirement already satisfied: packaging>=21" in worker.stdout + worker.stderr
    with get_client(sync_client=True) as client:
        final = client.read_flow_run(run.id)
    assert final.state.type == StateType.COMPLETED, final.state
    events = [json.loads(line) for line in
              (Path(os.environ["UNIPIPE_TRACE_DIR"]) / f"{run.id}.jsonl").read_text().splitlines()]
    assert sorted(e["task"] for e in events if e.get("kind") == "attempt"
                  and e["outcome"] == "success") == ["download", "evaluate", "train"]


def test_a_pipeline_without_packages_gets_no_pip_step(ir, prefect_api, tmp_path):
    from unipipe.deploy.to_prefect import REQUIREMENTS

    pool = f"pool-{uuid.uuid4().hex[:8]}"
    name = f"nopkgs-{uuid.uuid4().hex[:6]}"
    out = deploy(ir, "prefect", _options(tmp_path, pool, f"name={name}"))
    assert out.code == 0, out.text
    assert _read(f"nightly-report/{name}").pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(tmp_path / "code")}}]
    assert not (tmp_path / "code" / REQUIREMENTS).exists()


def test_packages_from_the_store_code_tree_are_installed_by_a_step_reading_its_directory(
        prefect_api, aws_env, s3_bucket, tmp_path):
    """No code_dir (a container pool with a store): the requirements file is in the code tree
    and the pip step reads the directory the code tree's pull step copied it to (its ``id``)."""
    import asyncio

    from prefect.deployments.steps.core import run_steps

    from unipipe.deploy.to_prefect import CODE_STEP_ID, REQUIREMENTS

    arts = up.load("ml_artifacts:training")
    store = f"s3://{s3_bucket}/runs"
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    name = f"pkgtree-{uuid.uuid4().hex[:6]}"
    out = deploy(arts, "prefect", [f"work_pool={pool}", "work_pool_type=kubernetes",
                                   f"name={name}"], store=store)
    assert out.code == 0, out.text
    dep = _read(f"ml-artifacts/{name}")
    pull, pip = dep.pull_steps
    args = pull["prefect.deployments.steps.pull_from_remote_storage"]
    assert args["id"] == CODE_STEP_ID and args["url"].startswith(f"{store}/code/")
    assert pip == {"prefect.deployments.steps.pip_install_requirements": {
        "directory": "{{ unipipe-code.directory }}", "requirements_file": REQUIREMENTS}}
    work = tmp_path / "work"
    work.mkdir()
    os.chdir(work)
    try:
        output = asyncio.run(run_steps(dep.pull_steps))
    finally:
        os.chdir(tmp_path)
    # the last step's output is pip's; the requirements file came with the code tree
    assert "Requirement already satisfied: packaging>=21" in output["stdout"]
    [req] = list(work.rglob(REQUIREMENTS))
    assert "packaging>=21" in req.read_text().splitlines()
