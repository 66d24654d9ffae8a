"""The DAG file generator: one TaskFlow DAG per pipeline, built as a libcst tree.

Every user string reaches the tree through :func:`unipipe.compiler.codegen.literal`, so it is a
Python literal and never code. No user string is ever handed to an Airflow template field:
literal inputs and parameters travel in the task spec inside the task body (not in op_kwargs),
items to fan out over come from a task's XCom (resolved values are not rendered), and
parameters are read from the context by the adapter. Only fixed fragments without user input
are parsed from text (imports, the two small helpers).

Shape of the output, top to bottom: header comments, imports (``airflow.sdk`` or
``airflow.decorators``, ``pendulum``, ``datetime``), the alert callback factory and the retry
policy when used, the ``@dag`` function with one ``@task`` per IR task (plus the short-circuit
gates and ``*_items`` helpers the IR implies), then the wiring in topological order.

Sub-pipelines (``Pipeline.groups``) are ``with TaskGroup(<group id>, prefix_group_id=False,
tooltip=<doc>):`` blocks around the calls of their tasks, nested as the groups are, so the UI
shows each one collapsed. ``prefix_group_id=False`` keeps every task id equal to the IR's (the
results reader and the harness match by id): ``TaskGroup.child_id`` returns the label as-is
without the prefix (``airflow/sdk/definitions/taskgroup.py`` ~463; 2.11
``airflow/utils/task_group.py`` ~430), which is what the TaskFlow decorator (``sdk/bases/
decorator.py`` ~136, ~660) and ``BaseOperator`` (``sdk/bases/operator.py`` ~1111) apply to a
task created inside the group, and a nested group's ``group_id`` defers to its parent's
``child_id`` (``taskgroup.py`` ~290; 2.11 ~281), so inner groups keep their IR ids too. Groups
only place tasks: every dependency is still the task-level ``>>`` and XCom wiring (a group is
never an operand of ``>>``), so trigger rules, short-circuit gates, mapped tasks and the
watcher behave as without groups. Task and group ids share one namespace in a DAG
(``sdk/definitions/dag.py`` ~1099 ``used_group_ids``): helper task ids avoid the group ids.

Schedules and assets (issue 14; docs/facts/events-schedules-artifacts.md A1, A2, B1, B2): a
cron is ``CronTriggerTimetable(cron, timezone=tz)`` (the logical date is the fire time), the
window is ``start_date``/``end_date`` in the schedule's timezone and ``catchup`` is always
written (its default differs: False on 3.3, True on 2.11). ``produces`` is ``outlets=`` on the
task (``Asset(name=uri, uri=uri)``; 2.11 ``Dataset(uri)``), ``trigger`` is ``AssetAll`` /
``AssetAny`` (2.11 ``DatasetAll`` / ``DatasetAny``) as the schedule, combined with a cron or an
interval through ``AssetOrTimeSchedule`` (2.11 ``DatasetOrTimeSchedule``).

A mapped sub-pipeline (``sub.map(x=items)``) is a ``@task_group(prefix_group_id=False)``
function holding its members' calls, called as ``<group>.partial(...).expand(<param>=<items>)``
(a MappedTaskGroup: every member gets one task instance per item; see
:meth:`DagWriter._emit_mapped_group`). Pipelines without one are written as before.
"""

from __future__ import annotations

import keyword
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import libcst as cst

from unipipe.compiler.codegen import (
    header_lines,
    literal,
    module,
    parse_expression,
    render,
    task_function_names,
)
from unipipe.compiler.spec import group_alerts_spec, pipeline_alerts_spec, task_spec
from unipipe.ir.groups import children, members
from unipipe.ir.models import (
    Cache,
    Condition,
    ElementInput,
    Group,
    Input,
    LiteralInput,
    OutputInput,
    ParamInput,
    Pipeline,
    Resources,
    Retry,
    Task,
)
from unipipe_airflow.dialects import Dialect
from unipipe_airflow.retries import Policy, Seconds, plan_retry
from unipipe_airflow.runtime import GROUP_ALERTS_TASK

#: Names the generated module binds at top level or inside the DAG function.
_MODULE_NAMES = {"dag", "task", "Param", "timedelta", "pendulum", "send_alerts", "UnipipeRetry",
                 "RetryPolicy", "TaskGroup", "task_group", "CronTriggerTimetable", "Asset",
                 "AssetAll", "AssetAny", "AssetOrTimeSchedule", "Dataset", "DatasetAll",
                 "DatasetAny", "DatasetOrTimeSchedule", "DeltaTriggerTimetable"}
#: Names Airflow injects into a TaskFlow function by parameter name (2.x and 3.x contexts):
#: an input called like one of these would clash, so its parameter gets another name.
_CONTEXT_KEYS = {
    "conf", "conn", "dag", "dag_run", "data_interval_end", "data_interval_start", "ds",
    "ds_nodash", "exception", "execution_date", "expanded_ti_count", "inlet_events", "inlets",
    "logical_date", "macros", "map_index_template", "next_ds", "next_ds_nodash",
    "next_execution_date", "outlet_events", "outlets", "params", "partition_date",
    "partition_key", "prev_data_interval_end_success", "prev_data_interval_start_success",
    "prev_ds", "prev_ds_nodash", "prev_end_date_success", "prev_execution_date",
    "prev_execution_date_success", "prev_start_date_success", "reason", "run_id", "task",
    "task_instance", "task_instance_key_str", "task_reschedule_count", "task_state_store",
    "templates_dict", "test_mode", "ti", "tomorrow_ds", "tomorrow_ds_nodash",
    "triggering_asset_events", "triggering_dataset_events", "ts", "ts_nodash",
    "ts_nodash_with_tz", "var", "yesterday_ds", "yesterday_ds_nodash",
}
#: Names a task body binds itself.
_BODY_NAMES = {"run_task", "map_items", "condition", "unipipe_context"}

_PARAM_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
                "dict": "object", "list": "array"}

DEFAULT_POD_IMAGE = "python:3.11-slim"

_HELPERS = '''
def send_alerts(event, alerts, pipeline=False):
    """An Airflow callback that delivers unipipe alerts (unipipe loads only when it fires)."""

    def callback(context):
        from unipipe_airflow.runtime import deliver_alerts

        deliver_alerts(context, event, alerts, pipeline=pipeline)

    return callback
'''

_POLICY = '''
class UnipipeRetry(RetryPolicy):
    """unipipe's retry rule, decided in the worker after each failed try: the exception filter
    (fail_on wins; a non-empty retry_on lists the only retried types) and the exact wait
    delay * backoff ** (k - 1), capped by max_delay and lengthened by up to jitter times itself.
    """

    def __init__(self, retry, delays=True, pod=False):
        self.retry = retry
        self.delays = delays
        self.pod = pod

    def evaluate(self, exception, try_number, max_tries, context=None):
        from unipipe_airflow.runtime import retry_decision

        return retry_decision(
            self.retry, exception, try_number, delays=self.delays, pod=self.pod, context=context
        )
'''


#: executor profiles ``--airflow-executor`` accepts
EXECUTORS = ("kubernetes", "celery", "local")


@dataclass
class Options:
    """Code generation choices beyond the dialect (``CompileOptions.extra``)."""

    backoff: str = "exact"  # or "airflow": native exponential mode with Airflow's hash jitter
    kubernetes: bool = True  # False for local runs: no pod even if the task asks for resources
    start_date: tuple[int, int, int] = (2024, 1, 1)
    default_image: str = DEFAULT_POD_IMAGE
    #: the deployment's executor profile (``--airflow-executor``): only ``kubernetes`` runs a task
    #: with resources/image in a pod; on ``celery``/``local`` the task is an ordinary @task and the
    #: backend reports its resources/image as not honoured (unipipe_airflow.support.executor_notes)
    executor: str = "kubernetes"

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> Options:
        opts = cls()
        if extra.get("airflow_executor") is not None:
            opts.executor = str(extra["airflow_executor"])
            if opts.executor not in EXECUTORS:
                raise ValueError(f"airflow executor {opts.executor!r} is not one of "
                                 f"{', '.join(EXECUTORS)}")
        if "backoff" in extra:
            opts.backoff = str(extra["backoff"])
        if "kubernetes" in extra:
            opts.kubernetes = bool(extra["kubernetes"])
        if "start_date" in extra:
            y, m, d = (int(x) for x in str(extra["start_date"]).split("-"))
            opts.start_date = (y, m, d)
        if "default_image" in extra:
            opts.default_image = str(extra["default_image"])
        return opts


class _Names:
    """Unique, valid Python names for the generated module."""

    def __init__(self, reserved: set[str]):
        self.taken = set(reserved)

    def claim(self, preferred: str) -> str:
        base = re.sub(r"\W", "_", preferred)
        if not base or base[0].isdigit():
            base = "t_" + base
        if keyword.iskeyword(base) or keyword.issoftkeyword(base):
            base += "_"
        candidate, n = base, 2
        while candidate in self.taken:
            candidate, n = f"{base}_{n}", n + 1
        self.taken.add(candidate)
        return candidate


def dag_filename(ir: Pipeline) -> str:
    """``<name>_dag.py``: the suffix keeps a DAG file from shadowing the user's module (Airflow
    puts the dags folder on sys.path, and task bodies import the user's module by name)."""
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', ir.name)}_dag.py"


# ---------------------------------------------------------------- small tree helpers


def _kw(name: str, value: cst.BaseExpression) -> cst.Arg:
    return cst.Arg(value=value, keyword=cst.Name(name),
                   equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")))


def _call(func: cst.BaseExpression | str, *args: cst.Arg) -> cst.Call:
    f = parse_expression(func) if isinstance(func, str) else func
    return cst.Call(func=f, args=list(args))


#: seconds DAG(dagrun_timeout=) allows past the pipeline's timeout: the scheduler marks a timed-out
#: run's unfinished tasks skipped (jobs/scheduler_job_runner.py ~2853), so the shim, which stops
#: a running try at the deadline itself and fails it as on every backend, must act first
DAGRUN_TIMEOUT_GRACE = 30.0


def _timedelta(seconds: float) -> cst.Call:
    if seconds == int(seconds):
        whole = int(seconds)
        for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
            if whole and whole % size == 0:
                return _call("timedelta", _kw(unit, literal(whole // size)))
        return _call("timedelta", _kw("seconds", literal(whole)))
    return _call("timedelta", _kw("seconds", literal(seconds)))


def _value(value: Any) -> cst.BaseExpression:
    if isinstance(value, Seconds):
        return _timedelta(value.value)
    if isinstance(value, Policy):
        args = [cst.Arg(literal(trim("retry", value.retry)))]
        if not value.delays:
            args.append(_kw("delays", literal(False)))
        if value.pod:
            args.append(_kw("pod", literal(True)))
        return _call("UnipipeRetry", *args)
    if isinstance(value, cst.BaseExpression):
        return value
    return literal(value)


def _doc(text: str) -> cst.SimpleStatementLine:
    # Airflow reads a doc_md ending in ".md" as a template file name; a newline keeps it text.
    if text.rstrip().endswith(".md"):
        text = text + "\n"
    from unipipe.compiler.codegen import _docstring

    return cst.SimpleStatementLine([cst.Expr(cst.SimpleString(_docstring(text)))])


def _stmt(expr: cst.BaseExpression) -> cst.SimpleStatementLine:
    return cst.SimpleStatementLine([cst.Expr(expr)])


def _assign(target: str, value: cst.BaseExpression) -> cst.SimpleStatementLine:
    return cst.SimpleStatementLine([cst.Assign([cst.AssignTarget(cst.Name(target))], value)])


def _import(module_name: str, name: str) -> cst.SimpleStatementLine:
    return cst.SimpleStatementLine([cst.ImportFrom(
        module=parse_expression(module_name),  # type: ignore[arg-type]
        names=[cst.ImportAlias(cst.Name(name))])])


def _function(name: str, params: list[str], body: list[cst.BaseStatement],
              decorator: cst.BaseExpression) -> cst.FunctionDef:
    return cst.FunctionDef(
        name=cst.Name(name),
        params=cst.Parameters([cst.Param(cst.Name(p)) for p in params]),
        body=cst.IndentedBlock(body),
        decorators=[cst.Decorator(decorator)],
    )


def _rshift(left: list[str], right: str) -> cst.SimpleStatementLine:
    lhs: cst.BaseExpression
    if len(left) == 1:
        lhs = cst.Name(left[0])
    else:
        lhs = cst.List([cst.Element(cst.Name(n)) for n in left])
    return _stmt(cst.BinaryOperation(lhs, cst.RightShift(), cst.Name(right)))


# ---------------------------------------------------------------- the generator


@dataclass
class DagWriter:
    ir: Pipeline
    dialect: Dialect
    options: Options = field(default_factory=Options)

    def __post_init__(self) -> None:
        self.names = _Names(_MODULE_NAMES)
        self.dag_func = self.names.claim(self.ir.name)
        self.task_ids = {t.id for t in self.ir.tasks}
        # task ids and TaskGroup ids share one namespace (sdk/definitions/dag.py ~1099)
        self.used_ids = self.task_ids | {g.id for g in self.ir.groups}
        self.uses_timedelta = False
        self.uses_policy = False
        self.uses_alerts = bool(self.ir.alerts)
        self.notes: list[str] = []
        self.pods: list[str] = []  # task ids that run in a pod (@task.kubernetes)
        # Tasks consumed by a map without a key path hand their list over item by item.
        self.fan_out_sources = {
            inp.task for t in self.ir.tasks if t.map_over is not None
            for inp in [t.inputs[t.map_over]]
            if isinstance(inp, OutputInput) and not inp.path
            and self.ir.task(inp.task).map_over is None
        }
        #: mapped sub-pipelines (``sub.map(x=items)``): a ``@task_group`` expanded over items
        self.mapped_groups = {g.id: g for g in self.ir.groups if g.map_over is not None}
        for g in self.mapped_groups.values():  # ... and their item lists, likewise
            if (isinstance(g.items, OutputInput) and not g.items.path
                    and self.ir.task(g.items.task).map_over is None):
                self.fan_out_sources.add(g.items.task)
        referenced: set[str] = set()
        for t in self.ir.tasks:
            referenced.update(t.upstream())
        #: a run_if task can end the DAG with a successful leaf after a failure: a watcher task
        #: downstream of every task then fails the run (watcher_def)
        self.watched = any(t.run_if != "all_success" for t in self.ir.tasks)
        #: sub-pipelines with alerts: each gets a task that delivers them when it ends
        #: (group_alerts_def), downstream of all its members
        self.alert_groups = [g for g in self.ir.groups if g.alerts]
        for g in self.alert_groups:
            referenced.update(members(self.ir, g.id))
        if self.alert_groups:
            # The alerts task (all_done) succeeds after a failed member and would be the leaf
            # that makes the run a success (airflow/models/dagrun.py ~1217): the watcher keeps
            # a run with a failed task failed, as with run_if tasks.
            self.watched = True
        for g in self.mapped_groups.values():  # the task a mapped group takes its items from
            if isinstance(g.items, OutputInput):
                referenced.add(g.items.task)
        if self.watched:
            referenced.update(self.task_ids)
        self.referenced = referenced
        # a callable several tasks call names its first task's function (the others call it
        # with .override, _emit_task)
        self.funcs = {tid: self.names.claim(name)
                      for tid, name in task_function_names(self.ir).items()}

    def in_pod(self, task: Task) -> bool:
        """The task runs in a Kubernetes pod (@task.kubernetes)."""
        pol = self.ir.effective(task)
        return (self.options.kubernetes and self.options.executor == "kubernetes"
                and (pol.resources is not None or pol.image is not None))

    # ------------------------------------------------------------ ids for helper tasks

    def _helper_id(self, preferred: str) -> str:
        base, n = preferred[:240], 2
        candidate = base
        while candidate in self.used_ids:
            candidate, n = f"{base}_{n}", n + 1
        self.used_ids.add(candidate)
        return candidate

    # ------------------------------------------------------------ per-task pieces

    def _decorator_args(self, task: Task, spec: dict[str, Any]) -> tuple[list[cst.Arg], set[str], bool]:
        """Keyword arguments of ``@task(...)``, the shim's emulations, whether the engine's
        retry_policy applies the exception filter."""
        pol = self.ir.effective(task)
        retry = pol.retry
        pod = self.in_pod(task)
        if retry is not None and pod and not self.dialect.retry_policy:
            # The worker sees only the pod's exit status, never the user's exception, and no
            # policy can read the pod's verdict: compile refuses the filter unless allowed
            # (backend.refusals), and then the engine retries every failure of a pod task.
            retry = retry.model_copy(update={"retry_on": (), "fail_on": ()})
        plan = plan_retry(retry, self.dialect, self.options.backoff)
        if pod and "retry_policy" in plan.kwargs:
            policy = plan.kwargs["retry_policy"]
            # the pod's verdict is in the shared store's scratch folder: the policy, run by the
            # worker outside any task body, must look in the same store
            shared = {"store": self.ir.store} if self.ir.store else {}
            plan.kwargs["retry_policy"] = Policy({**policy.retry, **shared}, policy.delays, pod=True)
        self.notes.extend(f"{task.id}: {n}" for n in plan.notes)
        emulate = set(plan.emulate)
        args: list[cst.Arg] = []
        if self.funcs[task.id] != task.id:
            args.append(_kw("task_id", literal(task.id)))
        if task.run_if != "all_success":
            # all_done: runs once every upstream is done, skipped ones included; one_failed:
            # runs once one upstream failed or is upstream_failed, skipped when all are done
            # without one (airflow/ti_deps/deps/trigger_rule_dep.py ~448, ~516, ~557)
            args.append(_kw("trigger_rule", literal(task.run_if)))
        if task.max_parallel is not None:
            # at most N of the mapped task's instances run at once in one DAG run: the
            # scheduler counts them per (dag_id, run_id, task_id) before queueing more
            # (airflow/jobs/scheduler_job_runner.py ~919; BaseOperator, 2.11 and 3.x alike)
            args.append(_kw("max_active_tis_per_dagrun", literal(task.max_parallel)))
        group = self.mapped_groups.get(task.group or "")
        if group is not None and group.max_parallel is not None:
            # a mapped TaskGroup takes no concurrency limit of its own (its fields:
            # sdk/definitions/taskgroup.py ~734 MappedTaskGroup adds only expand_input), so
            # each member gets it: at most N copies of each member run at once in one DAG run
            # (the same scheduler count per task id, jobs/scheduler_job_runner.py ~919)
            args.append(_kw("max_active_tis_per_dagrun", literal(group.max_parallel)))
        if task.produces:
            # a successful try updates the assets: Airflow emits an event per outlet only on
            # success (3.3 sdk/execution_time/task_runner.py ~1764-1777, the failure path sends
            # a plain TaskState(FAILED) ~1843; 2.11 models/taskinstance.py ~369-372)
            args.append(_kw("outlets", cst.List([cst.Element(self._asset(uri))
                                                 for uri in task.produces])))
        for key, value in plan.kwargs.items():
            if isinstance(value, Seconds):
                self.uses_timedelta = True
            if isinstance(value, Policy):
                self.uses_policy = True
            args.append(_kw(key, _value(value)))
        if pol.timeout is not None:
            if "retry.delay" in emulate:
                # The shim sleeps the retry wait inside the try: it must not count as run time.
                emulate.add("timeout")
            else:
                self.uses_timedelta = True
                args.append(_kw("execution_timeout", _timedelta(pol.timeout)))
        if pol.cache is not None:
            emulate.add("cache")
        for event in ("retry", "failure", "success"):
            alerts = [a for a in spec.get("alerts", []) if event in a["on"]]
            if alerts:
                self.uses_alerts = True
                args.append(_kw(f"on_{event}_callback",
                                _call("send_alerts", cst.Arg(literal(event)),
                                      cst.Arg(literal(alerts)))))
        return args, emulate, plan.engine_filter

    def _pod_args(self, pol_resources: Resources | None, image: str | None) -> list[cst.Arg]:
        args = [_kw("image", literal(image or self.options.default_image))]
        if pol_resources is not None:
            requests: dict[str, str] = {}
            limits: dict[str, str] = {}
            if pol_resources.cpu:
                requests["cpu"] = limits["cpu"] = pol_resources.cpu
            if pol_resources.memory:
                requests["memory"] = limits["memory"] = pol_resources.memory
            container: dict[str, Any] = {"name": "base"}
            spec: dict[str, Any] = {"containers": [container]}
            if pol_resources.gpu:
                gpu_name = "nvidia.com/gpu"
                if pol_resources.gpu_type and "/" in pol_resources.gpu_type:
                    gpu_name = pol_resources.gpu_type
                elif pol_resources.gpu_type:
                    spec["nodeSelector"] = {"accelerator": pol_resources.gpu_type}
                limits[gpu_name] = str(pol_resources.gpu)
            container["resources"] = {k: v for k, v in
                                      (("requests", requests), ("limits", limits)) if v}
            args.append(_kw("pod_template_dict", literal({"spec": spec})))
        return args

    def task_def(self, task: Task) -> tuple[cst.FunctionDef, list[str], list[str]]:
        """The ``@task`` function; also its upstream inputs (IR names) and parameter names."""
        spec = task_spec(self.ir, task)
        for kind in ("retry", "cache"):
            if kind in spec:
                spec[kind] = trim(kind, spec[kind])
        if "alerts" in spec:
            spec["alerts"] = [_trim_alert(a) for a in spec["alerts"]]
        decorator_args, emulate, engine_filter = self._decorator_args(task, spec)
        spec.pop("alerts", None)  # delivered by the task's callbacks, not by the shim
        # The adapter takes the pipeline and task id from the DAG id and the task id, and the
        # source hash matters to the cache key only: the file stays small and quick to parse.
        for key in ("pipeline", "id", "map_over"):
            spec.pop(key, None)
        if "cache" not in spec:
            del spec["source_hash"]
        retry = spec.get("retry")
        if retry is not None and set(retry) <= {"max_retries", "delay"}:
            # fully native: Airflow's retries/retry_delay say it all (the adapter reads them)
            del spec["retry"]
        params = {name: inp.name for name, inp in task.inputs.items()
                  if isinstance(inp, ParamInput)}
        upstream = [name for name, inp in task.inputs.items()
                    if isinstance(inp, (OutputInput, ElementInput))]
        collect = {name: inp.task for name, inp in task.inputs.items()
                   if isinstance(inp, OutputInput) and self._collected(task, inp.task)}
        if collect:
            # a member of a mapped group, read from outside it: every copy's output as a list
            spec["collect"] = collect
        if task.map_over is not None:
            # The mapped input arrives item by item (from the source or a *_items helper).
            spec.get("literals", {}).pop(task.map_over, None)
            spec.get("paths", {}).pop(task.map_over, None)
            params.pop(task.map_over, None)
            if task.map_over not in upstream:
                upstream.append(task.map_over)
            for key in ("literals", "paths"):
                if key in spec and not spec[key]:
                    del spec[key]
        if params:
            spec["params"] = params
        if emulate:
            spec["emulate"] = sorted(emulate)
        if engine_filter:
            spec["retry_policy"] = True
        if task.id in self.fan_out_sources:
            spec["fan_out"] = True
        if self.ir.timeout is not None:  # the shim stops the try at the run's deadline
            spec["run_timeout"] = self.ir.timeout
        pol = self.ir.effective(task)
        in_pod = self.in_pod(task)
        local = _Names(_CONTEXT_KEYS | _BODY_NAMES)
        arg_names = [local.claim(n) for n in upstream]
        inputs = cst.Dict([cst.DictElement(literal(n), cst.Name(a))
                           for n, a in zip(upstream, arg_names)])
        call_args = [cst.Arg(literal(spec))]
        if upstream:
            call_args.append(cst.Arg(inputs))
        # A command task (spec["command"]) takes the same decorator as a Python task: the shim
        # runs its argv without a shell. Not @task.bash, which runs `bash -c <one string>` with
        # bash_command a Jinja template field (providers/standard/operators/bash.py ~207-236),
        # and not KubernetesPodOperator, whose cmds/arguments are template fields and whose XCom
        # is /airflow/xcom/return.json, never stdout (cncf/kubernetes/operators/pod.py ~198-593).
        if in_pod:
            self.pods.append(task.id)
            call_args.append(_kw("context", cst.Name("unipipe_context")))
            arg_names.append("unipipe_context")
            decorator = _call("task.kubernetes",
                              *self._pod_args(pol.resources, pol.image), *decorator_args)
        elif decorator_args:
            decorator = _call("task", *decorator_args)
        else:
            decorator = cst.Name("task")
        body: list[cst.BaseStatement] = []
        if task.doc:
            body.append(_doc(task.doc))
        body.append(_import("unipipe_airflow.runtime", "run_task"))
        body.append(cst.SimpleStatementLine([cst.Return(_call("run_task", *call_args))],
                                            leading_lines=[cst.EmptyLine()]))
        return _function(self.funcs[task.id], arg_names, body, decorator), upstream, arg_names

    def gate_def(self, cond: Condition, gate_id: str, func: str) -> cst.FunctionDef:
        what = cond.task + "".join(f"[{p!r}]" for p in cond.path)
        doc = f"Run the tasks under up.when({what}) only if it is {cond.expect}."
        if cond.otherwise:
            doc = f"The else branch: run the tasks under up.otherwise() only if {what} is {cond.expect}."
        body: list[cst.BaseStatement] = [
            _doc(doc),
            _import("unipipe_airflow.runtime", "condition"),
            cst.SimpleStatementLine([cst.Return(_call(
                "condition", cst.Arg(cst.Name("value")),
                *([_kw("path", literal(list(cond.path)))] if cond.path else []),
                *([_kw("expect", literal(False))] if not cond.expect else [])))],
                leading_lines=[cst.EmptyLine()]),
        ]
        args = [_kw("ignore_downstream_trigger_rules", literal(False))]
        if func != gate_id:
            args.insert(0, _kw("task_id", literal(gate_id)))
        return _function(func, ["value"], body, _call("task.short_circuit", *args))

    def watcher_def(self, watcher_id: str, func: str) -> cst.FunctionDef:
        """A task downstream of every task that fails the run if one of them failed.

        Airflow decides a run's state from its leaves only (``airflow/models/dagrun.py``
        ~1066 ``_tis_for_dagrun_state``, ~1217 ``update_state``): a cleanup leaf
        (run_if all_done) that succeeds after a failure would make the run a success, where
        unipipe's runs fail. The watcher (trigger_rule one_failed) runs only then, and fails;
        otherwise it is skipped, which leaves a successful run successful. (A teardown task is
        left out of that rule, but a teardown that fails would then not fail the run either.)
        """
        doc = "Fail the run if any task failed: the run_if tasks after a failure may succeed."
        if all(t.run_if == "all_success" for t in self.ir.tasks):  # watched for group alerts
            doc = ("Fail the run if any task failed: a sub-pipeline's alerts task after a "
                   "failure succeeds.")
        body: list[cst.BaseStatement] = [
            _doc(doc),
            _import("unipipe_airflow.runtime", "fail_run"),
            cst.SimpleStatementLine([cst.Expr(_call("fail_run"))],
                                    leading_lines=[cst.EmptyLine()]),
        ]
        args = [_kw("trigger_rule", literal("one_failed")), _kw("retries", literal(0))]
        if func != watcher_id:
            args.insert(0, _kw("task_id", literal(watcher_id)))
        return _function(func, [], body, _call("task", *args))

    def group_alerts_def(self, group: Group, alerts_id: str, func: str,
                         inside: list[str]) -> cst.FunctionDef:
        """The task that delivers a sub-pipeline's alerts once, when the group ends (runner
        rule 11): an Airflow TaskGroup takes no callbacks (its fields:
        ``sdk/definitions/taskgroup.py`` ~128-154; 2.11 ``utils/task_group.py`` ~101), so this
        task sits in the group, downstream of every member, with ``trigger_rule="all_done"``
        (it runs once they are all done, whatever their states:
        ``airflow/ti_deps/deps/trigger_rule_dep.py`` ~557; 2.11 ~510), reads the members'
        states in this DAG run and sends ``failure`` or ``success`` through
        ``unipipe.runtime.alerts`` if the group ran (``runtime.group_alerts``). It never fails
        and runs no unipipe task: the result and the trace leave it out, and the watcher keeps
        a run with a failed member failed.
        """
        doc = f"Deliver the alerts of sub-pipeline {group.id} once, when it ends."
        alerts = [_trim_alert(a) for a in group_alerts_spec(group)]
        body: list[cst.BaseStatement] = [
            _doc(doc),
            _import("unipipe_airflow.runtime", "group_alerts"),
            cst.SimpleStatementLine([cst.Expr(_call(
                "group_alerts", cst.Arg(literal(group.id)), cst.Arg(literal(inside)),
                cst.Arg(literal(alerts))))], leading_lines=[cst.EmptyLine()]),
        ]
        args = [_kw("trigger_rule", literal("all_done")), _kw("retries", literal(0))]
        if func != alerts_id:
            args.insert(0, _kw("task_id", literal(alerts_id)))
        return _function(func, [], body, _call("task", *args))

    def items_def(self, task: Task, items_id: str, func: str) -> tuple[cst.FunctionDef, bool]:
        """The helper that produces the list a task fans out over; True if it takes an input."""
        assert task.map_over is not None
        return self._items_def(
            task.inputs[task.map_over], items_id, func,
            f"The list {task.id} fans out over, one item per mapped task instance.")

    def _items_def(self, source: Input, items_id: str, func: str,
                   doc: str) -> tuple[cst.FunctionDef, bool]:
        how: dict[str, Any] = {}
        takes_value = False
        if isinstance(source, LiteralInput):
            how["literal"] = source.value
        elif isinstance(source, ParamInput):
            how["param"] = source.name
            if source.path:
                how["path"] = list(source.path)
        else:
            takes_value = True
            how["path"] = list(source.path)
        if self.ir.store is not None:  # large items are written to the shared store
            how["store"] = self.ir.store
        args = [cst.Arg(literal(how))]
        if takes_value:
            args.append(cst.Arg(cst.Name("value")))
        body: list[cst.BaseStatement] = [
            _doc(doc),
            _import("unipipe_airflow.runtime", "map_items"),
            cst.SimpleStatementLine([cst.Return(_call("map_items", *args))],
                                    leading_lines=[cst.EmptyLine()]),
        ]
        decorator: cst.BaseExpression = cst.Name("task")
        if func != items_id:
            decorator = _call("task", _kw("task_id", literal(items_id)))
        return _function(func, ["value"] if takes_value else [], body, decorator), takes_value

    # ------------------------------------------------------------ the module

    # ------------------------------------------------------------ schedules and assets

    def _asset(self, uri: str) -> cst.Call:
        """An asset by its (already normalised) URI. 3.x: ``Asset(name=uri, uri=uri)``: with one
        argument it would be the *name*, which Airflow does not sanitise while it sanitises the
        uri, so the (name, uri) key could differ from another DAG's (sdk/definitions/asset/
        __init__.py ~268-271, ~337-342, key ~85-100). 2.11: ``Dataset(uri)``, the uri its only
        key (datasets/__init__.py ~246-251)."""
        if self.dialect.major >= 3:
            self.imports.add(("airflow.sdk", "Asset"))
            return _call("Asset", _kw("name", literal(uri)), _kw("uri", literal(uri)))
        self.imports.add(("airflow.datasets", "Dataset"))
        return _call("Dataset", cst.Arg(literal(uri)))

    def _condition(self) -> cst.BaseExpression:
        """``AssetAll(...)`` / ``AssetAny(...)`` (2.11: ``DatasetAll`` / ``DatasetAny``) over
        the trigger's assets (sdk/definitions/asset/__init__.py ~234-243; 2.11
        datasets/__init__.py ~361-450)."""
        trig = self.ir.trigger
        assert trig is not None
        kind = "All" if trig.mode == "all" else "Any"
        if self.dialect.major >= 3:
            name, module_name = f"Asset{kind}", "airflow.sdk"
        else:
            name, module_name = f"Dataset{kind}", "airflow.datasets"
        self.imports.add((module_name, name))
        return _call(name, *[cst.Arg(self._asset(u)) for u in trig.assets])

    def _cron_timetable(self) -> cst.Call:
        """``CronTriggerTimetable(cron, timezone=tz)``: a run at each fire time whose logical
        date is the fire time (not the end of a data interval, as a cron string gives on 2.11:
        config ``create_cron_data_intervals``). DST: fire_times' difference, declared."""
        sched = self.ir.schedule
        assert sched is not None and sched.cron is not None
        module_name = ("airflow.sdk" if self.dialect.major >= 3
                       else "airflow.timetables.trigger")
        self.imports.add((module_name, "CronTriggerTimetable"))
        return _call("CronTriggerTimetable", cst.Arg(literal(sched.cron)),
                     _kw("timezone", literal(sched.timezone)))

    def _schedule(self) -> cst.BaseExpression:
        ir = self.ir
        sched = ir.schedule
        timed: cst.BaseExpression | None = None
        if sched is not None and sched.cron is not None:
            timed = self._cron_timetable()
        elif sched is not None:
            self.uses_timedelta = True
            timed = _timedelta(sched.interval or 0)
        if ir.trigger is None:
            return timed if timed is not None else literal(None)
        condition = self._condition()
        if timed is None:
            return condition
        if sched is not None and sched.cron is None:
            # AssetOrTimeSchedule takes a timetable, not a timedelta
            module_name = ("airflow.sdk" if self.dialect.major >= 3
                           else "airflow.timetables.trigger")
            self.imports.add((module_name, "DeltaTriggerTimetable"))
            timed = _call("DeltaTriggerTimetable", cst.Arg(timed))
        # a cron or the assets: runs at each fire time and after each asset update
        # (sdk/definitions/timetables/assets.py ~69-86; 2.11 timetables/datasets.py ~36-54)
        if self.dialect.major >= 3:
            self.imports.add(("airflow.sdk", "AssetOrTimeSchedule"))
            return _call("AssetOrTimeSchedule", _kw("timetable", timed),
                         _kw("assets", condition))
        self.imports.add(("airflow.timetables.datasets", "DatasetOrTimeSchedule"))
        return _call("DatasetOrTimeSchedule", _kw("timetable", timed),
                     _kw("datasets", condition))

    def _date(self, text: str, tz: str) -> cst.Call:
        """``pendulum.datetime(y, m, d[, H, M, S], tz=tz)`` for an ISO date of the schedule."""
        from datetime import UTC, datetime

        from unipipe.schedules import parse_when

        when = parse_when(text, tz)
        if datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None:
            when, tz = when.astimezone(UTC), "UTC"  # an explicit offset: that instant, in UTC
        parts = [when.year, when.month, when.day]
        if (when.hour, when.minute, when.second) != (0, 0, 0):
            parts += [when.hour, when.minute, when.second]
        return _call("pendulum.datetime", *[cst.Arg(literal(v)) for v in parts],
                     _kw("tz", literal(tz)))

    def dag_decorator(self) -> cst.Call:
        ir = self.ir
        args = [_kw("dag_id", literal(ir.name))]
        args.append(_kw("schedule", self._schedule()))
        sched = ir.schedule
        tz = sched.timezone if sched is not None else "UTC"
        if sched is not None and sched.start is not None:
            args.append(_kw("start_date", self._date(sched.start, tz)))
        else:
            y, m, d = self.options.start_date
            args.append(_kw("start_date", _call("pendulum.datetime", cst.Arg(literal(y)),
                                                cst.Arg(literal(m)), cst.Arg(literal(d)),
                                                _kw("tz", literal(tz)))))
        if sched is not None and sched.end is not None:
            args.append(_kw("end_date", self._date(sched.end, tz)))
        # written always: the default is False on 3.3 and True on 2.11 ([scheduler]
        # catchup_by_default)
        args.append(_kw("catchup", literal(bool(sched is not None and sched.catchup))))
        if ir.max_active_runs is not None:
            args.append(_kw("max_active_runs", literal(ir.max_active_runs)))
        if ir.timeout is not None:
            # The shim ends a running try at the run's deadline (runtime.run_task); the
            # scheduler's own timeout, a grace later, fails a run whose tasks never started.
            self.uses_timedelta = True
            args.append(_kw("dagrun_timeout", _timedelta(ir.timeout + DAGRUN_TIMEOUT_GRACE)))
        if ir.params:
            args.append(_kw("params", cst.Dict([
                cst.DictElement(literal(p.name), self._param(p)) for p in ir.params])))
        if ir.tags:
            args.append(_kw("tags", literal(list(ir.tags))))
        alerts = [_trim_alert(a) for a in pipeline_alerts_spec(ir)]
        for event in ("failure", "success"):
            chosen = [a for a in alerts if event in a["on"]]
            if chosen:
                args.append(_kw(f"on_{event}_callback", _call(
                    "send_alerts", cst.Arg(literal(event)), cst.Arg(literal(chosen)),
                    _kw("pipeline", literal(True)))))
        return _call("dag", *args)

    def _param(self, p: Any) -> cst.Call:
        args: list[cst.Arg] = []
        if not p.required:
            args.append(cst.Arg(literal(p.default)))
        jtype = _PARAM_TYPES.get(p.type)
        if jtype is not None:
            if not p.required and p.default is None:
                args.append(_kw("type", literal([jtype, "null"])))
            else:
                args.append(_kw("type", literal(jtype)))
        if p.description:
            args.append(_kw("description", literal(p.description)))
        return _call("Param", *args)

    def build(self) -> cst.Module:
        ir = self.ir
        self._defs: list[cst.BaseStatement] = []
        self._edges: list[cst.BaseStatement] = []
        self._out: dict[str, str | None] = {}  # task id -> the variable holding its XComArg
        self._gates: dict[Condition, str] = {}  # condition -> result variable of its gate
        self._items: dict[str, str] = {}  # mapped group id -> its @task_group's item parameter
        self.imports: set[tuple[str, str]] = set()  # (module, name) the schedule/assets need
        defs, edges, out = self._defs, self._edges, self._out
        self._shared: dict[str, str] = {}  # a task function's definition -> its name
        # how many tasks call each callable: a definition holds its task's spec, whose "fn" is
        # the callable, so only tasks of one callable can share a definition
        self._fn_uses = Counter(t.fn for t in ir.tasks)
        wiring: list[cst.BaseStatement] = []
        if ir.groups:
            # each level in the order of unipipe.ir.groups.children, an inner group one node:
            # a group's calls stay together in its `with TaskGroup(...)` block
            self._emit_level(None, wiring)
        else:
            for tid in ir.topo_order():
                self._emit_task(ir.task(tid), wiring)
        if self.watched:
            from unipipe_airflow.runtime import WATCHER_ID

            watcher_id = self._helper_id(WATCHER_ID)
            wfunc = self.names.claim(watcher_id)
            defs.append(self.watcher_def(watcher_id, wfunc))
            wvar = self.names.claim(f"{watcher_id}_result")
            wiring.append(_assign(wvar, _call(wfunc)))
            edges.append(_rshift([self._var(out, t) for t in ir.topo_order()], wvar))
        body: list[cst.BaseStatement] = []
        if ir.description:
            body.append(_doc(ir.description))
        body.extend(defs)
        stmts = wiring + edges
        if stmts:
            first = stmts[0]
            assert isinstance(first, (cst.SimpleStatementLine, cst.With))
            stmts[0] = first.with_changes(leading_lines=[cst.EmptyLine()])
        body.extend(stmts)
        dag_fn = cst.FunctionDef(
            name=cst.Name(self.dag_func), params=cst.Parameters(),
            body=cst.IndentedBlock(body or [cst.SimpleStatementLine([cst.Pass()])]),
            decorators=[cst.Decorator(self.dag_decorator())],
        )
        top: list[cst.BaseStatement] = self._imports()
        if self.uses_alerts:
            top.extend(cst.parse_module(_HELPERS).body)
        if self.uses_policy:
            top.extend(cst.parse_module(_POLICY).body)
        top.append(dag_fn)
        top.append(_stmt(_call(self.dag_func)))
        return module(top, header=header_lines(
            target="airflow", target_version=self.dialect.version, ir_hash=ir.ir_hash(),
            pipeline=ir.name))

    def _emit_level(self, group_id: str | None, wiring: list[cst.BaseStatement]) -> None:
        """The calls of one level (the pipeline's body or one group's), inner groups nested."""
        for node in children(self.ir, group_id):
            if node.kind == "task":
                self._emit_task(self.ir.task(node.id), wiring)
            elif node.id in self.mapped_groups:
                self._emit_mapped_group(self.mapped_groups[node.id], wiring)
            else:
                wiring.append(self._group_block(self.ir.group(node.id)))

    def _group_block(self, group: Group) -> cst.With:
        """``with TaskGroup(<id>, prefix_group_id=False, tooltip=<doc>):`` around the group's
        calls (and its alerts task). No callbacks or retries: a TaskGroup takes neither
        (its fields: sdk/definitions/taskgroup.py ~128-154; 2.11 utils/task_group.py ~101)."""
        block: list[cst.BaseStatement] = []
        self._emit_level(group.id, block)
        if group.alerts:
            self._emit_group_alerts(group, block)
        args = [cst.Arg(literal(group.id)), _kw("prefix_group_id", literal(False))]
        if group.doc:
            args.append(_kw("tooltip", literal(group.doc)))
        return cst.With(items=[cst.WithItem(_call("TaskGroup", *args))],
                        body=cst.IndentedBlock(block))

    def _collected(self, task: Task, source: str) -> bool:
        """``task`` reads ``source``, a member of a mapped group ``task`` is not in."""
        group = self.ir.task(source).group
        return group in self.mapped_groups and task.group != group

    def _emit_mapped_group(self, group: Group, wiring: list[cst.BaseStatement]) -> None:
        """A mapped sub-pipeline: a ``@task_group`` function holding its members' calls,
        called as ``<group>.partial(<outside outputs>).expand(<map_over>=<items>)``.

        Airflow makes it a MappedTaskGroup (``sdk/definitions/decorators/task_group.py`` ~135
        ``expand``; 2.11 ``decorators/task_group.py`` ~131): the function runs once at parse
        time with a ``MappedArgument`` for the item, which each task instance resolves to item
        ``map_index`` (``sdk/definitions/_internal/expandinput.py`` ~104). Every member is
        expanded to one instance per item, and a member reading another member pulls the XCom
        of the same map index (``sdk/execution_time/task_mapping.py`` ~90
        ``get_relevant_map_indexes``; ``xcom_arg.py`` ~338), while its trigger rule looks at
        the upstream instance of its own copy only (``ti_deps/deps/trigger_rule_dep.py``
        ~165-245): a failure in copy i leaves the other copies alone. The group function
        returns the members outside code needs (a consumer, an ``after`` edge, the watcher).
        """
        assert group.map_over is not None and group.items is not None
        out = self._out
        src = group.items
        if isinstance(src, OutputInput) and not src.path:
            items_var = self._var(out, src.task)
        else:  # a literal, parameter or key path: a helper task hands the list over (XCom)
            items_id = self._helper_id(f"{group.id}_items")
            ifunc = self.names.claim(items_id)
            idef, takes_value = self._items_def(
                src, items_id, ifunc, f"The items sub-pipeline {group.id} runs for, one copy "
                "of its task group each.")
            self._defs.append(idef)
            items_var = self.names.claim(f"{items_id}_result")
            iargs = ([cst.Arg(cst.Name(self._var(out, src.task)))]
                     if takes_value and isinstance(src, OutputInput) else [])
            wiring.append(_assign(items_var, _call(ifunc, *iargs)))
        func = self.names.claim(group.id)
        item = self.names.claim(group.map_over)
        self._items[group.id] = item
        inside = members(self.ir, group.id)
        # the outside outputs members read come in as partial() arguments, under the names
        # of the variables that hold them outside (so a call reads the same either way)
        passed = [t for t in self.ir.topo_order() if t not in inside and any(
            isinstance(i, OutputInput) and i.task == t
            for m in inside for i in self.ir.task(m).inputs.values())]
        body: list[cst.BaseStatement] = []
        outer_edges, self._edges = self._edges, []
        try:
            for tid in inside:  # tasks only (validation), in children() order
                self._emit_task(self.ir.task(tid), body)
            body.extend(self._edges)
        finally:
            self._edges = outer_edges
        needed = [t for t in inside if self._needed_outside(t, inside)]
        ret = [self._var(out, t) for t in needed]
        if ret:
            value: cst.BaseExpression = (cst.Name(ret[0]) if len(ret) == 1 else
                                         cst.Tuple([cst.Element(cst.Name(r)) for r in ret],
                                                   lpar=[], rpar=[]))
            body.append(cst.SimpleStatementLine([cst.Return(value)]))
        args = [_kw("prefix_group_id", literal(False))]
        if func != group.id:
            args.insert(0, _kw("group_id", literal(group.id)))
        if group.doc:
            args.append(_kw("tooltip", literal(group.doc)))
        self._defs.append(_function(func, [item] + [self._var(out, t) for t in passed], body,
                                    _call("task_group", *args)))
        base: cst.BaseExpression = cst.Name(func)
        if passed:
            base = _call(cst.Attribute(base, cst.Name("partial")),
                         *[_kw(self._var(out, t), cst.Name(self._var(out, t))) for t in passed])
        call = _call(cst.Attribute(base, cst.Name("expand")), _kw(item, cst.Name(items_var)))
        if not ret:
            wiring.append(_stmt(call))
        elif len(ret) == 1:
            wiring.append(_assign(ret[0], call))
        else:
            wiring.append(cst.SimpleStatementLine([cst.Assign(
                [cst.AssignTarget(cst.Tuple([cst.Element(cst.Name(r)) for r in ret],
                                            lpar=[], rpar=[]))], call)]))

    def _needed_outside(self, tid: str, inside: list[str]) -> bool:
        """Code outside the group function refers to this member's variable."""
        if self._out.get(tid) is None:
            return False
        if self.watched:
            return True
        return any(t.id not in inside and tid in t.upstream() for t in self.ir.tasks)

    def _emit_group_alerts(self, group: Group, block: list[cst.BaseStatement]) -> None:
        alerts_id = self._helper_id(f"{group.id}__{GROUP_ALERTS_TASK}")
        func = self.names.claim(alerts_id)
        inside = members(self.ir, group.id)
        self._defs.append(self.group_alerts_def(group, alerts_id, func, inside))
        var = self.names.claim(f"{alerts_id}_result")
        block.append(_assign(var, _call(func)))
        self._edges.append(_rshift([self._var(self._out, t) for t in inside], var))

    def _emit_task(self, task: Task, wiring: list[cst.BaseStatement]) -> None:
        """A task's call (with the gates and ``*_items`` helper it needs first) into
        ``wiring``; its ``>>`` edges to the end of the DAG body."""
        defs, edges, out, gates = self._defs, self._edges, self._out, self._gates
        tid = task.id
        func_def, upstream, arg_names = self.task_def(task)
        # gates this task waits for (emitted on first use, right after their source)
        gate_vars: list[str] = []
        for cond in task.when:
            if cond not in gates:
                gate_id = self._helper_id(_gate_name(cond))
                gfunc = self.names.claim(gate_id)
                defs.append(self.gate_def(cond, gate_id, gfunc))
                gvar = self.names.claim(f"{gate_id}_result")
                src = self._var(out, cond.task)
                wiring.append(_assign(gvar, _call(gfunc, cst.Arg(cst.Name(src)))))
                gates[cond] = gvar
            gate_vars.append(gates[cond])
        expand_source: str | None = None
        if task.map_over is not None:
            source = task.inputs[task.map_over]
            if isinstance(source, OutputInput) and not source.path:
                expand_source = self._var(out, source.task)
            else:
                items_id = self._helper_id(f"{task.id}_items")
                ifunc = self.names.claim(items_id)
                idef, takes_value = self.items_def(task, items_id, ifunc)
                defs.append(idef)
                ivar = self.names.claim(f"{items_id}_result")
                iargs = ([cst.Arg(cst.Name(self._var(out, source.task)))]
                         if takes_value and isinstance(source, OutputInput) else [])
                wiring.append(_assign(ivar, _call(ifunc, *iargs)))
                if gate_vars:
                    edges.append(_rshift(gate_vars, ivar))
                expand_source = ivar
        # One function per distinct definition, as a person writes a DAG: a task whose
        # definition (callable, policies, spec) equals an earlier one's is that function called
        # with ``.override(task_id=...)`` (sdk/bases/decorator.py ``_TaskDecorator.override``;
        # 2.11 decorators/base.py likewise), which keeps the call's own task id.
        # (Rendering a definition to compare it costs about as much as writing it: a task whose
        # callable no other task calls gets a key of its own instead, the same outcome.)
        key = _share_key(func_def) if self._fn_uses[task.fn] > 1 else f"\0{tid}"
        shared = self._shared.get(key)
        if shared is None:
            self._shared[key] = self.funcs[tid]
            defs.append(func_def)
        # the call
        kwargs: list[cst.Arg] = []
        mapped: list[cst.Arg] = []
        for name, arg in zip(upstream, arg_names):
            if name == task.map_over:
                assert expand_source is not None
                mapped.append(_kw(arg, cst.Name(expand_source)))
            elif isinstance(inp := task.inputs[name], ElementInput):
                # the item of this copy of the mapped group (the @task_group's parameter)
                kwargs.append(_kw(arg, cst.Name(self._items[inp.group])))
            else:
                assert isinstance(inp, OutputInput)
                kwargs.append(_kw(arg, cst.Name(self._var(out, inp.task))))
        if task.id in self.pods:
            kwargs.append(_kw("unipipe_context", literal(
                _pod_context_text(sorted({i.name for i in task.inputs.values()
                                          if isinstance(i, ParamInput)})))))
        func: cst.BaseExpression = cst.Name(self.funcs[tid])
        if shared is not None:
            func = _call(cst.Attribute(cst.Name(shared), cst.Name("override")),
                         _kw("task_id", literal(tid)))
        expr: cst.BaseExpression
        if mapped:
            base: cst.BaseExpression = func
            if kwargs:
                base = _call(cst.Attribute(func, cst.Name("partial")), *kwargs)
            expr = _call(cst.Attribute(base, cst.Name("expand")), *mapped)
        else:
            expr = _call(func, *kwargs)
        # An artifact reaches the task through the store (the shim reads the producer's record
        # in the same run), not through XCom: the producer needs an explicit edge.
        wired = {i.task for i in task.inputs.values() if isinstance(i, OutputInput)}
        wired |= {items.task for i in task.inputs.values() if isinstance(i, ElementInput)
                  and isinstance(items := self.mapped_groups[i.group].items, OutputInput)}
        producers = list(dict.fromkeys(
            s.task for s in task.artifacts.values()
            if s.direction == "input" and s.task is not None
            and s.task not in wired and s.task not in task.after))
        if tid in self.referenced or task.after or gate_vars or producers:
            var = self.names.claim(f"{tid}_result")
            out[tid] = var
            wiring.append(_assign(var, expr))
        else:
            out[tid] = None
            wiring.append(_stmt(expr))
        deps = gate_vars + [self._var(out, a) for a in [*task.after, *producers]]
        if deps:
            edges.append(_rshift(deps, out[tid] or ""))

    def _var(self, out: dict[str, str | None], task_id: str) -> str:
        var = out[task_id]
        assert var is not None, f"{task_id} is referenced but has no variable"
        return var

    def _imports(self) -> list[cst.BaseStatement]:
        d = self.dialect
        stmts: list[cst.BaseStatement] = []
        if self.uses_timedelta:
            stmts.append(_import("datetime", "timedelta"))
        stmts.append(cst.SimpleStatementLine([cst.Import([cst.ImportAlias(cst.Name("pendulum"))])],
                                             leading_lines=[cst.EmptyLine()] if stmts else []))
        names = ["dag", "task"]
        if self.mapped_groups:  # @task_group lives next to @task on every line
            names.append("task_group")
        if any(g.map_over is None for g in self.ir.groups) and d.task_group == d.decorators:
            names.insert(0, "TaskGroup")
        if self.uses_policy:
            names.insert(0, "RetryPolicy")
        if self.ir.params and d.params == d.decorators:
            names.insert(0, "Param")
        names = sorted({n for m, n in self.imports if m == d.decorators}) + names
        stmts.append(cst.SimpleStatementLine([cst.ImportFrom(
            module=cst.parse_expression(d.decorators),  # type: ignore[arg-type]
            names=[cst.ImportAlias(cst.Name(n)) for n in names])]))
        if self.ir.params and d.params != d.decorators:
            stmts.append(_import(d.params, "Param"))
        if any(g.map_over is None for g in self.ir.groups) and d.task_group != d.decorators:
            stmts.append(_import(d.task_group, "TaskGroup"))
        by_module: dict[str, list[str]] = {}
        for module_name, name in sorted(self.imports):
            if module_name == d.decorators:
                continue
            by_module.setdefault(module_name, []).append(name)
        for module_name, found in by_module.items():
            stmts.append(cst.SimpleStatementLine([cst.ImportFrom(
                module=cst.parse_expression(module_name),  # type: ignore[arg-type]
                names=[cst.ImportAlias(cst.Name(n)) for n in found])]))
        return stmts


_DEFAULTS = {
    "retry": Retry().model_dump(mode="json"),
    "cache": Cache().model_dump(mode="json"),
}


def trim(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A policy dict without the fields left at their defaults (the shim reads them with the
    same defaults), so generated specs show only what the user set."""
    defaults = _DEFAULTS[kind]
    return {k: v for k, v in data.items() if k not in defaults or v != defaults[k]
            or k == "max_retries"}


def _trim_alert(alert: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in alert.items() if v not in ((), [], None)}


def _share_key(func_def: cst.FunctionDef) -> str:
    """A task function's definition without its name and ``task_id``: equal keys, one function."""
    decorators = []
    for dec in func_def.decorators:
        expr = dec.decorator
        if isinstance(expr, cst.Call):
            expr = expr.with_changes(args=[a for a in expr.args
                                           if not (a.keyword and a.keyword.value == "task_id")])
        decorators.append(dec.with_changes(decorator=expr))
    bare = func_def.with_changes(name=cst.Name("_"), decorators=decorators)
    return cst.Module(body=[bare]).code


def _gate_name(cond: Condition) -> str:
    parts = [cond.task] + [re.sub(r"\W", "_", str(p)) for p in cond.path]
    if cond.otherwise:
        return "otherwise_" + "_".join(parts)
    return ("when_" if cond.expect else "when_not_") + "_".join(parts)


def _pod_context_text(param_names: list[str]) -> str:
    """The Jinja string a pod task receives as ``unipipe_context`` (fixed text + identifiers)."""
    params = ", ".join(f'"{n}": {{{{ params[{n!r}] | tojson }}}}' for n in param_names)
    return ('{"run_id": {{ run_id | tojson }}, "dag_id": {{ ti.dag_id | tojson }}, '
            '"task_id": {{ ti.task_id | tojson }}, "retries": {{ task.retries }}, '
            '"try_number": {{ ti.try_number }}, "map_index": {{ ti.map_index }}, '
            # the run's logical date; an asset-triggered or REST run on Airflow 3 has none, and
            # stands for its run_after (runtime.logical_date does the same outside a pod)
            '"logical_date": {{ (logical_date or dag_run.run_after) | string | tojson }}, '
            '"params": {' + params + "}}")


def generate(ir: Pipeline, dialect: Dialect, options: Options | None = None) -> tuple[str, DagWriter]:
    """The DAG file's text (formatted) and the writer (for its notes and pod list)."""
    writer = DagWriter(ir, dialect, options or Options())
    return render(writer.build()), writer
