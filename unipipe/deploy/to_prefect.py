"""Prefect server / Prefect Cloud: the work pool and the deployment, through the Prefect API.

The API is the one at ``PREFECT_API_URL`` (Prefect Cloud differs only by that URL and
``PREFECT_API_KEY``, both read by Prefect's client from its standard settings). The flow code
(the compiled flow and the user's task modules) is published into ``code_dir``, a folder the
workers read: the deployment's pull step sets the working directory there and the process job
puts it on ``PYTHONPATH``. With a shared store and a pool that is not ``process`` (a container
or a job per flow run) and no ``code_dir``, the code travels through the store instead: a code
tree (the code package unpacked, the compiled flow at its root) that the deployment's pull step
copies into the flow run's folder, as isolated runs do.

Packages a task declares (``@up.task(packages=[...])``): a process worker has no per-run install
(its job variables are command, env, labels, name, stream_output, working_dir:
prefect/workers/process.py), so the code gets a ``unipipe-requirements.txt`` and the deployment's
pull steps end with ``prefect.deployments.steps.pip_install_requirements`` on it, which runs
``<the flow-run process's python> -m pip install -r`` before the flow loads
(prefect/deployments/steps/utility.py ``pip_install_requirements``): the packages land in the
worker's environment, where the shim checks them before each task (PackagesMissing otherwise).
"""

from __future__ import annotations

import ast
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from unipipe.deploy.bundle import LocalFile, module_files
from unipipe.deploy.common import compile_files
from unipipe.deploy.options import DeployFailed, InvalidDeploy, Options
from unipipe.deploy.plan import Plan, Step
from unipipe.ir.models import Pipeline

OPTIONS = ("code_dir", "work_pool", "work_pool_type", "work_queue", "name", "tags", "paused",
           "results_path")
#: ``param.NAME=value`` (deployment parameter, read as JSON when it parses), ``env.NAME=value``
PREFIXES = ("param.", "env.")
#: the file in the flow's code that lists the tasks' packages, for the pip pull step
REQUIREMENTS = "unipipe-requirements.txt"
#: the id of the code tree's pull step, whose ``directory`` output the pip step reads
CODE_STEP_ID = "unipipe-code"


def requirements_file(ir: Pipeline) -> LocalFile | None:
    """``unipipe-requirements.txt``: every package a task declares, sorted (None: none)."""
    packages = sorted({p for t in ir.tasks for p in t.packages})
    if not packages:
        return None
    text = (f"# The packages the tasks of {ir.name!r} declare (@up.task(packages=...)),\n"
            "# installed by the deployment's pull step before each flow run.\n"
            + "".join(f"{p}\n" for p in packages))
    return LocalFile(REQUIREMENTS, text.encode())


def pip_step(directory: str) -> dict[str, Any]:
    """The pull step that installs ``unipipe-requirements.txt`` from ``directory``."""
    return {"prefect.deployments.steps.pip_install_requirements": {
        "directory": directory, "requirements_file": REQUIREMENTS}}


def _generated_deployment(files: list[LocalFile]) -> dict[str, Any]:
    """The deployment the Prefect backend wrote into its prefect.yaml (empty when none)."""
    for f in files:
        if f.relpath.endswith("prefect.yaml"):
            import yaml

            spec = yaml.safe_load(f.data) or {}
            for dep in spec.get("deployments") or []:
                return dict(dep)
    return {}


def _flow_entry(files: list[LocalFile]) -> tuple[str, str]:
    """(relative file, function) of the compiled flow: from the generated prefect.yaml, else the
    function decorated with ``flow`` in the last Python file written."""
    entry = _generated_deployment(files).get("entrypoint")
    if entry:
        file, _, fn = str(entry).rpartition(":")
        return file, fn
    for f in reversed([f for f in files if f.relpath.endswith(".py")]):
        for node in ast.parse(f.data).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for dec in node.decorator_list:
                    target = dec.func if isinstance(dec, ast.Call) else dec
                    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                    if name == "flow":
                        return f.relpath, node.name
    raise DeployFailed("the Prefect backend's output has no @flow function to deploy")


def _write_step(plan: Plan, root: Path, f: LocalFile, detail: str) -> None:
    path = root / f.relpath
    current = path.read_bytes() if path.exists() else None
    change = "create" if current is None else ("unchanged" if current == f.data else "update")

    def apply() -> None:
        from unipipe.compiler.codegen import write_atomic

        write_atomic(path, f.data.decode("utf-8"))

    plan.add(Step("write", str(path), change, detail, apply))


def _schedules(ir: Pipeline, paused: bool) -> list[Any]:
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    from unipipe.compiler.registry import get_backend

    if ir.schedule is None:
        return []
    if ir.schedule.cron is not None:
        sched: Any = CronSchedule(cron=ir.schedule.cron, timezone=ir.schedule.timezone)
    else:
        sched = IntervalSchedule(interval=timedelta(seconds=ir.schedule.interval or 0),
                                 timezone=ir.schedule.timezone)
    # Prefect's cron has no start/end: a schedule whose end has passed is inactive
    active = not paused and get_backend("prefect").schedule_active(ir)
    return [DeploymentScheduleCreate(schedule=sched, active=active)]


def _schedule_key(schedule: Any, active: bool) -> str:
    data = schedule.model_dump(mode="json", exclude_none=True)
    data.pop("anchor_date", None)
    return json.dumps({"schedule": data, "active": active}, sort_keys=True)


def plan_prefect(ir: Pipeline, opts: Options, *, inspect: bool) -> Plan:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    from unipipe.params import resolve_params

    pool = opts.get("work_pool", "unipipe")
    pool_type = opts.get("work_pool_type", "process")
    # a container or job per flow run (any pool but "process") with a shared store: the code
    # travels through the store (a code tree the pull step copies), not through a shared folder
    from_store = ir.store is not None and pool_type != "process" and not opts.get("code_dir")
    code_dir = None if from_store else Path(
        opts.require("code_dir", "the folder your workers load the flow code from")).resolve()
    queue = opts.get("work_queue")
    paused = opts.flag("paused")
    raw = {}
    for k, v in opts.items_with_prefix("param.").items():
        try:
            raw[k] = json.loads(v)
        except ValueError:
            raw[k] = v
    resolve_params(ir, raw)  # unknown or mistyped parameters are invalid input
    api = PREFECT_API_URL.value()
    if not api:
        raise InvalidDeploy("PREFECT_API_URL is not set: point it at your Prefect server or Cloud workspace")

    extra: dict[str, Any] = {"work_pool": pool, "work_pool_type": pool_type}
    if opts.get("results_path"):
        extra["results_path"] = opts.get("results_path")
    files, diagnostics = compile_files(ir, "prefect", opts=opts, **extra)
    rel_flow, fn = _flow_entry(files)
    requirements = requirements_file(ir)
    if requirements is not None:
        files = [*files, requirements]
    generated = _generated_deployment(files)
    modules = module_files(ir)
    if code_dir is None:
        code_url, code_step = _code_tree_step(ir, files, inspect)
    plan = Plan("prefect", ir.name, f"{api} (work pool {pool!r}, code in "
                f"{code_dir if code_dir is not None else code_url})")
    plan.notes += diagnostics
    if code_dir is None:
        plan.add(code_step)
    else:
        for f in modules:
            _write_step(plan, code_dir, f, "task module")
        for f in files:
            detail = ("compiled flow" if f.relpath == rel_flow else
                      "the tasks' packages" if f.relpath == REQUIREMENTS else "compiled")
            _write_step(plan, code_dir, f, detail)

    flow_name = _flow_name(files, rel_flow, fn, ir)
    dep_name = opts.get("name", ir.name)
    job_variables = dict((generated.get("work_pool") or {}).get("job_variables") or {})
    env = {**(job_variables.get("env") or {}),
           **({"PYTHONPATH": str(code_dir)} if code_dir is not None else {}),
           **opts.items_with_prefix("env.")}
    job_variables["env"] = env
    if code_dir is None:
        from unipipe.compiler.registry import get_backend

        steps = get_backend("prefect").pull_steps(code_url)
        if requirements is not None:  # the pip step reads where the code tree was copied
            [(name, args)] = steps[-1].items()
            steps[-1] = {name: {"id": CODE_STEP_ID, **args}}
            steps.append(pip_step(f"{{{{ {CODE_STEP_ID}.directory }}}}"))
        where: dict[str, Any] = {"path": None, "pull_steps": steps}
    else:
        where = {"path": str(code_dir), "pull_steps": [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(code_dir)}},
            *([pip_step(str(code_dir))] if requirements is not None else [])]}
    desired: dict[str, Any] = {
        "entrypoint": f"{rel_flow}:{fn}",
        **where,
        "work_pool_name": pool,
        "job_variables": job_variables,
        "parameters": raw,
        "parameter_openapi_schema": _parameter_schema(ir),
        "enforce_parameter_schema": True,
        "tags": sorted(set(ir.tags) | set(opts.csv("tags"))),
        "description": ir.description or None,
        "version": ir.ir_hash()[:12],
    }
    if queue:
        desired["work_queue_name"] = queue
    if ir.max_active_runs is not None:
        # the deployment's concurrency limit: the server holds a further run of it in
        # AwaitingConcurrencySlot until a slot frees (prefect/client/orchestration/
        # _deployments/client.py create_deployment ``concurrency_limit``)
        desired["concurrency_limit"] = ir.max_active_runs
    schedules = _schedules(ir, paused)

    pool_change, dep_change, diff = ("unknown", "unknown", [])
    if inspect:
        with get_client(sync_client=True) as client:
            try:
                existing_pool = client.read_work_pool(pool)
                if existing_pool.type != pool_type:
                    raise InvalidDeploy(f"work pool {pool!r} exists with type {existing_pool.type!r}, "
                                        f"not {pool_type!r}")
                pool_change = "unchanged"
            except ObjectNotFound:
                pool_change = "create"
            try:
                current = client.read_deployment_by_name(f"{flow_name}/{dep_name}")
                diff = _differences(current, desired, schedules)
                dep_change = "update" if diff else "unchanged"
            except ObjectNotFound:
                dep_change = "create"

    def create_pool() -> str:
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.workers.base import BaseWorker

        worker = BaseWorker.get_worker_class_from_type(pool_type)
        template = worker.get_default_base_job_template() if worker else {}
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name=pool, type=pool_type, base_job_template=template))
        return f"type {pool_type}"

    def upsert() -> str:
        with get_client(sync_client=True) as client:
            flow_id = client.create_flow_from_name(flow_name)
            dep_id = client.create_deployment(flow_id=flow_id, name=dep_name, schedules=schedules,
                                              **desired)
            done = f"id {dep_id}"
            from unipipe.compiler.registry import get_backend

            backend = get_backend("prefect")
            if ir.trigger is not None:  # up.On(...): automations owned by the deployment
                done += f", {len(backend.apply_triggers(client, dep_id, ir))} trigger(s)"
            if ir.schedule is not None and ir.schedule.catchup and not paused:
                # Prefect schedules from now: the runs missed since start, created here
                count = backend.create_catchup_runs(client, dep_id, ir, raw)
                done += f", {count} catchup run(s)"
        return done

    plan.add(Step("create", f"work pool {pool!r}", pool_change, f"type {pool_type}", create_pool))
    if ir.store is not None:
        _store_block_step(plan, ir.store, inspect)
    sched_text = ", ".join(_schedule_key(s.schedule, s.active) for s in schedules) or "no schedule"
    if ir.trigger is not None:
        sched_text += (f", triggered on {ir.trigger.mode} of "
                       f"{', '.join(ir.trigger.assets)}")
    detail = (f"flow {flow_name!r}, entrypoint {desired['entrypoint']}, {sched_text}, "
              f"parameters {json.dumps(raw, sort_keys=True)}, tags {desired['tags']}")
    if diff:
        detail += f"; changed: {', '.join(diff)}"
    plan.add(Step("create" if dep_change == "create" else "update",
                  f"deployment {flow_name}/{dep_name}", dep_change, detail, upsert))
    plan.facts["run it"] = f"prefect deployment run '{flow_name}/{dep_name}'; prefect worker start --pool {pool}"
    return plan


def _code_tree_step(ir: Pipeline, files: list[LocalFile], inspect: bool) -> tuple[str, Step]:
    """The code tree on the store (the code package's wheels unpacked, the compiled files at its
    root; content-addressed) and the step that uploads it: the deployment's pull step copies it
    into each flow run's folder (``unipipe_prefect.deployed.pull_steps``)."""
    import tempfile

    from unipipe.api import search_path
    from unipipe.compiler.registry import get_backend
    from unipipe.deploy.package import PackageError

    backend = get_backend("prefect")
    try:
        with tempfile.TemporaryDirectory(prefix="unipipe-prefect-code-") as tmp:
            url, tree = backend.code_tree(ir, search_path(ir), Path(tmp),
                                          {f.relpath: f.data for f in files})
    except PackageError as exc:
        raise InvalidDeploy(str(exc)) from None
    change = "unknown"
    if inspect:
        import fsspec

        fs, root = fsspec.core.url_to_fs(url)
        change = "unchanged" if fs.exists(f"{root}.complete") else "create"
    return url, Step("upload", f"code tree {url}", change,
                     f"{len(tree)} files: unipipe, unipipe-prefect, the pipeline's modules and "
                     "the compiled flow", lambda: backend.upload_code_tree(url, tree))


def _store_block_step(plan: Plan, store: str, inspect: bool) -> None:
    """The result-storage block the compiled flow names (the Prefect backend's store_block), before the
    deployment: a flow run whose block is missing fails when it persists its first result."""
    from unipipe.compiler.registry import get_backend

    backend = get_backend("prefect")  # the backend names the block; the core imports no backend
    slug, basepath = backend.store_block(store)
    change = "unknown"
    if inspect:
        from prefect.blocks.core import Block

        try:
            current = Block.load(slug, _sync=True)
            change = "unchanged" if getattr(current, "basepath", None) == basepath else "update"
        except ValueError:  # Block.load: "Unable to find block document named ..."
            change = "create"
    plan.add(Step("create" if change == "create" else "update",
                  f"result storage block {slug!r}", change, f"remote-file-system at {basepath}",
                  lambda: backend.save_store_block(store)))


def _flow_name(files: list[LocalFile], rel_flow: str, fn: str, ir: Pipeline) -> str:
    """The flow's name as Prefect will register it: ``@flow(name=...)`` or the function name."""
    for f in files:
        if f.relpath != rel_flow:
            continue
        for node in ast.parse(f.data).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == fn:
                for dec in node.decorator_list:
                    if isinstance(dec, ast.Call):
                        for kw in dec.keywords:
                            if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                                return str(kw.value.value)
                return fn.replace("_", "-")
    return ir.name


_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
               "dict": "object", "list": "array"}


def _parameter_schema(ir: Pipeline) -> dict[str, Any]:
    """The OpenAPI schema Prefect validates run parameters with, from the IR's params."""
    props: dict[str, Any] = {}
    required = []
    for i, p in enumerate(ir.params):
        prop: dict[str, Any] = {"title": p.name, "position": i}
        if p.type in _JSON_TYPES:
            prop["type"] = _JSON_TYPES[p.type]
        if p.description:
            prop["description"] = p.description
        if p.required:
            required.append(p.name)
        else:
            prop["default"] = p.default
        props[p.name] = prop
    schema: dict[str, Any] = {"title": "Parameters", "type": "object", "properties": props,
                              "definitions": {}}
    if required:
        schema["required"] = required
    return schema


def _differences(current: Any, desired: dict[str, Any], schedules: list[Any]) -> list[str]:
    diff = [k for k, v in desired.items() if _norm(k, _current(current, k)) != _norm(k, v)]
    have = sorted(_schedule_key(s.schedule, s.active) for s in current.schedules)
    want = sorted(_schedule_key(s.schedule, s.active) for s in schedules)
    if have != want:
        diff.append("schedules")
    return diff


def _current(deployment: Any, key: str) -> Any:
    if key == "concurrency_limit":  # read back as the deployment's global concurrency limit
        # (DeploymentResponse.concurrency_limit is always None: client/schemas/responses.py ~350)
        return getattr(deployment.global_concurrency_limit, "limit", None)
    return getattr(deployment, key, None)


def _norm(key: str, value: Any) -> Any:
    if key == "tags":
        return sorted(value or [])
    if key == "description":
        return value or None
    return json.loads(json.dumps(value, sort_keys=True, default=str)) if value is not None else None


