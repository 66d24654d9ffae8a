"""Kubeflow Pipelines (a pipeline version through ``kfp.Client``) and Vertex AI (a PipelineJob or
a schedule through google-cloud-aiplatform).

Neither has a local server to test against; the tests check the exact requests these SDKs send
to a recording HTTP server. Idempotence: a KFP version is named after the sha256 of the compiled
YAML, and a Vertex job or schedule carries it as a label, so an unchanged pipeline is found and
left alone.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from unipipe.deploy.bundle import LocalFile, sha256
from unipipe.deploy.common import compile_files
from unipipe.deploy.options import DeployFailed, InvalidDeploy, Options
from unipipe.deploy.plan import Plan, Step
from unipipe.ir.models import Pipeline

KFP_OPTIONS = ("host", "namespace", "pipeline_name", "description", "experiment", "schedule",
               "schedule_days")
VERTEX_OPTIONS = ("project", "region", "pipeline_root", "service_account", "network", "api_endpoint",
                  "display_name", "enable_caching")
VERTEX_PREFIXES = ("param.",)
LABEL = "unipipe-sha256"


def _package(ir: Pipeline, opts: Options) -> tuple[LocalFile, list[str]]:
    files, diagnostics = compile_files(ir, "kubeflow", opts=opts)
    yamls = [f for f in files if f.relpath.endswith((".yaml", ".yml", ".json"))]
    if not yamls:
        raise DeployFailed("the Kubeflow backend wrote no pipeline package (.yaml)")
    return yamls[-1], diagnostics


def _code_step(plan: Plan, ir: Pipeline, inspect: bool) -> None:
    """With a shared store: the code package (unipipe, unipipe-kubeflow, the pipeline's modules)
    published to ``<store>/code/<digest>/``, and the pointer the compiled components read at
    start (``unipipe.sandbox.code_pointer``), before the pipeline that needs them. Without one
    (``--store local``) the components' image must hold them."""
    if ir.store is None:
        return
    import tempfile

    from unipipe import sandbox
    from unipipe.api import search_path
    from unipipe.deploy.package import PackageError, build_code_package

    # the wheels are read now: the plan may apply later, and no build folder is left behind
    with tempfile.TemporaryDirectory(prefix="unipipe-kfp-code-") as tmp:
        try:
            package = build_code_package(ir, search_path(ir), Path(tmp), ["kubeflow"])
        except PackageError as exc:
            raise InvalidDeploy(str(exc)) from None
        wheels = {w.name: w.read_bytes() for w in package.wheels}
    url = sandbox.code_url(ir.store, package.digest)
    pointer = sandbox.code_pointer(ir.store, ir.ir_hash())
    change = "unknown"
    if inspect:
        import fsspec

        fs, path = fsspec.core.url_to_fs(pointer)
        change = ("unchanged" if fs.exists(path) and fs.cat_file(path).decode() == url
                  else "create")
    plan.add(Step("upload", f"code package {url}", change,
                  f"{len(wheels)} wheels ({', '.join(wheels)}), pointed at by {pointer}",
                  lambda: sandbox.publish_wheels(wheels, package.digest, ir.store, ir.ir_hash())))


def _quiet() -> Any:
    """kfp.Client prints links and warnings on stdout; the deploy report says what happened."""
    import contextlib
    import io
    import warnings

    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore", FutureWarning)
    return stack


def _eq_filter(key: str, value: str) -> str:
    """A v2beta1 filter, written as kfp.Client writes its own (operation 1 = EQUALS)."""
    return json.dumps({"predicates": [{"operation": 1, "key": key, "stringValue": value}]})


# ------------------------------------------------------------------ KFP


def plan_kfp(ir: Pipeline, opts: Options, *, inspect: bool) -> Plan:
    import os

    host = opts.get("host") or os.environ.get("KF_PIPELINES_ENDPOINT")
    if not host:
        raise InvalidDeploy("--to kubeflow needs --set host=URL (or KF_PIPELINES_ENDPOINT)")
    # the schedule is checked first: a timezone KFP cannot keep is refused before the engine
    # is asked anything
    triggers = (_kfp_triggers(ir, opts) if ir.schedule is not None
                and opts.flag("schedule", True) else [])
    package, diagnostics = _package(ir, opts)
    digest = sha256(package.data)
    name = opts.get("pipeline_name", ir.name)
    version_name = f"{name}-{digest[:12]}"
    description = opts.get("description") or ir.description or None
    plan = Plan("kubeflow", ir.name, f"{host} (pipeline {name!r})")
    plan.notes += diagnostics
    state: dict[str, Any] = {}

    def client() -> Any:
        if "client" not in state:
            import kfp

            with _quiet():
                state["client"] = kfp.Client(host=host, namespace=opts.get("namespace", "kubeflow"))
        return state["client"]

    pipeline_change, version_change = "unknown", "unknown"
    if inspect:
        c = client()
        state["pipeline_id"] = c.get_pipeline_id(name)
        if state["pipeline_id"] is None:
            pipeline_change, version_change = "create", "create"
        else:
            pipeline_change = "unchanged"
            latest = c.list_pipeline_versions(state["pipeline_id"], page_size=1, sort_by="created_at desc")
            versions = latest.pipeline_versions or []
            if versions and versions[0].display_name == version_name:
                version_change = "unchanged"
                state["version_id"] = versions[0].pipeline_version_id
            else:
                version_change = "update"
                same = c.list_pipeline_versions(state["pipeline_id"], page_size=1,
                                                filter=_eq_filter("display_name", version_name))
                if same.pipeline_versions:  # this content was deployed before, then replaced
                    version_name = f"{version_name}-{int(time.time())}"

    def create_pipeline() -> str:
        import kfp_server_api

        made = client()._pipelines_api.pipeline_service_create_pipeline(
            pipeline=kfp_server_api.V2beta1Pipeline(display_name=name, description=description))
        state["pipeline_id"] = made.pipeline_id
        return f"id {made.pipeline_id}"

    def upload_version() -> str:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(package.relpath).name
            path.write_bytes(package.data)
            with _quiet():
                made = client().upload_pipeline_version(str(path), pipeline_version_name=version_name,
                                                        pipeline_id=state["pipeline_id"],
                                                        description=f"{LABEL}:{digest}")
        plan.facts["pipeline_version_id"] = made.pipeline_version_id
        state["version_id"] = made.pipeline_version_id
        return f"id {made.pipeline_version_id}"

    _code_step(plan, ir, inspect)
    plan.add(Step("create", f"KFP pipeline {name!r}", pipeline_change,
                  "POST /apis/v2beta1/pipelines", create_pipeline))
    plan.add(Step("upload", f"KFP pipeline version {version_name!r}", version_change,
                  f"POST /apis/v2beta1/pipelines/upload_version, {package.relpath}, sha256 {digest[:12]}",
                  upload_version))
    if len(triggers) > 1:
        last = triggers[-1].get("end_time")
        plan.notes.append(
            f"schedule {ir.schedule.cron!r} in {ir.schedule.timezone} as {len(triggers)} UTC "  # type: ignore[union-attr]
            f"recurring runs, one per daylight-saving stretch, up to {last}: "
            + ("the schedule's end" if ir.schedule.end else  # type: ignore[union-attr]
               "deploy again before then (--set schedule_days=N covers more days)"))
    if triggers:
        _plan_recurring_runs(plan, ir, opts, client, state, name, version_change, triggers,
                             inspect=inspect)
    return plan


def _where(ir: Pipeline, field: str) -> str:
    """``file:line: field:`` of the pipeline's schedule, for an error that names its input
    (no ``[field]``: the deploy report prints with rich markup, which would take it for a
    style and drop it)."""
    loc = ir.location
    return (f"{loc.file}:{loc.line}: " if loc is not None else "") + f"{field}:"


def _rfc3339(ir: Pipeline, field: str, earlier: float = 0.0) -> str | None:
    """The schedule's start/end as RFC 3339 in UTC (what V2beta1CronSchedule.start_time and
    end_time take, kfp/client/client.py ~820-824), ``earlier`` seconds before it; a date is
    midnight in the schedule's zone."""
    from datetime import timedelta

    from unipipe.schedules import ScheduleError, parse_when

    sched = ir.schedule
    assert sched is not None
    text = getattr(sched, field)
    if text is None:
        return None
    try:
        when = parse_when(text, sched.timezone)
    except ScheduleError as exc:
        raise InvalidDeploy(f"{_where(ir, f'schedule.{field}')} {exc}") from None
    return _utc_text(when - timedelta(seconds=earlier))


def _utc_text(when: Any) -> str:
    """An aware datetime as V2beta1CronSchedule's start_time/end_time take it: RFC 3339 in UTC."""
    from datetime import UTC

    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kfp_triggers(ir: Pipeline, opts: Options) -> list[dict[str, Any]]:
    """KFP's triggers: a 6-field cron (seconds first) or an interval in whole seconds, with the
    schedule's window (start_time/end_time) and catchup (no_catchup = not catchup).

    KFP's cron has no timezone: V2beta1CronSchedule has only start_time, end_time and cron
    (kfp_server_api/models/v2beta1_cron_schedule.py), and the scheduled-workflow controller
    reads every cron in one zone for the whole cluster (UTC here). A cron in another zone is
    written as one recurring run per daylight-saving stretch, each with the UTC cron of that
    stretch and a window that holds exactly its fire times (unipipe.schedules.utc_segments,
    checked time by time against fire_times), from the schedule's start (or now) up to its end
    (or ``schedule_days`` days, 400 by default). One that no UTC cron can give is refused."""
    sched = ir.schedule
    assert sched is not None
    if sched.cron is not None and len(sched.cron.split()) != 5:
        raise InvalidDeploy(f"{_where(ir, 'schedule.cron')} cron {sched.cron!r}: KFP takes a "
                            f"5-field cron here (seconds are added)")
    if sched.cron is not None and sched.timezone != "UTC":
        return _zone_triggers(ir, opts)
    trigger: dict[str, Any]
    if sched.cron is not None:
        trigger = {"cron_expression": "0 " + sched.cron}
    else:  # an interval counts seconds from start: the zone only places start
        trigger = {"interval_second": int(sched.interval or 0)}
    # The scheduled-workflow controller counts from start_time as if a run had fired then
    # (backend/src/crd/controller/scheduledworkflow/util/cron_schedule.go and
    # periodic_schedule.go, GetNextScheduledEpoch): a cron fires strictly after it
    # (robfig cron Next), an interval first at start_time + interval. The reference fires at
    # start itself (unipipe.schedules.fire_times), so start_time is set one second, or one
    # interval, earlier. end_time is inclusive on both ("EndTime < next" stops).
    value = _rfc3339(ir, "start", 1.0 if sched.cron is not None else float(sched.interval or 0))
    if value is not None:
        trigger["start_time"] = value
    value = _rfc3339(ir, "end")
    if value is not None:
        trigger["end_time"] = value
    trigger["no_catchup"] = not sched.catchup
    return [trigger]


def _zone_triggers(ir: Pipeline, opts: Options) -> list[dict[str, Any]]:
    """A cron in a zone with daylight saving time as UTC recurring runs (_kfp_triggers)."""
    from datetime import UTC, datetime, timedelta

    from unipipe.schedules import ScheduleError, parse_when, utc_segments

    sched = ir.schedule
    assert sched is not None and sched.cron is not None
    try:
        days = int(opts.get("schedule_days", "400"))
        if not 1 <= days <= 3660:
            raise ValueError
    except ValueError:
        raise InvalidDeploy(f"--set schedule_days={opts.get('schedule_days')!r}: a whole number "
                            f"of days from 1 to 3660") from None
    try:
        start = (parse_when(sched.start, sched.timezone) if sched.start is not None
                 else datetime.now(UTC).replace(second=0, microsecond=0))
        end = (parse_when(sched.end, sched.timezone) if sched.end is not None
               else start + timedelta(days=days))
        segments = utc_segments(sched, start, end)
    except ScheduleError as exc:
        raise InvalidDeploy(f"{_where(ir, 'schedule.timezone')} KFP recurring runs have no "
                            f"timezone (V2beta1CronSchedule: start_time, end_time, cron only), so "
                            f"the cron is written in UTC per daylight-saving stretch, and here it "
                            f"cannot be: {exc}; use timezone='UTC', or --set schedule=false and "
                            f"create the runs with `unipipe backfill --backend kubeflow`") from None

    # each window holds its stretch's fire times only: the controller fires strictly after
    # start_time (robfig cron Next) and up to end_time inclusive (as for one trigger above)
    return [{"cron_expression": "0 " + seg.cron,
             "start_time": _utc_text(seg.first - timedelta(seconds=1)),
             "end_time": _utc_text(seg.last), "no_catchup": not sched.catchup} for seg in segments]


def _same_window(run: Any, trigger: dict[str, Any]) -> bool:
    """A listed recurring run has the trigger's window and catchup."""
    from datetime import datetime

    t = run.trigger
    sched = (t.cron_schedule or t.periodic_schedule) if t is not None else None

    def instant(value: Any) -> Any:
        if value is None or isinstance(value, datetime):
            return value
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))

    for field in ("start_time", "end_time"):
        if instant(getattr(sched, field, None)) != instant(trigger.get(field)):
            return False
    return bool(run.no_catchup) == bool(trigger.get("no_catchup"))


def _substring_filter(key: str, value: str) -> str:
    """A v2beta1 filter for names holding ``value`` (operation 9, IS_SUBSTRING: the
    operations kfp.Client knows, kfp/client/client.py ~43-52)."""
    return json.dumps({"predicates": [{"operation": 9, "key": key, "stringValue": value}]})


def _job_names(name: str, triggers: list[dict[str, Any]]) -> list[str]:
    """One recurring run: ``NAME-schedule``; one per daylight-saving stretch: each named after
    its first fire time in UTC, ``NAME-schedule-20240331T0030``."""
    job = f"{name}-schedule"
    if len(triggers) == 1:
        return [job]
    from datetime import datetime, timedelta

    def first(t: dict[str, Any]) -> str:
        at = datetime.fromisoformat(t["start_time"].replace("Z", "+00:00")) + timedelta(seconds=1)
        return at.strftime("%Y%m%dT%H%M")

    return [f"{job}-{first(t)}" for t in triggers]


def _plan_recurring_runs(plan: Plan, ir: Pipeline, opts: Options, client: Any,
                         state: dict[str, Any], name: str, version_change: str,
                         triggers: list[dict[str, Any]], *, inspect: bool) -> None:
    """The pipeline's schedule as recurring runs of the current version (one, or one per
    daylight-saving stretch), each replaced when the version or its trigger changes (a KFP
    recurring run cannot be edited); earlier ones of the pipeline that no trigger keeps are
    deleted."""
    experiment = opts.get("experiment", "Default")
    base = f"{name}-schedule"
    jobs = _job_names(name, triggers)
    stale: list[Any] = []
    kept: set[str] = set()
    if inspect:
        c = client()
        found = c.list_experiments(filter=_eq_filter("display_name", experiment)).experiments or []
        runs: list[Any] = []
        if found:
            state["experiment_id"] = found[0].experiment_id
            runs = c.list_recurring_runs(experiment_id=found[0].experiment_id, page_size=1000,
                                         filter=_substring_filter("display_name", base)
                                         ).recurring_runs or []
        runs = [r for r in runs if r.display_name == base
                or str(r.display_name).startswith(base + "-")]
        for run in runs:
            cron = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else None
            interval = (run.trigger.periodic_schedule.interval_second
                        if run.trigger and run.trigger.periodic_schedule else None)
            ref = run.pipeline_version_reference
            job = run.display_name
            trigger = dict(zip(jobs, triggers)).get(job)
            same = (trigger is not None and job not in kept
                    and version_change == "unchanged" and ref is not None
                    and ref.pipeline_version_id == state.get("version_id")
                    and cron == trigger.get("cron_expression")
                    and (interval is None or int(interval) == trigger.get("interval_second"))
                    and _same_window(run, trigger)
                    and int(run.max_concurrency or 1) == (ir.max_active_runs or 1))
            if same:
                kept.add(job)
            else:
                stale.append(run)
    for run in stale:
        def delete(run: Any = run) -> str:
            client().delete_recurring_run(run.recurring_run_id)
            return "deleted"

        plan.add(Step("call", f"delete KFP recurring run {run.recurring_run_id}", "update",
                      f"DELETE /apis/v2beta1/recurringruns/{run.recurring_run_id} (replaced)", delete))

    for job, trigger in zip(jobs, triggers):
        def create(job: str = job, trigger: dict[str, Any] = trigger) -> str:
            c = client()
            with _quiet():
                if "experiment_id" not in state:
                    state["experiment_id"] = c.create_experiment(experiment).experiment_id
                made = c.create_recurring_run(experiment_id=state["experiment_id"], job_name=job,
                                              pipeline_id=state["pipeline_id"],
                                              version_id=state["version_id"],
                                              max_concurrency=ir.max_active_runs or 1,
                                              enabled=True, **trigger)
            plan.facts.setdefault("recurring_run_ids", []).append(made.recurring_run_id)
            plan.facts["recurring_run_id"] = made.recurring_run_id
            return f"id {made.recurring_run_id}"

        change = ("unchanged" if job in kept else "create") if inspect else "unknown"
        what = ", ".join(f"{k} {v!r}" for k, v in trigger.items())
        plan.add(Step("create", f"KFP recurring run {job!r}", change,
                      f"POST /apis/v2beta1/recurringruns, experiment {experiment!r}, {what}",
                      create))


# ------------------------------------------------------------------ Vertex AI


def _vertex_cron(ir: Pipeline) -> str | None:
    if ir.schedule is None:
        return None
    if ir.schedule.cron is None:
        raise InvalidDeploy("Vertex AI schedules are cron only; this pipeline's schedule is an interval")
    tz = ir.schedule.timezone
    return ir.schedule.cron if tz == "UTC" else f"TZ={tz} {ir.schedule.cron}"


def plan_vertex(ir: Pipeline, opts: Options, *, inspect: bool) -> Plan:
    project = opts.require("project")
    region = opts.require("region")
    root = opts.require("pipeline_root", "gs://BUCKET/PATH for the run's artifacts")
    endpoint = opts.get("api_endpoint")
    display = opts.get("display_name", ir.name)
    params: dict[str, Any] = {}
    for k, v in opts.items_with_prefix("param.").items():
        try:
            params[k] = json.loads(v)
        except ValueError:
            params[k] = v
    from unipipe.params import resolve_params

    resolve_params(ir, params)
    package, diagnostics = _package(ir, opts)
    digest = sha256(package.data)
    label = digest[:32]
    cron = _vertex_cron(ir)
    plan = Plan("vertex", ir.name, f"Vertex AI {project}/{region} ({endpoint or 'default endpoint'})")
    plan.notes += diagnostics
    plan.notes.append("credentials from Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS)")

    def init() -> Any:
        import logging

        from google.cloud import aiplatform

        # the SDK logs every step on stdout; the deploy report already says what was done
        logging.getLogger("google.cloud.aiplatform").setLevel(logging.WARNING)
        import google.auth

        # Application Default Credentials, resolved for this deploy (the SDK would keep the first
        # ones it found for the whole process)
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        kw: dict[str, Any] = {"project": project, "location": region, "credentials": credentials}
        if endpoint:
            kw["api_endpoint"] = endpoint
            kw["api_transport"] = "rest"
        aiplatform.init(**kw)
        return aiplatform

    def job(aiplatform: Any, tmp: str) -> Any:
        path = Path(tmp) / Path(package.relpath).name
        path.write_bytes(package.data)
        caching = opts.flag("enable_caching", True) if opts.get("enable_caching") else None
        return aiplatform.PipelineJob(display_name=display, template_path=str(path), pipeline_root=root,
                                      parameter_values=params or None, labels={LABEL: label},
                                      enable_caching=caching, project=project, location=region)

    _code_step(plan, ir, inspect)
    if cron is None:
        change = "unknown"
        if inspect:
            aiplatform = init()
            found = aiplatform.PipelineJob.list(filter=f'labels.{LABEL}="{label}"')
            change = "unchanged" if found else "call"

        def submit() -> str:
            aiplatform = init()
            with tempfile.TemporaryDirectory() as tmp:
                j = job(aiplatform, tmp)
                j.submit(service_account=opts.get("service_account"), network=opts.get("network"))
            plan.facts["pipeline_job"] = j.resource_name
            return j.resource_name

        plan.add(Step("call", f"submit PipelineJob {display!r}", change,
                      f"pipelineJobs.create, pipeline_root {root}, labels {LABEL}={label}, "
                      f"parameters {json.dumps(params, sort_keys=True)}", submit))
        return plan

    existing: list[Any] = []
    change = "unknown"
    if inspect:
        aiplatform = init()
        existing = aiplatform.PipelineJobSchedule.list(filter=f'display_name="{display}"')
        change = "create"
        for s in existing:
            labels = dict(s._gca_resource.create_pipeline_job_request.pipeline_job.labels)
            if labels.get(LABEL) == label and s._gca_resource.cron == cron:
                change = "unchanged"
    if change != "unchanged":
        for s in existing:
            def delete(s: Any = s) -> str:
                s.delete()
                return "deleted"

            plan.add(Step("call", f"delete schedule {s.resource_name}", "update",
                          "schedules.delete (replaced: a schedule's pipeline cannot be changed)", delete))

    def create_schedule() -> str:
        aiplatform = init()
        with tempfile.TemporaryDirectory() as tmp:
            j = job(aiplatform, tmp)
            s = j.create_schedule(cron=cron, display_name=display,
                                  service_account=opts.get("service_account"), network=opts.get("network"))
        plan.facts["schedule"] = s.resource_name
        return s.resource_name

    plan.add(Step("create", f"PipelineJobSchedule {display!r}", change,
                  f"schedules.create, cron {cron!r}, pipeline_root {root}, labels {LABEL}={label}",
                  create_schedule))
    return plan
