"""The deployment definition: a ``prefect.yaml`` next to the flow module (``prefect deploy --all``).

Schedules (cron or interval, with the IR's timezone) and the work pool come from the IR and the
compile options. Prefect sets resources and images per flow run, through the work pool's job
variables, never per task; so the flow run gets the pipeline's image (or the one image every task
shares) and, for work pools whose job template has such variables, the largest cpu / memory / gpu
request of any task. Results go to an explicit ``PREFECT_RESULTS_LOCAL_STORAGE_PATH`` (never
Prefect's default under the user's home).
"""

from __future__ import annotations

from typing import Any

import yaml

from unipipe.compiler import codegen
from unipipe.ir.models import Pipeline
from unipipe_prefect.triggers import trigger_specs

DEFAULT_WORK_POOL = "unipipe"
DEFAULT_RESULTS_PATH = "/var/tmp/unipipe/prefect-results"
#: work pool types whose default job template takes an ``image`` job variable
IMAGE_POOLS = {"docker", "kubernetes", "ecs", "cloud-run", "cloud-run-v2", "vertex-ai",
               "azure-container-instance"}


def _cpu(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


_MEM = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
        "Ti": 2**40}


def _mem(value: str) -> float:
    num = value.rstrip("KMGTi")
    return float(num) * _MEM[value[len(num):]]


def images(ir: Pipeline) -> set[str]:
    return {img for t in ir.tasks if (img := ir.effective(t).image)}


def run_resources(ir: Pipeline) -> dict[str, Any]:
    """The largest request of any task: what one flow run needs so every task fits."""
    cpu = mem = gpu = None
    for t in ir.tasks:
        res = ir.effective(t).resources
        if res is None:
            continue
        if res.cpu and (cpu is None or _cpu(res.cpu) > _cpu(cpu)):
            cpu = res.cpu
        if res.memory and (mem is None or _mem(res.memory) > _mem(mem)):
            mem = res.memory
        if res.gpu and (gpu is None or res.gpu > gpu):
            gpu = res.gpu
    return {k: v for k, v in (("cpu", cpu), ("memory", mem), ("gpu", gpu)) if v is not None}


def schedules(ir: Pipeline) -> list[dict[str, Any]]:
    s = ir.schedule
    if s is None:
        return []
    if s.cron is not None:
        return [{"cron": s.cron, "timezone": s.timezone, "active": True}]
    return [{"interval": s.interval, "timezone": s.timezone, "active": True}]


def deployment_config(ir: Pipeline, *, entrypoint: str, work_pool: str = DEFAULT_WORK_POOL,
                      work_pool_type: str = "process",
                      results_path: str = DEFAULT_RESULTS_PATH) -> dict[str, Any]:
    # with a shared store the flow names its result storage block (storage.py); without one,
    # results go to a folder of the worker's machine
    job_variables: dict[str, Any] = {} if ir.store else {"env": {
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": results_path,
    }}
    imgs = sorted(images(ir))
    if imgs and work_pool_type in IMAGE_POOLS:
        job_variables["image"] = imgs[0]
    resources = run_resources(ir)
    if resources and work_pool_type != "process":
        job_variables.update(resources)
    deployment: dict[str, Any] = {
        "name": ir.name,
        "description": ir.description or None,
        "entrypoint": entrypoint,
        "tags": list(ir.tags),
        "work_pool": {"name": work_pool, "job_variables": job_variables},
        "schedules": schedules(ir),
        "concurrency_limit": ir.max_active_runs,  # prefect/deployments/base.py ~247
        # up.On(...): automations on the assets' events, created by `prefect deploy`
        "triggers": trigger_specs(ir) or None,
    }
    return {
        "name": f"unipipe-{ir.name}",
        "prefect-version": "3.7.7",
        "build": None,
        "push": None,
        "deployments": [{k: v for k, v in deployment.items() if v is not None}],
    }


def render_yaml(ir: Pipeline, config: dict[str, Any], *, target_version: str) -> str:
    header = codegen.header_lines(target="prefect", target_version=target_version,
                                  ir_hash=ir.ir_hash(), pipeline=ir.name)
    notes = ["# Deploy with: prefect deploy --all (from this folder, with PREFECT_API_URL set)."]
    resources = run_resources(ir)
    if resources:
        notes.append("# Per-task resources are not a Prefect concept; the largest request is "
                     f"{yaml.safe_dump(resources, default_flow_style=True).strip()}"
                     " (job variables of non-process work pools).")
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=False,
                          width=100)
    return "\n".join(header + notes) + "\n" + body
