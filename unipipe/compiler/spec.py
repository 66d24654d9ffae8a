"""The plain-dict task spec embedded in generated code and read by ``unipipe.runtime.invoke``."""

from __future__ import annotations

from typing import Any

from unipipe.ir.models import (
    ElementInput,
    Group,
    LiteralInput,
    OutputInput,
    ParamInput,
    Pipeline,
    Task,
)


def task_spec(ir: Pipeline, task: Task) -> dict[str, Any]:
    pol = ir.effective(task)
    literals = {k: v.value for k, v in task.inputs.items() if isinstance(v, LiteralInput)}
    paths = {k: list(v.path) for k, v in task.inputs.items()
             if isinstance(v, (OutputInput, ParamInput, ElementInput)) and v.path}
    spec: dict[str, Any] = {
        "pipeline": ir.name,
        "id": task.id,
        "fn": task.fn,
        "source_hash": task.source_hash,
    }
    if task.command is not None:  # a command task: the shim runs this argv (runtime.command)
        spec["command"] = list(task.command)
        if task.env:
            spec["env"] = dict(task.env)
    if task.artifacts:  # how the shim finds and checks them (unipipe.runtime.artifacts)
        spec["artifacts"] = artifacts_spec(task)
    if task.logs:
        spec["logs"] = list(task.logs)
    if task.packages:
        spec["packages"] = list(task.packages)
    if literals:
        spec["literals"] = literals
    if paths:
        spec["paths"] = paths
    if task.map_over:
        spec["map_over"] = task.map_over
    if pol.retry is not None and pol.retry.max_retries > 0:
        # default values are left out (the runtime reads every key with the IR's default), so
        # the spec copied into each generated task stays short: a KFP executor carries it whole
        spec["retry"] = pol.retry.model_dump(mode="json", exclude_defaults=True)
    if pol.cache is not None:
        spec["cache"] = pol.cache.model_dump(mode="json")
    if pol.timeout is not None:
        spec["timeout"] = pol.timeout
    if pol.alerts:
        spec["alerts"] = [a.model_dump(mode="json", exclude_none=True) for a in pol.alerts]
    if ir.store is not None:  # compiled in, so a worker needs no configuration to find it
        spec["store"] = ir.store
    return spec


def artifacts_spec(task: Task) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    outputs: dict[str, str] = {}
    for name, slot in task.artifacts.items():
        if slot.direction == "output":
            outputs[name] = slot.type
        elif slot.uri is not None:
            inputs[name] = {"type": slot.type, "uri": slot.uri}
        else:
            inputs[name] = {"type": slot.type, "task": slot.task, "name": slot.output}
    return {k: v for k, v in (("in", inputs), ("out", outputs)) if v}


def pipeline_alerts_spec(ir: Pipeline) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json", exclude_none=True) for a in ir.alerts]


def group_alerts_spec(group: Group) -> list[dict[str, Any]]:
    """A sub-pipeline's alerts, delivered once when the group ends (runner rule 11)."""
    return [a.model_dump(mode="json", exclude_none=True) for a in group.alerts]
