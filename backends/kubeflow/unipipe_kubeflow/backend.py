"""The ``kubeflow`` backend: IR -> KFP v2 module + PipelineSpec YAML, run with KFP's semantics.

``compile`` writes ``<name>_kfp.py`` (libcst-generated, readable) and ``<name>.yaml``, the
PipelineSpec produced from that module by kfp's own compiler. ``run`` executes that YAML with
:mod:`unipipe_kubeflow.executor` (the OSS backend's retry, cache, condition, loop and exit-handler
semantics) or, with ``host=URL``, submits it to a KFP API (:mod:`unipipe_kubeflow.remote`).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, ClassVar

from unipipe.compiler import codegen as cg
from unipipe.compiler.backend import CompileOptions, CompileResult, RunOptions
from unipipe.compiler.diagnostics import Diagnostic, Support, UnsupportedFeature
from unipipe.ir.features import Feature
from unipipe.ir.models import OutputInput, ParamInput, Pipeline
from unipipe.result import RunResult

N, E, U = Support.native, Support.emulated, Support.unsupported

#: assets and asset triggers: what was looked for, and not found, in KFP 2.16
_NO_EVENTS = ("KFP v2 has no event or data-aware trigger: a run starts by hand "
              "(Client.create_run_from_pipeline_*) or from a recurring run, whose "
              "V2beta1Trigger holds only cron_schedule / periodic_schedule "
              "(kfp_server_api/models/v2beta1_trigger.py, v2beta1_cron_schedule.py: start_time, "
              "end_time, cron); the RecurringRun/Run services have no event, asset or sensor "
              "resource (kfp_server_api/api/), and an artifact (dsl.Dataset, ML Metadata) "
              "triggers nothing. Refused before writing rather than dropped")

SUPPORT: dict[Feature, Support] = {
    Feature.PARAMS: N("pipeline parameters; dict/list/any travel as JSON text (KFP's protobuf "
                      "Struct would turn ints into floats)"),
    Feature.DATA_PASSING: N("KFP output parameters: bool/int/float natively, other values as JSON "
                            "text; values over 64 KiB as unipipe artifact-store pointers"),
    Feature.KEY_PATH: E("the whole output is passed; the shim selects the key path"),
    Feature.AFTER: N("PipelineTask.after. Not knowable without a cluster: whether Argo's DAG "
                     "failFast stops independent branches after a failure (the local executor "
                     "runs them, as the IR says)"),
    Feature.CONDITION: N("dsl.If on the gate task's output (not on a key path of it)"),
    Feature.OTHERWISE: N("dsl.Else right after the dsl.If of its up.when() block (a dsl.If "
                         "on the negated test when the if branch holds no task at that level)"),
    Feature.RUN_IF_ALL_DONE: N(".ignore_upstream_failure() -> triggerPolicy "
                               "ALL_UPSTREAM_TASKS_COMPLETED. Not for a task after a task under "
                               "dsl.If: KFP would nest it in the same dsl.If (refused)"),
    Feature.RUN_IF_ONE_FAILED: U("KFP has no trigger on failure: ignore_upstream_failure also "
                                 "runs after success, and a PipelineTaskFinalStatus input is "
                                 "allowed only with exactly one upstream task and cannot skip "
                                 "the task (kfp/compiler/pipeline_spec_builder.py ~1599-1619)"),
    Feature.MAP: N("dsl.ParallelFor over a task output or a literal list, dsl.Collected for "
                   "consumers (not over a pipeline parameter, no nested fan-out); KFP does not "
                   "tell an iteration its index: known locally, not on a cluster"),
    Feature.RETRY: N("set_retry -> retryPolicy (Argo retryStrategy; maxDuration, 3600 s, bounds "
                     "the whole retry window). KFP does not pass the attempt number: the local "
                     "executor does; on a cluster the shim counts attempts in the artifact store"),
    Feature.RETRY_DELAY: N("backoffDuration in whole seconds; fractional delays: the shim waits"),
    Feature.RETRY_BACKOFF: N("backoffFactor (integral factors; others: the shim waits)"),
    Feature.RETRY_MAX_DELAY: E("KFP has no per-delay cap: when it binds the shim waits instead"),
    Feature.RETRY_JITTER: E("KFP has no jitter: the shim sleeps the random part"),
    Feature.RETRY_EXCEPTION_FILTER: E("KFP has no 'fail now': a non-retryable error leaves a marker "
                                      "and the remaining attempts fail at once without running"),
    Feature.CACHE: N("set_caching_options (the OSS fingerprint covers inputs, task source hash and "
                     "cache version via the command)"),
    Feature.CACHE_EXPIRE: E("KFP v2 caches never expire: such tasks are cached by the shim"),
    Feature.CACHE_KEY_FN: E("KFP's cache_key is a constant: the shim computes the key"),
    Feature.TIMEOUT: E("the shim stops the task function at the IR timeout; kfp-kubernetes "
                       "set_timeout sets the pod deadline to ceil(timeout) + 30 s as the engine's "
                       "backstop (a pod deadline counts from container start, which includes "
                       "starting Python and importing kfp, so alone it would cut tasks short)"),
    Feature.RESOURCES: N("set_cpu_limit / set_memory_limit (not enforced by the local executor)"),
    Feature.RESOURCES_GPU: N("set_accelerator_type / set_accelerator_limit"),
    Feature.IMAGE: N("@dsl.component(base_image=...) per task (not used by the local executor)"),
    Feature.ALERT_FAILURE: E("task alerts: the shim delivers (KFP has no per-task hooks); "
                             "pipeline alerts: the ExitHandler (see pipeline_alert)"),
    Feature.ALERT_RETRY: E("KFP has no per-retry hook: the shim delivers"),
    Feature.ALERT_SUCCESS: E("the shim delivers (such tasks are cached by the shim, so hits alert)"),
    Feature.ALERT_WEBHOOK: E("delivered by the shim inside the component (or exit task)"),
    Feature.ALERT_EMAIL: E("delivered by the shim inside the component (or exit task)"),
    Feature.ALERT_CALLBACK: E("called by the shim inside the component"),
    Feature.PIPELINE_ALERT: N("dsl.ExitHandler with a PipelineTaskFinalStatus exit task"),
    Feature.SCHEDULE_CRON: N("a recurring run at deploy (Client.create_recurring_run, "
                             "cron_expression '0 ' + the 5 fields: robfig cron, seconds first, "
                             "kfp/client/client.py ~795-829). V2beta1CronSchedule has no "
                             "timezone (the scheduled-workflow controller has one zone for "
                             "the whole cluster), so a cron in another zone is deployed as one "
                             "UTC recurring run per daylight-saving stretch, each windowed to "
                             "its fire times (unipipe.schedules.utc_segments, up to the "
                             "schedule's end or --set schedule_days, 400 by default); a cron no "
                             "UTC cron can give (e.g. a day-of-month cron that moves to another "
                             "day in UTC) is refused at deploy, exit 2. Tasks get the run's logical date: a "
                             "hidden parameter unipipe_logical_date (set by unipipe backfill), "
                             "else dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER (a recurring "
                             "run's fire time; a run created by hand: its creation time), as "
                             "component inputs; so their caching is the shim's"),
    Feature.SCHEDULE_INTERVAL: N("a recurring run with interval_second at deploy, the logical "
                                 "date as for a cron"),
    Feature.SHARED_STORE: E("compiled into each component's spec: values over 64 KiB, cache "
                            "entries, the attempt counter and the non-retryable marker live there"),
    Feature.COMMAND: E("a Python component whose body has the shim run the argv as a subprocess, "
                       "no shell (the local executor runs it in the launch's folder; no Docker "
                       "here, so an image is recorded, not started). Not dsl.container_component: "
                       "it returns only its ContainerSpec and an output is an OutputPath file the "
                       "program must write, never its stdout (kfp/dsl/component_factory.py "
                       "~319-330), and without the shim no trace event, filter or alert"),
    Feature.MAP_MAX_PARALLEL: N("dsl.ParallelFor(parallelism=N) -> iteratorPolicy."
                                "parallelismLimit (the local executor runs iterations one at a "
                                "time, so it never exceeds it)"),
    Feature.MAX_ACTIVE_RUNS: N("the recurring run's max_concurrency at deploy (KFP queues "
                               "only scheduled runs; a run submitted by hand is not limited)"),
    Feature.PIPELINE_RETRY: U("KFP 2.16 has no retry of a pipeline run: @dsl.pipeline takes "
                              "name, description, pipeline_root, display_name and "
                              "pipeline_config (dsl/pipeline_context.py ~27), PipelineConfig "
                              "only a workspace (dsl/pipeline_config.py ~99); retries are per "
                              "task (PipelineTask.set_retry); refused before writing"),
    Feature.SUBPIPELINE: N("a @dsl.pipeline per sub-pipeline, called as a component (a graph "
                           "component, kfp/dsl/graph_component.py): its inputs are what its tasks "
                           "read from outside, its outputs a NamedTuple of what is read of it "
                           "outside; tasks keep their IR ids as display names. Refused: a task "
                           "outside it under a condition on a task inside it, a condition "
                           "from outside covering only part of it (KFP returns outputs only "
                           "from a pipeline's top level, pipeline_spec_builder.py ~2022)"),
    Feature.SUBPIPELINE_RETRY: U("kfp 2.16 compiles set_retry on a sub-pipeline's task into "
                                 "its retryPolicy (pipeline_spec_builder.py ~133), but the KFP "
                                 "backend's Argo compiler gives a DAG task no retryStrategy "
                                 "(backend/src/v2/compiler/argocompiler/dag.go, "
                                 "ComponentSpec_Dag: a DAG driver and a DAG task; retries only "
                                 "on container executors): the group would never be tried "
                                 "again as a whole; refused before writing"),
    Feature.SUBPIPELINE_ALERT: N("a component after the sub-pipeline's task taking its "
                                 "PipelineTaskFinalStatus, with ignore_upstream_failure() "
                                 "(pipeline_spec_builder.py ~1584-1619), which the KFP backend "
                                 "runs as the task's exit hook (argocompiler/dag.go): once, "
                                 "when it ends; the shim delivers. Not a dsl.ExitHandler: no "
                                 "task outside one may read or wait for a task inside it "
                                 "(compiler_utils.py ~755). No failed_tasks in the payload"),
    Feature.SUBPIPELINE_MAP: N("the sub-pipeline's call inside dsl.ParallelFor(items, "
                               "parallelism=N) (iteratorPolicy.parallelismLimit, "
                               "pipeline_spec_builder.py ~999): one iteration per item runs "
                               "the whole sub-pipeline; a task outside reads a member as "
                               "dsl.Collected(call.outputs[...]), a LIST in item order "
                               "(compiler_utils.py ~366-411). Items from a task's output or a "
                               "literal list; from a pipeline parameter through a small "
                               "component that turns its JSON text into a list (kfp refuses to "
                               "loop over a STRING, dsl/for_loop.py ~195-203). Refused: items "
                               "from a key path or a fan-out, a condition on or a fan-out over "
                               "a member from outside. KFP does not tell an iteration its "
                               "index: copies are task[i] locally, not on a cluster"),
    Feature.SCHEDULE_WINDOW: N("start_time/end_time of the recurring run's trigger (RFC 3339, "
                               "UTC), set at deploy. The scheduled-workflow controller fires "
                               "strictly after start_time (a cron), or first at start_time + "
                               "interval, and up to end_time included "
                               "(backend/src/crd/controller/scheduledworkflow/util/"
                               "cron_schedule.go, periodic_schedule.go), so start_time is one "
                               "second (one interval) before start=, whose own fire time then "
                               "runs, as in the reference"),
    Feature.SCHEDULE_CATCHUP: N("no_catchup = not catchup on the recurring run: without a "
                                "previous run the controller counts from start_time, so "
                                "catchup=True creates every run missed since then; "
                                "catchup=False only the latest (client.py ~832-839, "
                                "cron_schedule.go getEffectiveLastJobEpoch). `unipipe backfill "
                                "--backend kubeflow` creates a window's runs by hand, each "
                                "with its date as the unipipe_logical_date parameter"),
    Feature.ASSET_PRODUCES: U(f"produces=[up.Asset]: {_NO_EVENTS}"),
    Feature.TRIGGER_ASSET: U(f"trigger=up.On(...): {_NO_EVENTS}"),
    Feature.TRIGGER_ANY: U(f"up.On(..., mode='any'): {_NO_EVENTS}"),
    Feature.ARTIFACTS: N("Input[...]/Output[...] component parameters (kfp.dsl Dataset, Model, "
                         "Metrics, Markdown, Artifact): KFP gives each a path under the pipeline "
                         "root and records URI and metadata in executor_output.json "
                         "(kfp/dsl/executor.py ~318-348); producer.outputs[name] wires them, a "
                         "fixed URI is a dsl.importer. A cached task that reads an artifact is "
                         "cached by the shim (by the bytes, as the reference): KFP's OSS key "
                         "holds the input artifacts' identities, new for every run of an "
                         "uncached producer. Refused: an artifact crossing a sub-pipeline's "
                         "boundary or read from a fan-out"),
    Feature.METRICS: N("Output[Metrics] (log_metric sets its metadata, "
                       "kfp/dsl/types/artifact_types.py ~223); up.log_metric goes to a hidden "
                       "unipipe_metrics: Output[Metrics]"),
    Feature.REPORT: N("a hidden unipipe_report: Output[Markdown] whose file holds up.report()'s "
                      "text"),
    Feature.PACKAGES: N("packages_to_install: KFP pip-installs them at every container start "
                        "(kfp/dsl/component_factory.py ~126-212); a failed install fails the "
                        "task before the function runs. The local executor lets pip use only "
                        "what the interpreter has (PIP_NO_INDEX)"),
    Feature.PIPELINE_TIMEOUT: U("KFP 2.16 has no pipeline-level timeout (the same decorator "
                                "and PipelineConfig; the IR spec has no run deadline); "
                                "refused before writing"),
}


def shape_problems(ir: Pipeline) -> list[Diagnostic]:
    """Pipeline shapes KFP cannot express natively (checked before anything is written)."""
    problems = []
    from unipipe_kubeflow import mapping
    from unipipe_kubeflow.codegen import effective_conditions

    scoped = effective_conditions(ir)
    from unipipe_kubeflow.codegen import LOGICAL_DATE_ARG, group_plan, takes_logical_date

    if takes_logical_date(ir):
        for p in ir.params:
            if p.name == LOGICAL_DATE_ARG:
                where = (f"{ir.location.file}:{ir.location.line}: "
                         if ir.location else "")
                problems.append(Diagnostic(
                    "error", Feature.PARAMS, "kubeflow",
                    f"{where}[params.{p.name}] the parameter name {LOGICAL_DATE_ARG!r} is the "
                    "hidden parameter that carries a scheduled run's logical date; rename it"))

    for who, why in group_plan(ir).problems:
        problems.append(Diagnostic("error", Feature.SUBPIPELINE, "kubeflow", f"{who}: {why}"))
    for t in ir.tasks:
        if t.run_if != "all_success" and scoped[t.id]:
            problems.append(Diagnostic("error", Feature.RUN_IF_ALL_DONE, "kubeflow",
                                       f"task {t.id}: run_if after a task inside up.when(): KFP "
                                       "nests it in the same dsl.If, so it would be skipped "
                                       "with the block where unipipe runs it"))
        for c in t.when:
            if c.path:
                problems.append(Diagnostic("error", Feature.CONDITION, "kubeflow",
                                           f"task {t.id}: dsl.If cannot test a key path of "
                                           f"{c.task}'s output; return a bool from a task instead"))
            if ir.task(c.task).map_over is not None:
                problems.append(Diagnostic("error", Feature.CONDITION, "kubeflow",
                                           f"task {t.id}: condition on the fan-out {c.task}"))
            home = mapping.mapped_group(ir, ir.task(c.task))
            if home is not None and home != mapping.mapped_group(ir, t):
                problems.append(Diagnostic("error", Feature.CONDITION, "kubeflow",
                                           f"task {t.id}: condition on {c.task}, which runs "
                                           "once per item of a mapped sub-pipeline"))
        if t.map_over is not None:
            src = t.inputs[t.map_over]
            if isinstance(src, ParamInput):
                problems.append(Diagnostic("error", Feature.MAP, "kubeflow",
                                           f"task {t.id}: map over pipeline parameter {src.name} "
                                           "(map over a task's output instead)"))
            elif isinstance(src, OutputInput) and (
                    src.path or ir.task(src.task).map_over
                    or mapping.mapped_group(ir, ir.task(src.task)) is not None):
                problems.append(Diagnostic("error", Feature.MAP, "kubeflow",
                                           f"task {t.id}: map over a key path or over another "
                                           "fan-out's output"))
    for t in ir.tasks:
        for name, slot in t.artifacts.items():
            if slot.direction != "input" or slot.task is None:
                continue
            producer = ir.task(slot.task)
            where = (f"{t.location.file}:{t.location.line}: " if t.location else "") + \
                f"[tasks.{t.id}.artifacts.{name}] task {t.id}"
            if producer.group != t.group:
                problems.append(Diagnostic("error", Feature.ARTIFACTS, "kubeflow",
                                           f"{where}: artifact {name} comes from "
                                           f"{producer.id} in another sub-pipeline; a KFP "
                                           "sub-pipeline here passes parameters only: keep "
                                           "producer and consumer in one sub-pipeline"))
            elif producer.map_over is not None:
                problems.append(Diagnostic("error", Feature.ARTIFACTS, "kubeflow",
                                           f"{where}: artifact {name} comes from the "
                                           f"fan-out {producer.id} (one file per element); "
                                           "read one artifact per task"))
    for g in ir.groups:
        src = g.items
        if isinstance(src, (OutputInput, ParamInput)) and src.path:
            problems.append(Diagnostic("error", Feature.SUBPIPELINE_MAP, "kubeflow",
                                       f"sub-pipeline {g.id}: map over a key path (map over "
                                       "a task's whole output instead)"))
        elif isinstance(src, OutputInput) and (
                ir.task(src.task).map_over
                or mapping.mapped_group(ir, ir.task(src.task)) is not None):
            problems.append(Diagnostic("error", Feature.SUBPIPELINE_MAP, "kubeflow",
                                       f"sub-pipeline {g.id}: map over another fan-out's "
                                       "output"))
    return problems


def default_pipeline_root() -> Path:
    explicit = os.environ.get("UNIPIPE_KFP_PIPELINE_ROOT")
    if explicit:
        return Path(explicit)
    from unipipe.runtime.store import cache_root

    root = cache_root()
    if "://" not in root:
        return Path(root).parent / "kfp-pipeline-root"
    from unipipe.runtime.store import user_cache_dir

    return Path(user_cache_dir()) / "kfp-pipeline-root"


def kfp_arguments(ir: Pipeline, values: dict[str, Any]) -> dict[str, Any]:
    """IR parameter values -> KFP pipeline arguments (JSON text for dict/list/any)."""
    from unipipe_kubeflow.mapping import param_annotation

    out = {}
    for p in ir.params:
        v = values[p.name]
        out[p.name] = json.dumps(v) if param_annotation(p.type) == "str" and p.type != "str" else v
    return out


class Backend:
    name: ClassVar[str] = "kubeflow"
    versions: ClassVar[tuple[str, ...]] = ("2.16",)
    #: about how long a conformance case takes in a harness lane of this backend, in seconds,
    #: for the order the lanes start in (unipipe.harness.execute.lane_order): 160 s for 69
    #: cases in a whole suite at 4 lanes on 2 cores (2026-12-07)
    harness_case_seconds: ClassVar[float] = 2.3
    #: what a harness lane's worker fork server imports once for this backend's runs
    #: (unipipe.harness.workerserver): the modules a run imports besides unipipe's own
    #: (kfp above all: ``import kfp`` is about 1.2 s of CPU, most of it kfp.client's
    #: Kubernetes client; kfp reads only ``_KFP_RUNTIME`` from the environment when imported,
    #: kfp/__init__.py ~40, which a harness worker never sets)
    harness_preload: ClassVar[tuple[str, ...]] = (
        "kfp", "kfp.dsl", "kfp.compiler", "kfp.local", "kfp.local.executor_input_utils",
        "kfp.local.executor_output_utils", "kfp.local.placeholder_utils",
        "kfp.local.subprocess_task_handler", "kfp.pipeline_spec.pipeline_spec_pb2",
        "google.protobuf.json_format", "yaml", "unipipe.runtime.artifacts",
        "unipipe_kubeflow.codegen", "unipipe_kubeflow.kfp_compile", "unipipe_kubeflow.executor",
        "unipipe_kubeflow.results", "unipipe_kubeflow.mapping")

    def support(self, version: str | None = None) -> dict[Feature, Support]:
        return dict(SUPPORT)

    # ------------------------------------------------------------ compile

    def compile(self, ir: Pipeline, out_dir: Path, options: CompileOptions) -> CompileResult:
        from unipipe_kubeflow import codegen, kfp_compile

        problems = shape_problems(ir)
        if problems:
            raise UnsupportedFeature(problems)
        out_dir = Path(out_dir)
        stem = "".join(c if c.isalnum() else "_" for c in ir.name)
        yaml_name = f"{ir.name}.yaml"
        text, plans, names = codegen.module_text(
            ir, target_version=options.target_version or self.versions[0],
            default_image=options.extra.get("base_image", codegen.DEFAULT_IMAGE), yaml_name=yaml_name)
        module_path = out_dir / f"{stem}_kfp.py"
        # The YAML is compiled from a private copy first, so nothing lands in out_dir unless
        # kfp's compiler accepts the module.
        with tempfile.TemporaryDirectory(prefix="unipipe-kfp-") as tmp:
            staged = Path(tmp) / module_path.name
            staged.write_text(text, encoding="utf-8")
            staged_yaml = kfp_compile.compile_yaml(staged, names.pipeline, Path(tmp) / yaml_name)
            yaml_text = staged_yaml.read_text(encoding="utf-8")
        paths = cg.write_all({module_path: text, out_dir / yaml_name: yaml_text})
        diags = [Diagnostic("info", feature, self.name, f"task {tid}: {note}")
                 for tid, plan in plans.items() for feature, note in plan.notes]
        diags += [Diagnostic("info", Feature.OTHERWISE, self.name,
                             f"task {tid}: waits on both branches of an up.when()/up.otherwise(), "
                             "so it is always skipped; left out of the KFP pipeline")
                  for tid in codegen.never_runs(ir)]
        if ir.schedule is not None and ir.schedule.timezone != "UTC":
            diags.append(Diagnostic(
                "info", Feature.SCHEDULE_CRON, self.name,
                f"schedule timezone {ir.schedule.timezone!r}: KFP recurring runs have none, so "
                "`unipipe deploy --to kubeflow` writes one UTC recurring run per "
                "daylight-saving stretch (up to the schedule's end, or --set schedule_days), "
                "or refuses a cron that no UTC cron can give"))
        return CompileResult(paths, diags)

    # ------------------------------------------------------------ run

    def run(self, ir: Pipeline, options: RunOptions) -> RunResult:
        from unipipe.compiler.driver import compile_ir
        from unipipe.params import resolve_params

        values = resolve_params(ir, options.params)
        run_id = options.run_id or f"kfp-{uuid.uuid4().hex[:12]}"
        pipeline_root = Path(options.extra.get("pipeline_root") or default_pipeline_root())
        workdir = Path(options.workdir) if options.workdir else pipeline_root / run_id
        result = compile_ir(ir, self.name, workdir / "build",
                            error_level=options.extra.get("error_level", "raise"))
        yaml_path = next(p for p in result.paths if p.suffix == ".yaml")
        arguments = kfp_arguments(ir, values)
        logical_date = options.extra.get("logical_date")
        if logical_date is not None:
            from datetime import datetime

            from unipipe_kubeflow.codegen import LOGICAL_DATE_ARG, takes_logical_date

            if datetime.fromisoformat(str(logical_date).replace("Z", "+00:00")).tzinfo is None:
                raise ValueError(f"logical_date {logical_date!r} has no UTC offset")
            if takes_logical_date(ir):
                # a run created by hand: KFP fills the schedule-time placeholder with its
                # creation time, so the date travels as the hidden parameter
                arguments[LOGICAL_DATE_ARG] = str(logical_date)
        if options.extra.get("host"):
            from unipipe_kubeflow import remote

            if ir.store is not None:  # the components fetch the code from there (a pod each)
                self._publish_code(ir, options, workdir / "code")
            return remote.submit(ir, yaml_path, arguments, run_id=run_id,
                                 host=options.extra["host"], params=values,
                                 wait=options.extra.get("wait", True))
        return self._run_local(ir, yaml_path, values, run_id, pipeline_root, options, arguments)

    def _run_local(self, ir: Pipeline, yaml_path: Path, values: dict[str, Any], run_id: str,
                   pipeline_root: Path, options: RunOptions,
                   arguments: dict[str, Any]) -> RunResult:
        from unipipe_kubeflow.executor import SpecExecutor

        env = dict(os.environ)
        env.update(options.env)
        env["PYTHONPATH"] = os.pathsep.join(
            [*options.search_path, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
        env.setdefault("UNIPIPE_TRACE_DIR", str(pipeline_root / run_id / "trace"))
        env.pop("UNIPIPE_KFP_ATTEMPT", None)
        code = None
        if options.extra.get("isolated"):
            code = self._publish_code(ir, options, pipeline_root / run_id / "code")
            # a pod has none of this machine's folders: not the checkout, not the compile output
            env.pop("PYTHONPATH", None)
        # schedule_time: a recurring run's fire time, to play one (None: a run created by hand)
        executor = SpecExecutor(yaml_path, pipeline_root=pipeline_root, run_id=run_id, env=env,
                                code_url=code, schedule_time=options.extra.get("schedule_time"))
        from unipipe_kubeflow.codegen import takes_logical_date

        if not takes_logical_date(ir):
            # no input carries it (a pipeline without a schedule): the reference's meaning, the
            # given date or the run's creation time, through the environment (this executor
            # only; on a cluster such tasks see None)
            executor.env["UNIPIPE_LOGICAL_DATE"] = str(options.extra.get("logical_date")
                                                       or executor.create_time)
        else:
            executor.env.pop("UNIPIPE_LOGICAL_DATE", None)
        record = executor.run(arguments)
        from unipipe_kubeflow.results import build_result

        return build_result(ir, record, values, trace_dir=env["UNIPIPE_TRACE_DIR"])

    def _publish_code(self, ir: Pipeline, options: RunOptions, folder: Path) -> str:
        """Build the pipeline's code package and publish it to the shared store (isolated runs
        and a remote KFP: each component then gets the code from there only)."""
        from unipipe import sandbox
        from unipipe.deploy.package import build_code_package

        if ir.store is None:
            raise ValueError("an isolated run needs a shared store (--store): in a sandbox the "
                             "store is the only medium a task shares with another")
        package = build_code_package(ir, options.search_path, folder, backends=[self.name])
        return sandbox.publish_code(package, ir.store, ir.ir_hash())


__all__ = ["Backend", "SUPPORT"]
