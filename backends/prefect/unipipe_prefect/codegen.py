"""The Prefect flow module for a pipeline, built as a libcst tree (never text templates).

One ``@task`` per IR task (its body calls the unipipe adapter), one ``@flow`` that calls the tasks
in the IR's topological order with ``return_state=True`` and follows the IR's rules: a task runs
only when every upstream task completed (``rt.ready``) and its conditions hold (a plain ``if``;
an ``up.otherwise()`` block is the same test negated); a ``run_if="all_done"`` task runs
unguarded after its upstream tasks, a ``run_if="one_failed"`` one under ``rt.one_failed``;
mapped tasks use ``.map``; the flow raises at the end if any task failed, which is what makes
Prefect mark the flow run Failed and fire its ``on_failure`` hook.

User strings reach the tree only through :func:`unipipe.compiler.codegen.literal` (or the
docstring escaper), so they can never become code.
"""

from __future__ import annotations

import builtins
import heapq
import json
import keyword
import re
import textwrap
from typing import Any

import libcst as cst

from unipipe.compiler import codegen
from unipipe.compiler.spec import group_alerts_spec, pipeline_alerts_spec, task_spec
from unipipe.ir.groups import children, members, upstream_outside
from unipipe.ir.models import (
    DictValue,
    ElementInput,
    Group,
    ListValue,
    LiteralInput,
    OutputInput,
    ParamInput,
    Pipeline,
    Task,
    Value,
)
from unipipe.runtime.retry import delay_schedule

#: Prefect validates ``retry_delay_seconds`` lists to at most 50 entries.
MAX_DELAY_LIST = 50

PARAM_TYPES = {"str": "str", "int": "int", "float": "float", "bool": "bool", "dict": "dict",
               "list": "list"}

# Module-level names the generated file defines or imports (task functions must avoid them).
MODULE_NAMES = {"annotations", "flow", "task", "unmapped", "quote", "timedelta", "INPUTS",
                "NO_CACHE", "TASK_SOURCE", "PIPELINE", "SPECS", "PIPELINE_ALERTS", "GROUP_ALERTS",
                "retry_condition", "task_alerts", "pipeline_alerts", "group_alerts", "cache_key",
                "GROUP_ITEMS"}


def python_name(text: str) -> str:
    """A readable identifier for a pipeline name (``ml-training`` -> ``ml_training``)."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", text)
    if not ident or ident[0].isdigit():
        ident = f"pipeline_{ident}"
    if keyword.iskeyword(ident) or hasattr(builtins, ident):
        ident += "_flow"
    return ident


def module_filename(ir: Pipeline) -> str:
    return f"{python_name(ir.name)}_flow.py"


class Names:
    """Deterministic, collision-free identifiers for everything the module defines."""

    def __init__(self, ir: Pipeline):
        self.params = [p.name for p in ir.params]
        taken = set(self.params) | MODULE_NAMES
        self._taken = taken
        self.task_fn: dict[str, str] = {}
        #: task id -> the function of an earlier task it calls with ``.with_options`` (same
        #: callable, same policies: one ``@task`` function, as a person writes a flow)
        self.shared: dict[str, str] = {}
        #: function names defined for several tasks (their spec is looked up by task name)
        self.shared_fns: set[str] = set()
        for tid, name in codegen.task_function_names(ir).items():
            self.task_fn[tid] = self._fresh(name, "_task")
        self.flow_fn = self._fresh(python_name(ir.name), "_flow")
        # one subflow function per group (a sub-pipeline called twice is two groups: their
        # tasks differ), named after the group
        self.group_fn = {g.id: self._fresh(g.id, "_group") for g in ir.groups}
        self.rt = self._fresh("rt", "_")
        self.state = {t.id: self._fresh(f"{t.id}_state", "_") for t in ir.tasks}
        self.group_states = {g.id: self._fresh(f"{g.id}_states", "_") for g in ir.groups}
        self.items = {t.id: self._fresh(f"{t.id}_items", "_") for t in ir.tasks if t.map_over}
        # mapped sub-pipelines (named last, so other pipelines' names never change): the
        # subflow's item parameter, and in the caller the items and the copies' final states
        mapped = [g for g in ir.groups if g.map_over is not None]
        self.item = {g.id: self._fresh(str(g.map_over), "_item") for g in mapped}
        self.group_items = {g.id: self._fresh(f"{g.id}_items", "_") for g in mapped}
        self.copies = {g.id: self._fresh(f"{g.id}_copies", "_") for g in mapped}
        self.index = self._fresh("index", "_") if mapped else "index"

    def _fresh(self, base: str, suffix: str) -> str:
        name = base
        while (name in self._taken or keyword.iskeyword(name) or keyword.issoftkeyword(name)
               or hasattr(builtins, name)):
            name += suffix
        self._taken.add(name)
        return name


# ---------------------------------------------------------------- small node helpers


def _attr(obj: str, attr: str) -> cst.Attribute:
    return cst.Attribute(value=cst.Name(obj), attr=cst.Name(attr))


def _call(func: cst.BaseExpression, args: list[cst.BaseExpression] | None = None,
          kwargs: list[tuple[str, cst.BaseExpression]] | None = None) -> cst.Call:
    return cst.Call(func=func, args=[cst.Arg(a) for a in args or []]
                    + [cst.Arg(v, keyword=cst.Name(k)) for k, v in kwargs or []])


def _subscript(obj: cst.BaseExpression, key: cst.BaseExpression) -> cst.Subscript:
    return cst.Subscript(value=obj, slice=[cst.SubscriptElement(cst.Index(key))])


def _assign(target: str, value: cst.BaseExpression) -> cst.SimpleStatementLine:
    return cst.SimpleStatementLine([cst.Assign([cst.AssignTarget(cst.Name(target))], value)])


def _docstring(text: str) -> cst.SimpleStatementLine:
    return cst.SimpleStatementLine([cst.Expr(cst.SimpleString(codegen._docstring(text)))])


def _comment_line(text: str) -> cst.EmptyLine:
    return cst.EmptyLine(comment=cst.Comment(f"# {text}"))


def _and(values: list[cst.BaseExpression]) -> cst.BaseExpression:
    expr = values[0]
    for v in values[1:]:
        expr = cst.BooleanOperation(left=expr, operator=cst.And(), right=v)
    return expr


# ---------------------------------------------------------------- the module


def generated_spec(ir: Pipeline, task: Task) -> dict[str, Any]:
    """The task spec embedded in SPECS (a mapped task's element spec has no path on the list)."""
    spec = task_spec(ir, task)
    if task.produces:  # the assets a successful attempt updates: runtime.emit_asset_events
        spec["produces"] = list(task.produces)
    if task.map_over and task.map_over in spec.get("paths", {}):
        paths = {k: v for k, v in spec["paths"].items() if k != task.map_over}
        if paths:
            spec["paths"] = paths
        else:
            del spec["paths"]
    return spec


def retry_delays(retry: dict[str, Any]) -> list[float]:
    """The IR's jitter-free waits as Prefect's list (exact for backoff and the cap)."""
    delays = [round(d, 6) for d in delay_schedule(retry)]
    return delays[:MAX_DELAY_LIST]


def delays_are_exact(retry: dict[str, Any]) -> bool:
    """Prefect repeats the last list entry past 50 retries: exact only if the tail is constant."""
    delays = delay_schedule(retry)
    return len(delays) <= MAX_DELAY_LIST or len(set(delays[MAX_DELAY_LIST - 1:])) == 1


def shim_caches(spec: dict[str, Any]) -> bool:
    """Whether the shim, not Prefect, caches the task: one with artifacts or logs. Prefect's
    INPUTS policy hashes the task run's parameters (prefect/cache_policies.py ``Inputs``), and
    an input artifact is no parameter (the file's bytes would not be in the key); and on a hit
    Prefect skips the body, so the run would lack the record its consumers read their input
    files by. The shim's key covers the input files' digests, and a hit restores the record
    (unipipe/runtime/invoke.py ``run_attempt``)."""
    return bool(spec.get("cache")) and bool(spec.get("artifacts") or spec.get("logs"))


def native_cache(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The cache policy Prefect applies to the task (None: none, or the shim's)."""
    return None if shim_caches(spec) else spec.get("cache")


def build_module(ir: Pipeline, *, target_version: str) -> cst.Module:
    names = Names(ir)
    specs = {t.id: generated_spec(ir, t) for t in ir.tasks}
    effective = {t.id: ir.effective(t) for t in ir.tasks}
    uses_retry = any(s.get("retry") for s in specs.values())
    caches = [native_cache(s) for s in specs.values()]
    uses_cache = any(c and not c.get("key_fn") for c in caches)
    uses_key_fn = any(c and c.get("key_fn") for c in caches)
    uses_expiry = any(c and c.get("expire") for c in caches)
    uses_nocache = any(not c for c in caches)
    uses_map = any(t.map_over for t in ir.tasks)
    task_events = {t.id: {ev for a in effective[t.id].alerts for ev in a.on} for t in ir.tasks}
    uses_task_hooks = any(ev & {"failure", "success"} for ev in task_events.values())
    flow_events = {ev for a in ir.alerts for ev in a.on}

    body: list[cst.BaseStatement] = []
    body.append(cst.parse_statement("from __future__ import annotations"))
    if uses_expiry:
        body.append(cst.parse_statement("from datetime import timedelta"))
    prefect_names = ["flow", "task"] + (["unmapped"] if uses_map else [])
    body.append(cst.parse_statement(f"from prefect import {', '.join(prefect_names)}"))
    policies = sorted(({"INPUTS", "TASK_SOURCE"} if uses_cache else set())
                      | ({"NO_CACHE"} if uses_nocache else set()))
    if policies:
        body.append(cst.parse_statement(f"from prefect.cache_policies import {', '.join(policies)}"))
    if ir.groups:  # Prefect task states cross into subflows unresolved: see _group_call
        body.append(cst.parse_statement("from prefect.utilities.annotations import quote"))

    body.append(_assign("PIPELINE", codegen.literal(ir.name)).with_changes(
        leading_lines=[cst.EmptyLine()]))
    body.append(_assign("SPECS", codegen.literal(specs)).with_changes(leading_lines=[
        _comment_line("What each task runs and its policies, read by the unipipe runtime;"),
        _comment_line("literal inputs live here, never in Prefect call arguments."),
    ]))
    if ir.alerts:
        body.append(_assign("PIPELINE_ALERTS", codegen.literal(pipeline_alerts_spec(ir))))
    literal_items = {g.id: g.items.value for g in ir.groups
                     if isinstance(g.items, LiteralInput)}
    if literal_items:
        body.append(_assign("GROUP_ITEMS", codegen.literal(literal_items)).with_changes(
            leading_lines=[_comment_line("The items of the mapped sub-pipelines given a literal "
                                         "list, by group.")]))
    group_alerts = {g.id: group_alerts_spec(g) for g in ir.groups if g.alerts}
    if group_alerts:
        body.append(_assign("GROUP_ALERTS", codegen.literal(group_alerts)).with_changes(
            leading_lines=[_comment_line("The sub-pipelines' alerts, by group (the subflow run's "
                                         "name), sent once when the group ends.")]))

    if uses_retry:
        body.append(cst.parse_statement(
            "def retry_condition(prefect_task, task_run, state) -> bool:\n"
            '    """retry_condition_fn: False fails the task at once (fail_on, retry_on,\n'
            "    up.NonRetryable); True means Prefect retries, so the task's retry alerts go out\n"
            '    here."""\n'
            "    from unipipe_prefect.runtime import should_retry\n\n"
            "    return should_retry(SPECS[prefect_task.name], task_run, state)\n"))
    if uses_task_hooks:
        body.append(cst.parse_statement(
            "def task_alerts(prefect_task, task_run, state) -> None:\n"
            '    """on_failure / on_completion hook: the task\'s final alert, once, after its retries."""\n'
            "    from unipipe_prefect.runtime import task_alerts\n\n"
            "    task_alerts(SPECS[prefect_task.name], task_run, state)\n"))
    if uses_key_fn:
        body.append(cst.parse_statement(
            "def cache_key(context, parameters) -> str:\n"
            '    """cache_key_fn: the pipeline\'s own key function over the loaded inputs."""\n'
            "    from unipipe_prefect.runtime import cache_key\n\n"
            "    return cache_key(SPECS[context.task.name], parameters)\n"))
    if flow_events & {"failure", "success"}:
        body.append(cst.parse_statement(
            "def pipeline_alerts(prefect_flow, flow_run, state) -> None:\n"
            '    """Flow on_failure / on_completion hook: the pipeline alert, once per run."""\n'
            "    from unipipe_prefect.runtime import pipeline_alerts\n\n"
            "    pipeline_alerts(PIPELINE_ALERTS, PIPELINE, flow_run, state)\n"))
    if any({ev for a in g.alerts for ev in a.on} & {"failure", "success"} for g in ir.groups):
        body.append(cst.parse_statement(
            "def group_alerts(prefect_flow, flow_run, state) -> None:\n"
            '    """Subflow on_failure / on_completion hook: the sub-pipeline\'s alert, once when\n'
            '    the group ends (after its retries), if one of its tasks ran."""\n'
            "    from unipipe_prefect.runtime import group_alerts\n\n"
            "    group_alerts(GROUP_ALERTS[flow_run.name], PIPELINE, flow_run, state)\n"))

    copied = {t for g in ir.groups if g.map_over is not None for t in members(ir, g.id)}
    first: dict[str, str] = {}  # share key -> the task whose function the others call
    for t in ir.tasks:
        key = _share_key(t, specs[t.id], task_events[t.id], t.id in copied)
        if key in first:
            names.shared[t.id] = names.task_fn[first[key]]
            names.shared_fns.add(names.task_fn[first[key]])
        else:
            first[key] = t.id
    for t in ir.tasks:
        if t.id not in names.shared:
            body.append(_task_def(t, specs[t.id], names, task_events[t.id],
                                  copied=t.id in copied))
    for g in ir.groups:
        body.append(_group_def(ir, g, names))
    body.append(_flow_def(ir, names, flow_events))

    header = codegen.header_lines(target="prefect", target_version=target_version,
                                  ir_hash=ir.ir_hash(), pipeline=ir.name)
    doc = f"Prefect flow for the unipipe pipeline {ir.name!r}."
    if ir.description:
        doc += "\n\n" + ir.description.strip()
    return codegen.module(body, header=header, docstring=doc)


def _task_def(t: Task, spec: dict[str, Any], names: Names, events: set[str], *,
              copied: bool = False) -> cst.FunctionDef:
    """A task's ``@task`` function; ``copied``: a member of a mapped sub-pipeline, run once per
    copy of its group and told which (``map_index``, as a map element is)."""
    kwargs: list[tuple[str, cst.BaseExpression]] = [("name", codegen.literal(t.id))]
    # Task runs are named after the IR task (``task[i]`` for map elements and for the copies of
    # a mapped sub-pipeline's tasks): readable in the UI, and how the runner matches Prefect's
    # task runs to the IR.
    indexed = bool(t.map_over) or copied
    kwargs.append(("task_run_name", codegen.literal(_run_name(t, copied))))
    retry = spec.get("retry")
    if retry:
        kwargs.append(("retries", codegen.literal(int(retry["max_retries"]))))
        delays = retry_delays(retry)
        if any(d > 0 for d in delays):
            kwargs.append(("retry_delay_seconds", codegen.literal(delays)))
        kwargs.append(("retry_condition_fn", cst.Name("retry_condition")))
    cache = native_cache(spec)
    if cache and cache.get("key_fn"):
        kwargs.append(("cache_key_fn", cst.Name("cache_key")))
    elif cache:
        inputs: cst.BaseExpression = cst.Name("INPUTS")
        if indexed:
            inputs = cst.BinaryOperation(inputs, cst.Subtract(), codegen.literal("map_index"))
            inputs = inputs.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        kwargs.append(("cache_policy", cst.BinaryOperation(inputs, cst.Add(),
                                                           cst.Name("TASK_SOURCE"))))
    else:
        kwargs.append(("cache_policy", cst.Name("NO_CACHE")))
    if cache and cache.get("expire"):
        kwargs.append(("cache_expiration", _call(cst.Name("timedelta"), kwargs=[
            ("seconds", codegen.literal(float(cache["expire"])))])))
    if spec.get("timeout"):
        kwargs.append(("timeout_seconds", codegen.literal(float(spec["timeout"]))))
    if "failure" in events:
        kwargs.append(("on_failure", cst.List([cst.Element(cst.Name("task_alerts"))])))
    if "success" in events:
        kwargs.append(("on_completion", cst.List([cst.Element(cst.Name("task_alerts"))])))

    engine_inputs = [n for n, inp in t.inputs.items() if not isinstance(inp, LiteralInput)]
    if t.map_over and t.map_over not in engine_inputs:
        engine_inputs.append(t.map_over)  # a literal list is fanned out element by element
    params = [cst.Param(codegen.name(n)) for n in engine_inputs]
    if indexed:
        params.append(cst.Param(cst.Name("map_index"), default=cst.Name("None")))

    invoke_kwargs: list[tuple[str, cst.BaseExpression]] = []
    if indexed:
        invoke_kwargs.append(("map_index", cst.Name("map_index")))
    emulate = ((["cache"] if shim_caches(spec) else [])
               + (["retry.jitter"] if retry and float(retry.get("jitter", 0)) > 0 else []))
    if emulate:
        invoke_kwargs.append(("emulate", codegen.literal(tuple(emulate))))
    inputs_dict = cst.Dict([cst.DictElement(codegen.literal(n), cst.Name(n)) for n in engine_inputs])
    shared = names.task_fn[t.id] in names.shared_fns
    # a function several tasks call runs the spec of the task it was called as: its name
    # (``.with_options(name=...)``; prefect/runtime/task_run.py ``get_task_name``), as the
    # retry, alert and cache hooks already look it up
    key = (_attr("task_run", "task_name") if shared else codegen.literal(t.id))
    invoke = _call(cst.Name("invoke"), [_subscript(cst.Name("SPECS"), key), inputs_dict],
                   invoke_kwargs)

    doc = (f"Runs {t.fn}." if t.command is None else
           "Runs the command in SPECS: each item one argument, no shell.")
    if cache and not cache.get("key_fn"):
        doc += (f"\n\nCached on its inputs and this function's source, which pins the task's code"
                f"\n(sha256:{t.source_hash}) and the cache version {cache.get('version', '0')!r}.")
    elif cache:
        doc += f"\n\nCached on {cache['key_fn']} (cache version {cache.get('version', '0')!r})."
    elif shim_caches(spec):
        own = spec["cache"]
        on = own["key_fn"] if own.get("key_fn") else (
            f"its inputs, its input files' contents and its code (sha256:{t.source_hash})")
        doc += "\n\n" + textwrap.fill(
            f"Cached by the unipipe runtime, not Prefect, on {on}, cache version "
            f"{own.get('version', '0')!r}: a hit brings back the files, metrics and report it "
            "recorded.", 92, break_long_words=False)
    statements: list[cst.BaseStatement] = [
        _docstring(doc),
        *([codegen.parse_statement("from prefect.runtime import task_run")] if shared else []),
        codegen.parse_statement("from unipipe_prefect.runtime import invoke"),
        cst.SimpleStatementLine([cst.Return(invoke)]).with_changes(leading_lines=[cst.EmptyLine()]),
    ]
    return cst.FunctionDef(
        name=cst.Name(names.task_fn[t.id]),
        params=cst.Parameters(params=params),
        body=cst.IndentedBlock(statements),
        decorators=[cst.Decorator(_call(cst.Name("task"), kwargs=kwargs))],
        leading_lines=[cst.EmptyLine(), cst.EmptyLine()],
    )


def _run_name(t: Task, copied: bool) -> str:
    """A task's ``task_run_name``: ``task[i]`` for map elements and for the copies of a mapped
    sub-pipeline's tasks (``copied``), else the task id."""
    return t.id + "[{map_index}]" if t.map_over or copied else t.id


def _share_key(t: Task, spec: dict[str, Any], events: set[str], copied: bool) -> str:
    """What a task's ``@task`` function depends on besides its task's id (see ``_task_def``):
    tasks with equal keys share one function."""
    engine_inputs = [n for n, inp in t.inputs.items() if not isinstance(inp, LiteralInput)]
    return json.dumps([t.fn, t.source_hash, t.command is None, engine_inputs, t.map_over,
                       copied, sorted(events),
                       {k: spec.get(k) for k in ("retry", "cache", "timeout")}],
                      sort_keys=True, default=str)


def _value_expr(value: Value, names: Names) -> cst.BaseExpression:
    """The flow's return expression: task outputs loaded, skipped tasks as None."""
    rt = names.rt
    if isinstance(value, LiteralInput):
        return codegen.literal(value.value)
    if isinstance(value, ParamInput):
        if not value.path:
            return cst.Name(value.name)
        return _call(_attr(rt, "value"), [cst.Name(value.name), codegen.literal(list(value.path))],
                     [("is_state", cst.Name("False"))])
    if isinstance(value, OutputInput):
        args: list[cst.BaseExpression] = [cst.Name(names.state[value.task])]
        if value.path:
            args.append(codegen.literal(list(value.path)))
        return _call(_attr(rt, "value"), args)
    if isinstance(value, ListValue):
        return cst.List([cst.Element(_value_expr(v, names)) for v in value.items])
    if isinstance(value, DictValue):
        return cst.Dict([cst.DictElement(codegen.literal(k), _value_expr(v, names))
                         for k, v in value.items.items()])
    raise TypeError(value)


def _flow_params(ir: Pipeline) -> list[cst.Param]:
    required = [p for p in ir.params if p.required]
    optional = [p for p in ir.params if not p.required]
    out = []
    for p in required + optional:
        ann = PARAM_TYPES.get(p.type)
        out.append(cst.Param(
            codegen.name(p.name),
            annotation=cst.Annotation(cst.Name(ann)) if ann else None,
            default=None if p.required else codegen.literal(p.default),
        ))
    return out


def _flow_def(ir: Pipeline, names: Names, events: set[str]) -> cst.FunctionDef:
    rt = names.rt
    stmts: list[cst.BaseStatement] = []
    doc = ir.description.strip() or f"Run the unipipe pipeline {ir.name!r} on Prefect."
    stmts.append(_docstring(doc))
    stmts.append(_rt_import(rt))
    body, entries = _scope_body(ir, None, names)
    stmts.extend(body)
    edges = {t.id: t.upstream() for t in _in_topo(ir, ir.tasks) if t.upstream()}
    stmts.append(cst.SimpleStatementLine([cst.Expr(_call(
        _attr(rt, "raise_for_failures"), [cst.Dict(entries)],
        [("upstream", codegen.literal(edges))] if edges else []))]).with_changes(
            leading_lines=[cst.EmptyLine()]))
    ret = _value_expr(ir.output, names) if ir.output is not None else cst.Name("None")
    stmts.append(cst.SimpleStatementLine([cst.Return(ret)]))

    kwargs: list[tuple[str, cst.BaseExpression]] = [("name", codegen.literal(ir.name))]
    if ir.store is not None:  # results (and Prefect's cache) on the shared store: storage.py
        from unipipe_prefect.storage import block_slug

        kwargs.append(("result_storage", codegen.literal(block_slug(ir.store))))
    if ir.retries:  # the whole run again, in the same flow run (Prefect's own flow retries)
        kwargs.append(("retries", codegen.literal(ir.retries)))
        if ir.retry_delay:
            kwargs.append(("retry_delay_seconds", codegen.literal(int(ir.retry_delay))))
    if ir.timeout is not None:
        kwargs.append(("timeout_seconds", codegen.literal(ir.timeout)))
    if "failure" in events:
        kwargs.append(("on_failure", cst.List([cst.Element(cst.Name("pipeline_alerts"))])))
    if "success" in events:
        kwargs.append(("on_completion", cst.List([cst.Element(cst.Name("pipeline_alerts"))])))
    return cst.FunctionDef(
        name=cst.Name(names.flow_fn),
        params=cst.Parameters(params=_flow_params(ir)),
        body=cst.IndentedBlock(stmts),
        decorators=[cst.Decorator(_call(cst.Name("flow"), kwargs=kwargs))],
        leading_lines=[cst.EmptyLine(), cst.EmptyLine()],
    )


def _rt_import(rt: str) -> cst.SimpleStatementLine:
    return cst.parse_statement("from unipipe_prefect import runtime as rt" if rt == "rt"
                               else f"from unipipe_prefect import runtime as {rt}")


def _in_topo(ir: Pipeline, tasks: Any) -> list[Task]:
    wanted = {t.id if isinstance(t, Task) else t for t in tasks}
    return [ir.task(t) for t in ir.topo_order() if t in wanted]


# ---------------------------------------------------------------- sub-pipelines (subflows)


def state_inputs(ir: Pipeline, group_id: str) -> list[str]:
    """The tasks outside a group whose Prefect states its subflow takes in, topological order:
    the ones its members wait for (``upstream_outside``) and, for a ``run_if="one_failed"``
    member, every outside ancestor (``rt.one_failed`` tells skipped from upstream_failed
    through them)."""
    inside = set(members(ir, group_id))
    wanted = set(upstream_outside(ir, group_id))
    for tid in inside:
        if ir.task(tid).run_if == "one_failed":
            wanted.update(a for a in _ancestors(ir, tid) if a not in inside)
    return [t for t in ir.topo_order() if t in wanted]


def subflow_inputs(ir: Pipeline, group_id: str) -> list[str]:
    """The outside task states a group's subflow takes: ``state_inputs``, except that a mapped
    group's caller reads its items (the subflow gets one item), so the task they come from is
    passed in only if a member reads it too."""
    wanted = state_inputs(ir, group_id)
    group = ir.group(group_id)
    if group.map_over is None:
        return wanted
    inside = set(members(ir, group_id))
    read = {u for tid in inside for u in ir.task(tid).upstream() if u not in inside}
    return [u for u in wanted if u in read]


def params_read(ir: Pipeline, group_id: str) -> list[str]:
    """The pipeline parameters a group's members read (subflow parameters, by value)."""
    used: set[str] = set()
    for tid in members(ir, group_id):
        used.update(inp.name for inp in ir.task(tid).inputs.values()
                    if isinstance(inp, ParamInput))
    return [p.name for p in ir.params if p.name in used]


def ordered_children(ir: Pipeline, scope: str | None) -> list[Any]:
    """``children(ir, scope)`` (each inner group one node) in the order of ``ir.topo_order()``
    as far as the groups allow: ready nodes first by their first task's place there. Without
    groups that is exactly ``ir.topo_order()``, so flows of pipelines without sub-pipelines
    read as before."""
    nodes = children(ir, scope)
    place = {t: i for i, t in enumerate(ir.topo_order())}
    tasks = {n: ([n.id] if n.kind == "task" else members(ir, n.id)) for n in nodes}
    owner = {t: n for n, ts in tasks.items() for t in ts}
    deps = {n: {owner[u] for t in ts for u in ir.task(t).upstream() if u in owner} - {n}
            for n, ts in tasks.items()}
    first = {n: min(place[t] for t in ts) for n, ts in tasks.items()}
    waiting = {n: len(d) for n, d in deps.items()}
    after: dict[Any, list[Any]] = {n: [] for n in nodes}
    for n, d in deps.items():
        for u in d:
            after[u].append(n)
    # Kahn's algorithm, the ready node that comes first in topo_order next: linear, not the
    # quadratic rescan it replaces (a 1000-task chain took 90 s to compile)
    index = {n: i for i, n in enumerate(nodes)}
    ready = [(first[n], index[n], n) for n in nodes if not waiting[n]]
    heapq.heapify(ready)
    order: list[Any] = []
    while ready:
        _, _, nxt = heapq.heappop(ready)
        order.append(nxt)
        for n in after[nxt]:
            waiting[n] -= 1
            if not waiting[n]:
                heapq.heappush(ready, (first[n], index[n], n))
    return order


def _referenced(ir: Pipeline, scope: str | None) -> set[str]:
    """Tasks whose state a scope's body names directly (guards, arguments, subflow inputs,
    the output): a child group's members among them are unpacked from its states."""
    refs: set[str] = set()
    for node in ordered_children(ir, scope):
        if node.kind == "group":
            refs.update(state_inputs(ir, node.id))
            continue
        t = ir.task(node.id)
        refs.update(t.upstream())
        if t.run_if == "one_failed":
            refs.update(_ancestors(ir, t.id))
    if scope is None and ir.output is not None:
        from unipipe.ir.groups import output_tasks

        refs.update(output_tasks(ir.output))
    return refs


def _scope_body(ir: Pipeline, scope: str | None,
                names: Names) -> tuple[list[cst.BaseStatement], list[cst.BaseDictElement]]:
    """The statements of a flow body (the pipeline's, or a group's subflow) over
    ``children(ir, scope)``, and the entries of the dict of every task state it holds (a child
    group's as ``**<group>_states``), in topological order."""
    rt = names.rt
    stmts: list[cst.BaseStatement] = []
    entries: list[cst.BaseDictElement] = []
    refs = _referenced(ir, scope)
    first = True
    for node in ordered_children(ir, scope):
        lead: list[cst.EmptyLine] = [] if first else [cst.EmptyLine()]
        first = False
        if node.kind == "group":
            stmts.extend(_group_call(ir, node.id, names, refs, lead))
            entries.append(cst.StarredDictElement(cst.Name(names.group_states[node.id])))
            continue
        tid = node.id
        t = ir.task(tid)
        entries.append(cst.DictElement(codegen.literal(tid), cst.Name(names.state[tid])))
        ups = t.upstream()
        call_stmts = _task_call(t, names)
        guards: list[cst.BaseExpression] = []
        note: str | None = None
        if ups and t.run_if == "all_success":
            guards.append(_call(_attr(rt, "ready"), [cst.Name(names.state[u]) for u in ups]))
        elif t.run_if == "all_done":
            # every upstream task has ended by now (the flow calls them first, and waits)
            note = f"# {tid} runs whatever {' and '.join(ups)} ended as (run_if all_done)"
        elif t.run_if == "one_failed":
            note = f"# {tid} runs only if {' or '.join(ups)} failed (run_if one_failed)"
            before = _ancestors(ir, tid)
            guards.append(_call(_attr(rt, "one_failed"), [
                codegen.literal(ups),
                cst.Dict([cst.DictElement(codegen.literal(a), cst.Name(names.state[a]))
                          for a in before])],
                [("upstream", codegen.literal({a: ir.task(a).upstream() for a in before
                                               if ir.task(a).upstream()}))]))
        for cond in t.when:
            args: list[cst.BaseExpression] = [cst.Name(names.state[cond.task])]
            if cond.path:
                args.append(codegen.literal(list(cond.path)))
            guards.append(cst.Comparison(_call(_attr(rt, "value"), args), [cst.ComparisonTarget(
                cst.Is(), cst.Name("True" if cond.expect else "False"))]))
        if note is not None:
            lead = [*lead, cst.EmptyLine(comment=cst.Comment(note))]
        if not guards:
            call_stmts[0] = call_stmts[0].with_changes(leading_lines=lead)
            stmts.extend(call_stmts)
            continue
        stmts.append(_assign(names.state[tid], cst.Name("None")).with_changes(leading_lines=lead))
        stmts.append(cst.If(test=_and(guards), body=cst.IndentedBlock(call_stmts)))
    return stmts, entries


def _group_call(ir: Pipeline, gid: str, names: Names, refs: set[str],
                lead: list[cst.EmptyLine]) -> list[cst.BaseStatement]:
    """Call a group's subflow where ``children`` puts it, and unpack the member states this
    scope reads.

    The upstream states go in wrapped in ``quote``: a subflow resolves State parameters to
    their values and, for one that did not complete, never runs (it ends Pending 'NotReady':
    prefect/flow_engine.py ~630 ``_resolve_parameters`` with
    prefect/utilities/engine/__init__.py ~977 ``resolve_to_final_result``), while a quoted
    one reaches the body as the State itself (``resolve_to_final_result`` stops at a quote),
    so each member is guarded there exactly as in the pipeline's own body. ``return_state``
    gives the subflow's final state; ``rt.group_states`` reads the member states from it (its
    return value, or the ``GroupFailed`` it raised)."""
    kwargs: list[tuple[str, cst.BaseExpression]] = [
        (names.state[u], _call(cst.Name("quote"), [cst.Name(names.state[u])]))
        for u in subflow_inputs(ir, gid)]
    kwargs += [(p, cst.Name(p)) for p in params_read(ir, gid)]
    group = ir.group(gid)
    var = names.group_states[gid]
    if group.map_over is not None:
        stmts = _mapped_group_call(ir, group, names, kwargs, lead)
    else:
        kwargs.append(("return_state", cst.Name("True")))
        call = _call(_attr(names.rt, "group_states"),
                     [_call(cst.Name(names.group_fn[gid]), kwargs=kwargs)])
        note = f"# sub-pipeline {group.pipeline} as group {gid} (a subflow)"
        stmts = [_assign(var, call).with_changes(
            leading_lines=[*lead, cst.EmptyLine(comment=cst.Comment(note))])]
    for m in members(ir, gid):
        if m in refs:
            stmts.append(_assign(names.state[m], _subscript(cst.Name(var), codegen.literal(m))))
    return stmts


def _mapped_group_call(ir: Pipeline, group: Group, names: Names,
                       kwargs: list[tuple[str, cst.BaseExpression]],
                       lead: list[cst.EmptyLine]) -> list[cst.BaseStatement]:
    """A mapped sub-pipeline: its subflow called once per item, in item order, one copy after
    the other (each its own subflow run, named ``<group>[i]``, given the item and its index);
    ``rt.copy_states`` turns the copies' final states into each member's list of copy states
    (None where the copy did not run it), which the caller reads as it reads a mapped task's.
    When the task the items come from did not complete, no copy runs (rule 12)."""
    rt = names.rt
    gid = group.id
    item, index = names.item[gid], names.index
    src = group.items
    if isinstance(src, OutputInput):
        args: list[cst.BaseExpression] = [cst.Name(names.state[src.task])]
        if src.path:
            args.append(codegen.literal(list(src.path)))
        items = _call(_attr(rt, "items"), args)
    elif isinstance(src, ParamInput):
        args = [cst.Name(src.name)]
        if src.path:
            args.append(codegen.literal(list(src.path)))
        items = _call(_attr(rt, "items"), args, [("is_state", cst.Name("False"))])
    else:
        assert isinstance(src, LiteralInput)
        items = _call(_attr(rt, "items"), [_subscript(cst.Name("GROUP_ITEMS"),
                                                      codegen.literal(gid))],
                      [("is_state", cst.Name("False"))])
    call = _call(cst.Name(names.group_fn[gid]), kwargs=[
        (item, cst.Name(item)), *kwargs, ("map_index", cst.Name(index)),
        ("return_state", cst.Name("True"))])
    copies = cst.ListComp(elt=call, for_in=cst.CompFor(
        target=cst.Tuple([cst.Element(cst.Name(index)), cst.Element(cst.Name(item))],
                         lpar=[], rpar=[]),
        iter=_call(cst.Name("enumerate"), [cst.Name(names.group_items[gid])])))
    run = [_assign(names.group_items[gid], items), _assign(names.copies[gid], copies)]
    limit = (f", at most {group.max_parallel} at once: one after another"
             if group.max_parallel is not None else ", one after another")
    notes = [cst.EmptyLine(comment=cst.Comment(
                 f"# sub-pipeline {group.pipeline} as group {gid}, mapped over {group.map_over}:")),
             cst.EmptyLine(comment=cst.Comment(
                 f"# a subflow run per item ({gid}[i]), in item order{limit}"))]
    stmts: list[cst.BaseStatement] = []
    if isinstance(src, OutputInput):
        stmts.append(_assign(names.copies[gid], cst.Name("None")).with_changes(
            leading_lines=[*lead, *notes]))
        stmts.append(cst.If(test=_call(_attr(rt, "ready"), [cst.Name(names.state[src.task])]),
                            body=cst.IndentedBlock(run)))
    else:
        run[0] = run[0].with_changes(leading_lines=[*lead, *notes])
        stmts.extend(run)
    stmts.append(_assign(names.group_states[gid], _call(
        _attr(rt, "copy_states"), [cst.Name(names.copies[gid])],
        [("members", codegen.literal(members(ir, gid)))])))
    return stmts


def _group_def(ir: Pipeline, group: Group, names: Names) -> cst.FunctionDef:
    """A group as a module-level subflow: its body is built like the pipeline's over
    ``children(ir, group)``; it returns every member's state and raises ``GroupFailed`` (which
    carries them) when the group ran and failed: that is what marks the subflow run Failed,
    has Prefect retry it and fires its ``on_failure`` hook."""
    rt = names.rt
    gid = group.id
    stmts: list[cst.BaseStatement] = []
    doc = group.doc.strip() or f"The sub-pipeline {group.pipeline!r}."
    if group.map_over is not None:
        doc += "\n\n" + textwrap.fill(
            f"Called as group {gid!r} once per item of {group.map_over!r} (copy i is the subflow "
            f"run {gid}[i]): gives this copy's task states back to the caller, raises if one "
            "failed.", 92)
    else:
        doc += "\n\n" + textwrap.fill(f"Called as group {gid!r}: gives its tasks' states back "
                                      "to the caller, raises if one failed.", 92)
    stmts.append(_docstring(doc))
    stmts.append(_rt_import(rt))
    body, entries = _scope_body(ir, gid, names)
    stmts.extend(body)
    outside = subflow_inputs(ir, gid)
    inside = members(ir, gid)
    all_entries: list[cst.BaseDictElement] = [
        cst.DictElement(codegen.literal(u), cst.Name(names.state[u])) for u in outside]
    all_entries += entries
    edges = {t.id: t.upstream() for t in _in_topo(ir, inside) if t.upstream()}
    kwargs: list[tuple[str, cst.BaseExpression]] = [("members", codegen.literal(inside))]
    if edges:
        kwargs.append(("upstream", codegen.literal(edges)))
    stmts.append(cst.SimpleStatementLine([cst.Return(_call(
        _attr(rt, "end_group"), [cst.Dict(all_entries)], kwargs))]).with_changes(
            leading_lines=[cst.EmptyLine()]))

    # the run is named after the group: two calls of one sub-pipeline stay apart in the UI,
    # and the alert hook finds its group by it (a plain string is formatted with the
    # parameters: prefect/_internal/engine.py ~48 resolve_custom_flow_run_name; a group id has
    # no braces); a mapped group's copy i is ``<group>[i]``, from its map_index parameter
    mapped = group.map_over is not None
    deco: list[tuple[str, cst.BaseExpression]] = [
        ("name", codegen.literal(group.pipeline)),
        ("flow_run_name", codegen.literal(gid + "[{map_index}]" if mapped else gid)),
    ]
    if group.retries:  # the whole group again, in the same subflow run (flow retries)
        deco.append(("retries", codegen.literal(group.retries)))
        if group.retry_delay:
            deco.append(("retry_delay_seconds", codegen.literal(int(group.retry_delay))))
    events = {ev for a in group.alerts for ev in a.on}
    if "failure" in events:
        deco.append(("on_failure", cst.List([cst.Element(cst.Name("group_alerts"))])))
    if "success" in events:
        deco.append(("on_completion", cst.List([cst.Element(cst.Name("group_alerts"))])))
    params = [cst.Param(cst.Name(names.item[gid]))] if mapped else []
    params += [cst.Param(cst.Name(names.state[u])) for u in outside]
    params += [cst.Param(codegen.name(p)) for p in params_read(ir, gid)]
    if mapped:
        params.append(cst.Param(cst.Name("map_index"), annotation=cst.Annotation(cst.Name("int"))))
    return cst.FunctionDef(
        name=cst.Name(names.group_fn[gid]),
        params=cst.Parameters(params=params),
        body=cst.IndentedBlock(stmts),
        decorators=[cst.Decorator(_call(cst.Name("flow"), kwargs=deco))],
        leading_lines=[cst.EmptyLine(), cst.EmptyLine()],
    )


def _ancestors(ir: Pipeline, tid: str) -> list[str]:
    """Every task ``tid`` waits for, directly or not, in topological order."""
    seen: set[str] = set()
    todo = list(ir.task(tid).upstream())
    while todo:
        t = todo.pop()
        if t not in seen:
            seen.add(t)
            todo.extend(ir.task(t).upstream())
    return [t for t in ir.topo_order() if t in seen]


def _arg_expr(name: str, inp: Any, names: Names) -> cst.BaseExpression:
    if isinstance(inp, OutputInput):
        return cst.Name(names.state[inp.task])
    if isinstance(inp, ParamInput):
        return cst.Name(inp.name)
    if isinstance(inp, ElementInput):  # the item this copy of the group runs for
        return cst.Name(names.item[inp.group])
    raise TypeError(inp)


def _task_call(t: Task, names: Names) -> list[cst.BaseStatement]:
    rt = names.rt
    fn: cst.BaseExpression = cst.Name(names.task_fn[t.id])
    if t.id in names.shared:  # an earlier task's function, run as this task
        copied = t.group is not None and names.item.get(t.group) is not None
        fn = _call(_attr(names.shared[t.id], "with_options"), kwargs=[
            ("name", codegen.literal(t.id)),
            ("task_run_name", codegen.literal(_run_name(t, copied)))])
    engine = [(n, inp) for n, inp in t.inputs.items() if not isinstance(inp, LiteralInput)]
    # the tasks whose files it reads and whose values it does not take: ``wait_for`` records
    # them as the task run's parents (Prefect's graph draws the edge: task_inputs
    # ``__parents__``, prefect/task_engine.py); the flow's guard has already seen them complete
    fed = {inp.task for _, inp in engine if isinstance(inp, OutputInput)}
    producers = [p for p in dict.fromkeys(s.task for s in t.artifacts.values()
                                          if s.task is not None) if p not in fed]
    wait_for = (("wait_for", cst.List([cst.Element(cst.Name(names.state[p])) for p in producers]))
                if producers else None)
    if not t.map_over:
        kwargs = [(n, _arg_expr(n, inp, names)) for n, inp in engine]
        if t.group is not None and names.item.get(t.group) is not None:
            kwargs.append(("map_index", cst.Name("map_index")))  # the copy, from the subflow
        if wait_for is not None:
            kwargs.append(wait_for)
        kwargs.append(("return_state", cst.Name("True")))
        return [_assign(names.state[t.id], _call(fn, kwargs=kwargs))]
    # Fan-out: the list is read in the flow, each element becomes one task run ``task[i]``.
    src = t.inputs[t.map_over]
    if isinstance(src, OutputInput):
        args: list[cst.BaseExpression] = [cst.Name(names.state[src.task])]
        if src.path:
            args.append(codegen.literal(list(src.path)))
        items = _call(_attr(rt, "items"), args)
    elif isinstance(src, ParamInput):
        args = [cst.Name(src.name)]
        if src.path:
            args.append(codegen.literal(list(src.path)))
        items = _call(_attr(rt, "items"), args, [("is_state", cst.Name("False"))])
    else:
        literal = _subscript(_subscript(_subscript(cst.Name("SPECS"), codegen.literal(t.id)),
                                        codegen.literal("literals")), codegen.literal(t.map_over))
        items = _call(_attr(rt, "items"), [literal], [("is_state", cst.Name("False"))])
    items_name = names.items[t.id]
    kwargs = []
    for n, inp in engine:
        if n == t.map_over:
            continue
        kwargs.append((n, _call(cst.Name("unmapped"), [_arg_expr(n, inp, names)])))
    kwargs.insert(0, (t.map_over, cst.Name(items_name)))
    kwargs.append(("map_index", _call(cst.Name("range"), [
        _call(cst.Name("len"), [cst.Name(items_name)])])))
    if t.max_parallel is not None:  # a slot each: rt.map_limited submits as runs finish
        limited = _call(_attr(rt, "map_limited"), [fn, codegen.literal(t.max_parallel)],
                        kwargs=kwargs)
        return [_assign(items_name, items), _assign(names.state[t.id], limited)]
    if wait_for is not None:
        kwargs.append(wait_for)
    mapped = _call(cst.Attribute(fn, cst.Name("map")), kwargs=kwargs)
    return [
        _assign(items_name, items),
        _assign(names.state[t.id], _call(_attr(rt, "wait"), [mapped])),
    ]
