"""The features a pipeline can use; what the compiler checks and the harness tags cases with."""

from __future__ import annotations

from enum import Enum

from unipipe.ir.models import (
    DictValue,
    ElementInput,
    ListValue,
    OutputInput,
    ParamInput,
    Pipeline,
    Policies,
)


class Feature(str, Enum):
    PARAMS = "params"
    DATA_PASSING = "data_passing"
    KEY_PATH = "key_path"
    AFTER = "after"
    CONDITION = "condition"
    OTHERWISE = "condition.otherwise"
    RUN_IF_ALL_DONE = "run_if.all_done"
    RUN_IF_ONE_FAILED = "run_if.one_failed"
    MAP = "map"
    MAP_MAX_PARALLEL = "map.max_parallel"
    MAX_ACTIVE_RUNS = "max_active_runs"
    PIPELINE_RETRY = "pipeline.retry"
    PIPELINE_TIMEOUT = "pipeline.timeout"
    RETRY = "retry"
    RETRY_DELAY = "retry.delay"
    RETRY_BACKOFF = "retry.backoff"
    RETRY_MAX_DELAY = "retry.max_delay"
    RETRY_JITTER = "retry.jitter"
    RETRY_EXCEPTION_FILTER = "retry.exception_filter"
    CACHE = "cache"
    CACHE_EXPIRE = "cache.expire"
    CACHE_KEY_FN = "cache.key_fn"
    TIMEOUT = "timeout"
    RESOURCES = "resources"
    RESOURCES_GPU = "resources.gpu"
    IMAGE = "image"
    ALERT_FAILURE = "alert.failure"
    ALERT_RETRY = "alert.retry"
    ALERT_SUCCESS = "alert.success"
    ALERT_WEBHOOK = "alert.webhook"
    ALERT_EMAIL = "alert.email"
    ALERT_CALLBACK = "alert.callback"
    PIPELINE_ALERT = "pipeline_alert"
    SCHEDULE_CRON = "schedule.cron"
    SCHEDULE_INTERVAL = "schedule.interval"
    SHARED_STORE = "store"
    COMMAND = "command"
    SUBPIPELINE = "subpipeline"
    SUBPIPELINE_RETRY = "subpipeline.retry"
    SUBPIPELINE_ALERT = "subpipeline.alert"
    SUBPIPELINE_MAP = "subpipeline.map"
    ARTIFACTS = "artifacts"
    METRICS = "metrics"
    REPORT = "report"
    PACKAGES = "packages"
    SCHEDULE_WINDOW = "schedule.window"
    SCHEDULE_CATCHUP = "schedule.catchup"
    ASSET_PRODUCES = "asset.produces"
    TRIGGER_ASSET = "trigger.asset"
    TRIGGER_ANY = "trigger.any"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


def _policy_features(p: Policies, out: set[Feature]) -> None:
    if p.retry is not None and p.retry.max_retries > 0:
        out.add(Feature.RETRY)
        r = p.retry
        if r.delay > 0:
            out.add(Feature.RETRY_DELAY)
        if r.backoff != 1.0:
            out.add(Feature.RETRY_BACKOFF)
        if r.max_delay is not None:
            out.add(Feature.RETRY_MAX_DELAY)
        if r.jitter > 0:
            out.add(Feature.RETRY_JITTER)
        if r.retry_on or r.fail_on:
            out.add(Feature.RETRY_EXCEPTION_FILTER)
    if p.cache is not None:
        out.add(Feature.CACHE)
        if p.cache.expire is not None:
            out.add(Feature.CACHE_EXPIRE)
        if p.cache.key_fn is not None:
            out.add(Feature.CACHE_KEY_FN)
    if p.timeout is not None:
        out.add(Feature.TIMEOUT)
    if p.resources is not None:
        out.add(Feature.RESOURCES)
        if p.resources.gpu:
            out.add(Feature.RESOURCES_GPU)
    if p.image is not None:
        out.add(Feature.IMAGE)
    for alert in p.alerts:
        _alert_features(alert, out)


def _alert_features(alert, out: set[Feature]) -> None:  # type: ignore[no-untyped-def]
    out.update({Feature("alert." + ev) for ev in alert.on})
    if alert.webhook:
        out.add(Feature.ALERT_WEBHOOK)
    if alert.email:
        out.add(Feature.ALERT_EMAIL)
    if alert.callback:
        out.add(Feature.ALERT_CALLBACK)


def _value_has_path(value) -> bool:  # type: ignore[no-untyped-def]
    if isinstance(value, (OutputInput, ParamInput, ElementInput)):
        return bool(value.path)
    if isinstance(value, ListValue):
        return any(_value_has_path(v) for v in value.items)
    if isinstance(value, DictValue):
        return any(_value_has_path(v) for v in value.items.values())
    return False


def features_used(ir: Pipeline) -> list[Feature]:
    """Features the pipeline uses, in the enum's order (stable for reports and tags)."""
    out: set[Feature] = set()
    if ir.params:
        out.add(Feature.PARAMS)
    for task in ir.tasks:
        _policy_features(ir.effective(task), out)
        for inp in task.inputs.values():
            if isinstance(inp, OutputInput):
                out.add(Feature.DATA_PASSING)
            if _value_has_path(inp):
                out.add(Feature.KEY_PATH)
        if task.after:
            out.add(Feature.AFTER)
        if task.when:
            out.add(Feature.CONDITION)
            if any(c.otherwise for c in task.when):
                out.add(Feature.OTHERWISE)
        if task.run_if == "all_done":
            out.add(Feature.RUN_IF_ALL_DONE)
        elif task.run_if == "one_failed":
            out.add(Feature.RUN_IF_ONE_FAILED)
        if task.map_over is not None:
            out.add(Feature.MAP)
            if task.max_parallel is not None:
                out.add(Feature.MAP_MAX_PARALLEL)
        if task.command is not None:
            out.add(Feature.COMMAND)
        for slot in task.artifacts.values():
            out.add(Feature.METRICS if slot.type == "Metrics" else Feature.ARTIFACTS)
        if "metrics" in task.logs:
            out.add(Feature.METRICS)
        if "report" in task.logs:
            out.add(Feature.REPORT)
        if task.packages:
            out.add(Feature.PACKAGES)
        if task.produces:
            out.add(Feature.ASSET_PRODUCES)
    if ir.output is not None and _value_has_path(ir.output):
        out.add(Feature.KEY_PATH)
    if ir.alerts:
        out.add(Feature.PIPELINE_ALERT)
        for alert in ir.alerts:
            _alert_features(alert, out)
    if ir.schedule is not None:
        out.add(Feature.SCHEDULE_CRON if ir.schedule.cron else Feature.SCHEDULE_INTERVAL)
        if ir.schedule.start is not None or ir.schedule.end is not None:
            out.add(Feature.SCHEDULE_WINDOW)
        if ir.schedule.catchup:
            out.add(Feature.SCHEDULE_CATCHUP)
    if ir.trigger is not None:
        out.add(Feature.TRIGGER_ASSET)
        if ir.trigger.mode == "any":
            out.add(Feature.TRIGGER_ANY)
    if ir.store is not None:
        out.add(Feature.SHARED_STORE)
    if ir.max_active_runs is not None:
        out.add(Feature.MAX_ACTIVE_RUNS)
    if ir.retries:
        out.add(Feature.PIPELINE_RETRY)
    if ir.timeout is not None:
        out.add(Feature.PIPELINE_TIMEOUT)
    for group in ir.groups:
        out.add(Feature.SUBPIPELINE)
        if group.retries:
            out.add(Feature.SUBPIPELINE_RETRY)
        if group.items is not None:
            out.add(Feature.SUBPIPELINE_MAP)
            if isinstance(group.items, OutputInput):
                out.add(Feature.DATA_PASSING)
            if _value_has_path(group.items):
                out.add(Feature.KEY_PATH)
        if group.alerts:
            out.add(Feature.SUBPIPELINE_ALERT)
            for alert in group.alerts:
                _alert_features(alert, out)
    return [f for f in Feature if f in out]
