"""The KFP v2 Python module for one IR pipeline, built as a libcst tree.

Shape of the output (one component per IR task, so each carries its own task spec)::

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def train_model(features: str, learning_rate: float) -> str:
        '''Runs examples.ml_training:train_model through the unipipe runtime.'''
        from unipipe_kubeflow.adapter import run_component

        return run_component(spec={...}, inputs={...}, codecs={...}, output="json", emulate=[...])

    @dsl.pipeline(name="ml-training")
    def ml_training_pipeline(n_rows: int = 200, ...):
        ...
        train_model_task = train_model(features=compute_features_task.output, ...)
        train_model_task.set_display_name("train_model")
        train_model_task.set_retry(num_retries=2)
        ...

File artifacts are KFP's own: a task's ``up.Input[up.Dataset]`` / ``up.Output[up.Model]``
parameters become ``Input[Dataset]`` / ``Output[Model]`` component parameters (kfp.dsl), wired
``producer_task.outputs["model"]`` (a fixed URI through ``dsl.importer``); a task that calls
up.log_metric / up.report gets the hidden outputs ``unipipe_metrics: Output[Metrics]`` /
``unipipe_report: Output[Markdown]``. The body hands all of them to the shim (``artifacts=``),
and a task's ``packages`` join ``packages_to_install``.

Lightweight components ship their function's *source* in the container command, so the body
imports the adapter itself and holds the spec as a literal (module globals do not travel).
Identifiers come from validated IR ids; every user string goes through ``codegen.literal``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import libcst as cst

from unipipe.compiler import codegen as cg
from unipipe.compiler.spec import group_alerts_spec, pipeline_alerts_spec, task_spec
from unipipe.ir.groups import Node, ancestry, children
from unipipe.ir.groups import members as group_members
from unipipe.ir.models import (
    Condition,
    ElementInput,
    Group,
    LiteralInput,
    OutputInput,
    ParamInput,
    Pipeline,
    Task,
)
from unipipe_kubeflow import mapping

DEFAULT_IMAGE = "python:3.11"
ALERTS_COMPONENT = "unipipe_pipeline_alerts"
#: the function that brings the code package into a component compiled with a shared store
CODE_FUNCTION = "unipipe_code"
#: the kfp.dsl names a module with file artifacts imports (as KFP users write them)
ARTIFACT_NAMES = ("Input", "Output", "Artifact", "Dataset", "Model", "Metrics", "Markdown")
_RESERVED = {"dsl", "kubernetes", "compiler", "run_component", "pipeline_alerts", "group_alerts",
             "NamedTuple", ALERTS_COMPONENT, CODE_FUNCTION, *ARTIFACT_NAMES}

#: Its source. A lightweight component ships only its function's source, plus the functions
#: named in ``additional_funcs`` (kfp/dsl/component_factory.py ``_get_function_source_definition``
#: and ``additional_funcs`` in component_decorator.py ~51), so the code package is fetched by a
#: function of its own, given to each component. Standard library and fsspec only: KFP's
#: ``packages_to_install`` prelude installs fsspec and the store's implementation first.
CODE_FUNCTION_SOURCE = f'''
def {CODE_FUNCTION}(pointer: str):
    """Put the pipeline's code package (unipipe, unipipe-kubeflow and the pipeline's own modules,
    as wheels) on sys.path, fetched from the shared store where `unipipe deploy` or `unipipe run`
    published it; nothing to do where the image has them already."""
    import importlib.util
    import io
    import sys
    import tempfile
    import zipfile

    if importlib.util.find_spec("unipipe_kubeflow") is not None:
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(pointer)
    if not fs.exists(path):
        raise RuntimeError(
            f"no code package was published for this pipeline at {{pointer}}: deploy it with "
            "`unipipe deploy --to kubeflow|vertex --store ...`, or use an image that has unipipe"
        )
    fs, folder = fsspec.core.url_to_fs(fs.cat_file(path).decode())
    target = tempfile.mkdtemp(prefix="unipipe-code-")
    for wheel in sorted(fs.ls(folder, detail=False)):
        if wheel.endswith(".whl"):
            with zipfile.ZipFile(io.BytesIO(fs.cat_file(wheel))) as zf:
                zf.extractall(target)
    sys.path.insert(0, target)
'''


# ---------------------------------------------------------------- small node builders


def _attr(obj: cst.BaseExpression | str, *names: str) -> cst.BaseExpression:
    node = cg.name(obj) if isinstance(obj, str) else obj
    for n in names:
        node = cst.Attribute(node, cst.Name(n))
    return node


def _call(func: cst.BaseExpression, *args: cst.BaseExpression,
          kwargs: Iterable[tuple[str, cst.BaseExpression]] = ()) -> cst.Call:
    return cst.Call(func, [cst.Arg(a) for a in args]
                    + [cst.Arg(v, keyword=cst.Name(k)) for k, v in kwargs])


def _line(node: cst.BaseSmallStatement | cst.BaseExpression) -> cst.SimpleStatementLine:
    if isinstance(node, cst.BaseExpression):
        node = cst.Expr(node)
    return cst.SimpleStatementLine([node])


def _assign(target: str, value: cst.BaseExpression) -> cst.SimpleStatementLine:
    return _line(cst.Assign([cst.AssignTarget(cg.name(target))], value))


def _docstring(text: str) -> cst.SimpleStatementLine:
    return _line(cst.SimpleString(cg._docstring(text)))


def _with(item: cst.BaseExpression, body: list[cst.BaseStatement], asname: str | None = None) -> cst.With:
    return cst.With(
        [cst.WithItem(item, asname=cst.AsName(cg.name(asname)) if asname else None)],
        cst.IndentedBlock(body or [_line(cst.Pass())]),
    )


def _param(name: str, annotation: str | cst.BaseExpression, default: Any = ..., *,
           default_node: cst.BaseExpression | None = None) -> cst.Param:
    ann = cst.Annotation(cg.parse_expression(annotation) if isinstance(annotation, str) else annotation)
    if default_node is None and default is not ...:
        default_node = cg.literal(default)
    return cst.Param(cg.name(name), annotation=ann, default=default_node)


def _func(name: str, params: list[cst.Param], body: list[cst.BaseStatement], *,
          returns: str | None, decorator: cst.BaseExpression) -> cst.FunctionDef:
    return cst.FunctionDef(
        name=cg.name(name),
        params=cst.Parameters(params=params),
        body=cst.IndentedBlock(body),
        decorators=[cst.Decorator(decorator)],
        returns=cst.Annotation(cg.parse_expression(returns)) if returns else None,
        leading_lines=[cst.EmptyLine(), cst.EmptyLine()],
    )


# ---------------------------------------------------------------- naming


@dataclass
class GroupNames:
    """The Python names of one sub-pipeline (an IR group)."""

    func: str  # its @dsl.pipeline function
    task: str  # the variable of its call in the enclosing pipeline
    outputs: str | None  # the NamedTuple it returns (None: nothing is read outside it)
    alerts: str | None  # the component that delivers its alerts (None: it has none)
    alerts_task: str  # the variable of that component's task
    #: outside task id -> the parameter that brings its output in (pipeline parameters keep
    #: their own names)
    inputs: dict[str, str]
    #: a mapped sub-pipeline (``sub.map``): the ParallelFor loop variable around its call, the
    #: parameter its function takes the item as, and, for items from a pipeline parameter, the
    #: component that turns the parameter's JSON text into the list ParallelFor iterates
    item: str = ""
    element: str = ""
    items: str | None = None
    items_task: str = ""


@dataclass
class Names:
    component: dict[str, str]
    task: dict[str, str]
    item: dict[str, str]  # the ParallelFor loop variable of a mapped task
    pipeline: str
    shared: dict[str, bool]  # task id -> its component serves several tasks
    group: dict[str, GroupNames]
    #: "task.param" -> the variable of the dsl.importer task that brings a fixed-URI input
    importer: dict[str, str] = field(default_factory=dict)


def _camel(identifier: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in identifier.split("_") if part)


def _unique(base: str, taken: set[str]) -> str:
    """``base``, or ``base`` with underscores after it, not in ``taken`` (then added to it)."""
    while base in taken:
        base += "_"
    taken.add(base)
    return base


def names_for(ir: Pipeline, groups: dict[str, list[str]],
              outputs: dict[str, list[str]] | None = None) -> Names:
    """Python names for everything the module defines; ``outputs``: what each sub-pipeline
    returns (:attr:`GroupPlan.outputs`)."""
    outputs = outputs or {}
    taken = set(_RESERVED) | {p.name for p in ir.params}

    def fresh(base: str) -> str:
        candidate = base
        while candidate in taken:
            candidate += "_"
        taken.add(candidate)
        return candidate

    pipeline = fresh("".join(c if c.isalnum() else "_" for c in ir.name).strip("_").lower()
                     + "_pipeline")
    if not pipeline[0].isalpha():
        pipeline = "p_" + pipeline
    component = {}
    for members in groups.values():
        shared = fresh(members[0])
        component.update({tid: shared for tid in members})
    task = {t.id: fresh(f"{t.id}_task") for t in ir.tasks}
    item = {t.id: fresh(f"{t.map_over}_item") for t in ir.tasks if t.map_over}
    shared = {tid: len(members) > 1 for members in groups.values() for tid in members}
    group: dict[str, GroupNames] = {}
    for g in ir.groups:
        group[g.id] = GroupNames(
            func=fresh(f"{g.id}_pipeline"), task=fresh(f"{g.id}_task"),
            outputs=fresh(f"{_camel(g.id)}Outputs") if outputs.get(g.id) else None,
            alerts=fresh(f"{g.id}_alerts") if g.alerts else None,
            alerts_task=fresh(f"{g.id}_alerts_task") if g.alerts else "", inputs={})
        if g.map_over is not None:
            group[g.id].item = fresh(f"{g.map_over}_item")
            if isinstance(g.items, ParamInput):
                group[g.id].items = fresh(f"{g.id}_items")
                group[g.id].items_task = fresh(f"{g.id}_items_task")
    for g in ir.groups:
        # a parameter is local to its function: unique there, and shadowing no module name
        local = set(taken)
        for tid in group_inputs(ir, g.id)[0]:
            group[g.id].inputs[tid] = _unique(f"{tid}_output", local)
        if g.map_over is not None:
            group[g.id].element = _unique(g.map_over, local)
    importer = {f"{t.id}.{name}": fresh(f"{t.id}_{name}_importer")
                for t in ir.tasks for name, slot in t.artifacts.items() if slot.uri is not None}
    return Names(component, task, item, pipeline, shared, group, importer)


# ---------------------------------------------------------------- sub-pipelines


def group_inputs(ir: Pipeline, group_id: str) -> tuple[list[str], list[str]]:
    """What a sub-pipeline takes in: the outside tasks whose output its tasks read (inner
    groups' tasks included, topological order) and the pipeline parameters they read. An
    outside task it only waits for (``.after``, a condition) is not an input: the call site
    waits for it (``.after``) or sits in its ``dsl.If``."""
    inside = group_members(ir, group_id)
    inside_set = set(inside)
    tasks: set[str] = set()
    params: set[str] = set()
    for tid in inside:
        for inp in ir.task(tid).inputs.values():
            if isinstance(inp, OutputInput) and inp.task not in inside_set:
                tasks.add(inp.task)
            elif isinstance(inp, ParamInput):
                params.add(inp.name)
    for g in ir.groups:
        # a mapped sub-pipeline called inside this one: its ParallelFor, in this body, reads
        # the items (its own call site reads them in its parent's body, not in its function)
        if g.id != group_id and group_id in ancestry(ir, g.id):
            if isinstance(g.items, OutputInput) and g.items.task not in inside_set:
                tasks.add(g.items.task)
            elif isinstance(g.items, ParamInput):
                params.add(g.items.name)
    return ([t for t in ir.topo_order() if t in tasks],
            [p.name for p in ir.params if p.name in params])


def holder(ir: Pipeline, task_id: str, scope: str | None) -> Node | None:
    """The node of ``scope``'s body (None: the pipeline's) that holds the task: the task
    itself or the inner group it is in; None if the task is outside ``scope``."""
    chain = ancestry(ir, ir.task(task_id).group)
    if scope is None:
        return Node("group", chain[-1]) if chain else Node("task", task_id)
    if scope not in chain:
        return None
    i = chain.index(scope)
    return Node("group", chain[i - 1]) if i > 0 else Node("task", task_id)


@dataclass
class GroupPlan:
    """How the sub-pipelines nest in KFP: what each one's call sits under, returns, and what
    KFP could not express."""

    conds: dict[str, tuple[Condition, ...]]  # effective_conditions(ir)
    #: group id -> the conditions its call sits under in its parent's body (a dsl.If around
    #: the call): those every one of its tasks runs under, less those of the calls around it
    sites: dict[str, tuple[Condition, ...]]
    #: group id -> the tasks whose output it returns (read outside it), topological order
    outputs: dict[str, list[str]]
    problems: list[tuple[str, str]]  # (task or group id, why KFP cannot express it)

    def around(self, ir: Pipeline, scope: str | None) -> list[Condition]:
        """Conditions applied outside ``scope``'s body (at its call site and around it)."""
        return [c for gid in ancestry(ir, scope) for c in self.sites[gid]]

    def local(self, ir: Pipeline, task: Task) -> tuple[Condition, ...]:
        """The conditions a task is tested under inside its own (sub-)pipeline function."""
        around = self.around(ir, task.group)
        return tuple(c for c in self.conds[task.id] if c not in around)


def group_plan(ir: Pipeline) -> GroupPlan:
    """Reads across sub-pipeline boundaries and what KFP makes of them.

    Every value a body reads (a task's input, a group call's argument, the output a dsl.If
    tests) comes from a task of that body, from an inner group's returned outputs, or from the
    body's own inputs. KFP returns a pipeline's outputs only from the top level of its
    function, not from inside a dsl.If (``validate_pipeline_outputs_dict``,
    kfp/compiler/pipeline_spec_builder.py ~2022-2040), and no task outside a dsl.If may read a
    task inside it (kfp/compiler/compiler_utils.py ~755-760); a dsl.If inside a sub-pipeline can
    only test a value of that sub-pipeline.
    """
    conds = effective_conditions(ir)
    sites: dict[str, tuple[Condition, ...]] = {}
    for g in ir.groups:  # outer groups first
        inside = group_members(ir, g.id)
        around = {c for gid in ancestry(ir, g.parent) for c in sites[gid]}
        sites[g.id] = tuple(c for c in (conds[inside[0]] if inside else ())
                            if c not in around and all(c in conds[m] for m in inside))
    plan = GroupPlan(conds, sites, {g.id: [] for g in ir.groups}, [])
    if not ir.groups:
        return plan
    # (value's task, the body that reads it, "data" | "condition", who reads it)
    reads: list[tuple[str, str | None, str, str]] = []
    for t in ir.tasks:
        for inp in t.inputs.values():
            if isinstance(inp, OutputInput):
                reads.append((inp.task, t.group, "data", f"task {t.id}"))
        reads += [(c.task, t.group, "condition", f"task {t.id}") for c in plan.local(ir, t)]
    for g in ir.groups:
        reads += [(x, g.parent, "data", f"sub-pipeline {g.id}") for x in group_inputs(ir, g.id)[0]]
        if isinstance(g.items, OutputInput):  # the ParallelFor around a mapped one's call
            reads.append((g.items.task, g.parent, "data", f"sub-pipeline {g.id}"))
            gated = [c for c in conds[g.items.task] if c not in sites[g.id]
                     and c not in {c for gid in ancestry(ir, g.parent) for c in sites[gid]}]
            if gated:
                plan.problems.append((f"sub-pipeline {g.id}", f"is mapped over {g.items.task}, "
                                      "which runs under up.when(): call the sub-pipeline "
                                      "inside the same up.when()"))
        reads += [(c.task, g.parent, "condition", f"sub-pipeline {g.id}") for c in sites[g.id]]
    returned: dict[str, set[str]] = {g.id: set() for g in ir.groups}
    for x, scope, kind, who in reads:
        h = holder(ir, x, scope)
        if h is None:
            if kind == "condition":
                plan.problems.append((who, f"runs under a condition on {x}, outside its "
                                      "sub-pipeline, that not all of the sub-pipeline's tasks "
                                      "run under: call the whole sub-pipeline inside up.when()"))
            continue  # a data input: the call site passes it in
        if h.kind == "task":
            continue
        tested = {c for c in conds[x] if c not in plan.around(ir, scope)} - set(sites[h.id])
        if tested:
            plan.problems.append((who, f"reads {x}, which runs under up.when() inside "
                                  f"sub-pipeline {h.id}: KFP returns a sub-pipeline's outputs "
                                  "only from the top level of its function, not from a dsl.If"))
        chain = ancestry(ir, ir.task(x).group)
        for gid in chain[:chain.index(h.id) + 1]:
            returned[gid].add(x)
    for g in ir.groups:
        plan.outputs[g.id] = [t for t in ir.topo_order() if t in returned[g.id]]
        plan.problems += [(f"task {t}", f"is read outside sub-pipeline {g.id}, whose outputs "
                           "are NamedTuple fields, which cannot start with an underscore")
                          for t in plan.outputs[g.id] if t.startswith("_")]
        if not group_members(ir, g.id) or set(group_members(ir, g.id)) <= set(never_runs(ir)):
            plan.problems.append((f"sub-pipeline {g.id}", "none of its tasks can run: KFP "
                                  "refuses a pipeline without tasks"))
    return plan


# ---------------------------------------------------------------- components

#: the argument that tells a shared component which IR task it runs
TASK_ID_ARG = "unipipe_task_id"
#: a scheduled pipeline's hidden parameter (a backfilled run's logical date, "" otherwise) and
#: the component input KFP fills with the run's schedule time
LOGICAL_DATE_ARG = "unipipe_logical_date"
SCHEDULE_TIME_ARG = "unipipe_schedule_time"


def takes_logical_date(ir: Pipeline) -> bool:
    """A scheduled pipeline's components receive the run's logical date as two inputs: the
    hidden pipeline parameter :data:`LOGICAL_DATE_ARG` (``unipipe backfill`` sets it: KFP fills
    the schedule-time placeholder of a run created by hand with its creation time) and
    :data:`SCHEDULE_TIME_ARG` = ``dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER`` (the KFP
    driver resolves it in a task input's constant: a recurring run's fire time). Only there:
    the values differ per run, so they would change every KFP cache key (such tasks are
    cached by the shim, mapping.plan_task)."""
    return ir.schedule is not None


def component_groups(ir: Pipeline, plans: dict[str, mapping.TaskPlan], sources: set[str],
                     default_image: str) -> dict[str, list[str]]:
    """Tasks that can share one component: same function, spec (but for the id), inputs,
    output kind, shim duties and image. kfp's compiler is O(components x tasks) and writes one
    executor per component, so a pipeline that calls one task 1000 times must not become 1000
    components; the shared component learns its task id from a constant argument."""
    groups: dict[str, list[str]] = {}
    for task in ir.tasks:
        spec = {k: v for k, v in component_spec(ir, task).items() if k != "id"}
        inputs = [(a, *mapping.input_kind(ir, task, a, sources)) for a in mapping.component_inputs(task)]
        key = json.dumps([spec, inputs, plans[task.id].output_kind, plans[task.id].emulate,
                          _image(ir, task, default_image),
                          mapping.mapped_group(ir, task) is not None],
                         sort_keys=True, default=str)
        groups.setdefault(key, []).append(task.id)
    return {members[0]: members for members in groups.values()}



def component_spec(ir: Pipeline, task: Task) -> dict[str, Any]:
    """The task spec a component carries. KFP wires input artifacts itself (the pipeline passes
    ``producer.outputs[name]`` or an importer's output), so an input slot keeps only its type:
    two calls of one function reading different producers share one component."""
    spec = task_spec(ir, task)
    slots = spec.get("artifacts")
    if slots and slots.get("in"):
        spec["artifacts"] = {**slots, "in": {name: {"type": slot["type"]}
                                             for name, slot in slots["in"].items()}}
    return spec


def artifact_params(task: Task) -> list[tuple[str, str]]:
    """The component's artifact parameters, (name, annotation): the declared ones, then the
    hidden Metrics/Markdown outputs that carry up.log_metric / up.report (KFP records only
    what a declared output holds)."""
    from unipipe.runtime.artifacts import METRICS_SLOT, REPORT_SLOT

    out = [(name, f"{'Input' if slot.direction == 'input' else 'Output'}[{slot.type}]")
           for name, slot in task.artifacts.items()]
    if "metrics" in task.logs:
        out.append((METRICS_SLOT, "Output[Metrics]"))
    if "report" in task.logs:
        out.append((REPORT_SLOT, "Output[Markdown]"))
    return out


def has_named_outputs(task: Task) -> bool:
    """The component has outputs besides its return value (``Output``): KFP's ``task.output``
    then raises, its value is ``task.outputs["Output"]`` (kfp/dsl/pipeline_task.py, output)."""
    return bool(task.logs) or any(s.direction == "output" for s in task.artifacts.values())


def _image(ir: Pipeline, task: Task | None, default_image: str) -> str:
    if task is not None:
        image = ir.effective(task).image
        if image:
            return image
    return ir.defaults.image or default_image


def code_pointer(ir: Pipeline) -> str | None:
    """With a shared store, where each component finds its code package at start (None: the
    image must provide it)."""
    from unipipe.sandbox import code_pointer as pointer

    return pointer(ir.store, ir.ir_hash()) if ir.store is not None else None


def _component_decorator(image: str, ir: Pipeline, packages: Iterable[str] = ()) -> cst.Call:
    """``@dsl.component``. Without a store the image provides kfp, unipipe and the user's
    modules; with one, KFP installs kfp (its default) and the store's fsspec packages at start,
    and :data:`CODE_FUNCTION` brings the rest from the store. A task's ``packages`` join
    ``packages_to_install``: KFP pip-installs them at every start of the container, before the
    function runs (kfp/dsl/component_factory.py ~126-212), and a failed install fails the task."""
    packages = list(packages)
    if ir.store is None:
        kwargs = [("base_image", cg.literal(image))]
        if packages:
            kwargs.append(("packages_to_install", cg.literal(packages)))
        kwargs.append(("install_kfp_package", cg.literal(False)))
        return _call(_attr("dsl", "component"), kwargs=kwargs)
    from unipipe.store import worker_packages

    merged = list(worker_packages(ir.store))
    merged += [p for p in packages if p not in merged]
    return _call(_attr("dsl", "component"),
                 kwargs=[("base_image", cg.literal(image)),
                         ("packages_to_install", cg.literal(merged)),
                         ("additional_funcs", cst.List([cst.Element(cg.name(CODE_FUNCTION))]))])


def _code_line(ir: Pipeline) -> list[cst.BaseStatement]:
    pointer = code_pointer(ir)
    if pointer is None:
        return []
    return [_line(_call(cg.name(CODE_FUNCTION), cg.literal(pointer)))]


def component_def(ir: Pipeline, task: Task, names: Names, plan: mapping.TaskPlan,
                  sources: set[str], default_image: str, *, shared: bool = False) -> cst.FunctionDef:
    args = mapping.component_inputs(task)
    if shared and TASK_ID_ARG in args:
        raise ValueError(f"task {task.id}: input name {TASK_ID_ARG!r} is reserved")
    params, codecs = [], {}
    for arg in args:
        annotation, codec = mapping.input_kind(ir, task, arg, sources)
        params.append(_param(arg, annotation))
        if codec != "raw":
            codecs[arg] = codec
    spec = component_spec(ir, task)
    extra: list[tuple[str, cst.BaseExpression]] = []
    arts = artifact_params(task)
    params += [_param(name, annotation) for name, annotation in arts]
    if arts:
        # KFP's artifact objects (.path, .uri, .metadata), which the shim hands the function
        extra.append(("artifacts", cst.Dict([cst.DictElement(cg.literal(n), cg.name(n))
                                             for n, _ in arts])))
    if shared:
        del spec["id"]
        params.append(_param(TASK_ID_ARG, "str"))
        extra.append(("task_id", cg.name(TASK_ID_ARG)))
    if takes_logical_date(ir):
        params += [_param(LOGICAL_DATE_ARG, "str"), _param(SCHEDULE_TIME_ARG, "str")]
        extra.append(("logical_date", cst.BooleanOperation(
            cg.name(LOGICAL_DATE_ARG), cst.Or(), cg.name(SCHEDULE_TIME_ARG))))
    if mapping.mapped_group(ir, task) is not None:
        # runs once per item of a mapped sub-pipeline: the adapter reports each copy as
        # task[i], i the loop iteration (the spec has no map_over: the group fans out)
        extra.append(("element", cg.literal(True)))
    returns = {"items": "list", "json": "str"}.get(plan.output_kind, plan.output_kind)
    # A command task is a Python component like any other: the shim runs its argv without a
    # shell and its stdout's last line is the output. A dsl.container_component returns only
    # its ContainerSpec, its outputs being OutputPath files the program itself writes
    # (kfp/dsl/component_factory.py ~319-330), so it could not return stdout.
    body = [
        _docstring((f"Runs {task.fn}" if task.command is None else
                    "Runs the command in the spec below (each item one argument, no shell)")
                   + " through the unipipe runtime"
                   + (" (shared by several tasks of the pipeline)." if shared else ".")),
        *_code_line(ir),
        cst.SimpleStatementLine([cst.ImportFrom(
            module=_attr("unipipe_kubeflow", "adapter"),
            names=[cst.ImportAlias(cst.Name("run_component"))])],
            leading_lines=[]),
        cst.SimpleStatementLine([cst.Return(_call(
            cg.name("run_component"),
            kwargs=[
                ("spec", cg.literal(spec)),
                ("inputs", cst.Dict([cst.DictElement(cg.literal(a), cg.name(a)) for a in args])),
                ("codecs", cg.literal(codecs)),
                ("output", cg.literal(plan.output_kind)),
                ("emulate", cg.literal(list(plan.emulate))),
                *extra,
            ]))], leading_lines=[cst.EmptyLine()]),
    ]
    return _func(names.component[task.id], params, body, returns=returns,
                 decorator=_component_decorator(_image(ir, task, default_image), ir,
                                                task.packages))


def items_component_def(ir: Pipeline, group: Group, names: Names,
                        default_image: str) -> cst.FunctionDef:
    """For a sub-pipeline mapped over a pipeline parameter: the parameter's JSON text as the
    list of JSON texts ``dsl.ParallelFor`` iterates (as a task output mapped over travels,
    mapping.output_kind "items"). Standard library only: it needs no unipipe."""
    name = names.group[group.id].items
    assert name is not None
    body = [
        _docstring(f"The items of mapped sub-pipeline {group.id}, one JSON text each."),
        _line(cst.Import([cst.ImportAlias(cst.Name("json"))])),
        cst.SimpleStatementLine([cst.Return(cst.parse_expression(
            "[json.dumps(item) for item in json.loads(items)]"))],
            leading_lines=[cst.EmptyLine()]),
    ]
    return _func(name, [_param("items", "str")], body, returns="list",
                 decorator=_component_decorator(_image(ir, None, default_image), ir))


def alerts_component_def(ir: Pipeline, default_image: str) -> cst.FunctionDef:
    body = [
        _docstring("Exit handler: delivers the pipeline's alerts once the run has finished."),
        *_code_line(ir),
        cst.SimpleStatementLine([cst.ImportFrom(
            module=_attr("unipipe_kubeflow", "adapter"),
            names=[cst.ImportAlias(cst.Name("pipeline_alerts"))])]),
        cst.SimpleStatementLine([cst.Expr(_call(
            cg.name("pipeline_alerts"),
            kwargs=[("alerts", cg.literal(pipeline_alerts_spec(ir))),
                    ("pipeline", cg.literal(ir.name)),
                    ("status", cg.name("status"))]))], leading_lines=[cst.EmptyLine()]),
    ]
    return _func(ALERTS_COMPONENT, [_param("status", _attr("dsl", "PipelineTaskFinalStatus"))],
                 body, returns=None,
                 decorator=_component_decorator(_image(ir, None, default_image), ir))


# ---------------------------------------------------------------- the pipeline body


def effective_conditions(ir: Pipeline) -> dict[str, tuple[Condition, ...]]:
    """Conditions a task runs under: its own plus every upstream task's (a consumer of a skipped
    task is skipped, rule 6 of the reference runner), so it sits inside the same dsl.If."""
    out: dict[str, tuple[Condition, ...]] = {}
    for tid in ir.topo_order():
        task = ir.task(tid)
        conds: list[Condition] = []
        for up in task.upstream():
            for c in out[up]:
                if c not in conds:
                    conds.append(c)
        for c in task.when:
            if c not in conds:
                conds.append(c)
        out[tid] = tuple(conds)
    return out


def never_runs(ir: Pipeline) -> list[str]:
    """Tasks under both branches of one test (after an up.when() block and its up.otherwise()
    one): one of the two is always skipped, so they are skipped (the reference runner's rule
    6). KFP could not nest them in a dsl.If and its dsl.Else at once: they are left out of the
    pipeline, and the result reports them skipped, as for any task that never started."""
    out = []
    for tid, conds in effective_conditions(ir).items():
        tests = {(c.task, c.path, c.expect) for c in conds}
        if any((t, p, not e) in tests for t, p, e in tests):
            out.append(tid)
    return out


@dataclass
class _Scope:
    nodes: list[Node]  # tasks and sub-pipeline calls of one body, under the same dsl.If tests
    children: dict[Condition, _Scope]


def _scope_tree(ir: Pipeline, gp: GroupPlan, scope: str | None) -> _Scope:
    """The dsl.If nesting of one body: the pipeline's (None) or a sub-pipeline's."""
    root = _Scope([], {})
    left_out = set(never_runs(ir))
    if ir.groups:
        nodes = children(ir, scope)
    else:  # the order of pipelines without sub-pipelines, as before them
        nodes = [Node("task", tid) for tid in ir.topo_order()]
    for node in nodes:
        if node.kind == "task":
            if node.id in left_out:
                continue
            tests = gp.local(ir, ir.task(node.id))
        else:
            if set(group_members(ir, node.id)) <= left_out:
                continue
            tests = gp.sites[node.id]
        level = root
        for c in tests:
            level = level.children.setdefault(c, _Scope([], {}))
        level.nodes.append(node)
    return root


def _ref(ir: Pipeline, task_id: str, scope: str | None, names: Names) -> cst.BaseExpression:
    """A task's output as the body of ``scope`` sees it: its own task's ``.output``
    (``dsl.Collected`` for a fan-out), an inner sub-pipeline's returned output, or the
    parameter that brought it into this sub-pipeline."""
    node = holder(ir, task_id, scope)
    if node is None:
        assert scope is not None
        return cg.name(names.group[scope].inputs[task_id])
    if node.kind == "group":
        out = cst.Subscript(_attr(names.group[node.id].task, "outputs"),
                            [cst.SubscriptElement(cst.Index(cg.literal(task_id)))])
        if ir.group(node.id).map_over is not None:
            # a mapped sub-pipeline's task, read after its ParallelFor: every copy's value,
            # in item order (kfp/compiler/compiler_utils.py ~366-411 accepts Collected of a
            # graph component's output read outside the loop; the loop DAG's output is then
            # a LIST, valueFromParameter of the sub-pipeline's task)
            return _call(_attr("dsl", "Collected"), out)
        return out
    ref = _output(ir, task_id, names)
    if ir.task(task_id).map_over is not None:
        return _call(_attr("dsl", "Collected"), ref)
    return ref


def _output(ir: Pipeline, task_id: str, names: Names) -> cst.BaseExpression:
    """A task's return value: ``.output``, or ``.outputs["Output"]`` when its component also
    has artifact outputs."""
    if has_named_outputs(ir.task(task_id)):
        return cst.Subscript(_attr(names.task[task_id], "outputs"),
                             [cst.SubscriptElement(cst.Index(cg.literal("Output")))])
    return _attr(names.task[task_id], "output")


def _var(ir: Pipeline, task_id: str, scope: str | None, names: Names) -> str | None:
    """The variable a body waits on for a task (``.after``): its task or the inner
    sub-pipeline call holding it; None outside the body (the call site waits instead)."""
    node = holder(ir, task_id, scope)
    if node is None:
        return None
    return names.task[task_id] if node.kind == "task" else names.group[node.id].task


def _task_arg(ir: Pipeline, task: Task, arg: str, names: Names) -> cst.BaseExpression:
    inp = task.inputs[arg]
    if arg == task.map_over:
        return cg.name(names.item[task.id])
    if isinstance(inp, ElementInput):
        return cg.name(names.group[inp.group].element)  # the item this copy runs for
    if isinstance(inp, OutputInput):
        return _ref(ir, inp.task, task.group, names)
    if isinstance(inp, ParamInput):
        return cg.name(inp.name)
    raise AssertionError(arg)


def _task_statements(ir: Pipeline, task: Task, names: Names, plan: mapping.TaskPlan) -> list[cst.BaseStatement]:
    var = names.task[task.id]
    pol = ir.effective(task)
    kwargs = [(a, _task_arg(ir, task, a, names)) for a in mapping.component_inputs(task)]
    out: list[cst.BaseStatement] = []
    for name, slot in task.artifacts.items():
        if slot.direction != "input":
            continue
        if slot.uri is not None:
            # an existing file: KFP's importer makes it an artifact of the run
            # (kfp/dsl/importer_node.py; the OSS driver records it without a container)
            imp = names.importer[f"{task.id}.{name}"]
            out.append(_assign(imp, _call(_attr("dsl", "importer"), kwargs=[
                ("artifact_uri", cg.literal(slot.uri)),
                ("artifact_class", _attr("dsl", slot.type))])))
            out.append(_line(_call(_attr(imp, "set_display_name"),
                                   cg.literal(f"{task.id} {name} importer"))))
            kwargs.append((name, _attr(imp, "output")))
        else:
            assert slot.task is not None and slot.output is not None
            kwargs.append((name, cst.Subscript(
                _attr(names.task[slot.task], "outputs"),
                [cst.SubscriptElement(cst.Index(cg.literal(slot.output)))])))
    if names.shared.get(task.id):
        kwargs.append((TASK_ID_ARG, cg.literal(task.id)))
    if takes_logical_date(ir):
        kwargs.append((LOGICAL_DATE_ARG, cg.name(LOGICAL_DATE_ARG)))
        kwargs.append((SCHEDULE_TIME_ARG, _attr("dsl", "PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER")))
    call = _call(cg.name(names.component[task.id]), kwargs=kwargs)
    out.append(_assign(var, call))

    def method(name: str, *args: cst.BaseExpression, **kw: cst.BaseExpression) -> None:
        out.append(_line(_call(_attr(var, name), *args, kwargs=kw.items())))

    method("set_display_name", cg.literal(task.id))
    method("set_caching_options", cg.literal(plan.native_cache))
    if plan.retry is not None:
        kw: dict[str, cst.BaseExpression] = {"num_retries": cg.literal(plan.retry.num_retries)}
        if plan.retry.backoff_duration is not None:
            kw["backoff_duration"] = cg.literal(f"{plan.retry.backoff_duration}s")
            kw["backoff_factor"] = cg.literal(plan.retry.backoff_factor)
        method("set_retry", **kw)
    res = pol.resources
    if res is not None:
        if res.cpu:
            method("set_cpu_limit", cg.literal(res.cpu))
        if res.memory:
            method("set_memory_limit", cg.literal(res.memory))
        if res.gpu:
            method("set_accelerator_type", cg.literal(res.gpu_type or "nvidia.com/gpu"))
            method("set_accelerator_limit", cg.literal(res.gpu))
    if plan.deadline is not None:
        out.append(_line(_call(_attr("kubernetes", "set_timeout"), cg.name(var),
                               cg.literal(plan.deadline))))
    waits: list[str] = []
    for dep in task.after:
        dep_var = _var(ir, dep, task.group, names)
        if dep_var is not None and dep_var not in waits:
            waits.append(dep_var)
            method("after", cg.name(dep_var))
    if task.run_if == "all_done":
        # triggerPolicy ALL_UPSTREAM_TASKS_COMPLETED: runs once its upstream tasks are in any
        # final state (kfp/compiler/pipeline_spec_builder.py ~1584); run_if tasks take no task
        # outputs (IR validation), so no input can be missing
        method("ignore_upstream_failure")
    if task.map_over is not None:
        src = task.inputs[task.map_over]
        items: cst.BaseExpression
        if isinstance(src, OutputInput):
            items = _ref(ir, src.task, task.group, names)
        else:
            assert isinstance(src, LiteralInput)
            items = cg.literal([json.dumps(v) for v in src.value])  # type: ignore[union-attr]
        loop = [("items", items)]
        if task.max_parallel is not None:
            # iteratorPolicy.parallelismLimit of the loop (kfp/compiler/
            # pipeline_spec_builder.py ~999): at most N iterations scheduled at once
            loop.append(("parallelism", cg.literal(task.max_parallel)))
        return [_with(_call(_attr("dsl", "ParallelFor"), kwargs=loop), out,
                      asname=names.item[task.id])]
    return out


def _else_of(cond: Condition) -> Condition:
    """The up.otherwise() condition that pairs with an up.when() one."""
    return cond.model_copy(update={"expect": not cond.expect, "otherwise": True})


def _condition_expr(ir: Pipeline, cond: Condition, names: Names, sources: set[str],
                    scope: str | None) -> cst.BaseExpression:
    kind = mapping.output_kind(ir, ir.task(cond.task), sources)
    expected = cond.expect if kind == "bool" else json.dumps(cond.expect)
    return _call(_attr("dsl", "If"), cst.Comparison(
        _ref(ir, cond.task, scope, names),
        [cst.ComparisonTarget(cst.Equal(), cg.literal(expected))]))


def _group_call(ir: Pipeline, group: Group, names: Names) -> list[cst.BaseStatement]:
    """A sub-pipeline called in its parent's body: the call (its inputs from there), the
    tasks it waits for without reading them, and its alerts task."""
    gn = names.group[group.id]
    tasks, params = group_inputs(ir, group.id)
    kwargs = [(gn.inputs[t], _ref(ir, t, group.parent, names)) for t in tasks]
    kwargs += [(p, cg.name(p)) for p in params]
    if takes_logical_date(ir):
        kwargs.append((LOGICAL_DATE_ARG, cg.name(LOGICAL_DATE_ARG)))
    if group.map_over is not None:
        kwargs.insert(0, (gn.element, cg.name(gn.item)))
    out: list[cst.BaseStatement] = [
        _assign(gn.task, _call(cg.name(gn.func), kwargs=kwargs)),
        _line(_call(_attr(gn.task, "set_display_name"), cg.literal(group.id))),
    ]
    inside = set(group_members(ir, group.id))
    waits: list[str] = []
    for tid in group_members(ir, group.id):
        for dep in ir.task(tid).after:
            dep_var = None if dep in inside else _var(ir, dep, group.parent, names)
            if dep_var is not None and dep_var not in waits:
                waits.append(dep_var)
                out.append(_line(_call(_attr(gn.task, "after"), cg.name(dep_var))))
    if gn.alerts is not None:
        # The group's alerts: a task after the call that takes its PipelineTaskFinalStatus.
        # kfp allows that input on an ignore_upstream_failure() task with exactly one upstream
        # task, and points it at that task (kfp/compiler/pipeline_spec_builder.py ~1584-1619);
        # the KFP backend compiles such a task as an exit lifecycle hook of that task
        # (kubeflow/pipelines backend/src/v2/compiler/argocompiler/dag.go, DAG(): tasks with
        # ALL_UPSTREAM_TASKS_COMPLETED "need to be set as lifecycle hooks"), so it runs once,
        # when the sub-pipeline has ended. A dsl.ExitHandler around the call cannot be used:
        # no task outside it may read or wait for a task inside it (compiler_utils.py ~755).
        var = gn.alerts_task
        out += [
            _assign(var, _call(cg.name(gn.alerts))),
            _line(_call(_attr(var, "set_display_name"), cg.literal(f"{group.id} alerts"))),
            _line(_call(_attr(var, "set_caching_options"), cg.literal(False))),
            _line(_call(_attr(var, "after"), cg.name(gn.task))),
            _line(_call(_attr(var, "ignore_upstream_failure"))),
        ]
    if group.map_over is not None:
        return _mapped_call(ir, group, names, out)
    return out


def _mapped_call(ir: Pipeline, group: Group, names: Names,
                 call: list[cst.BaseStatement]) -> list[cst.BaseStatement]:
    """A mapped sub-pipeline (``sub.map(x=items, max_parallel=N)``): its call inside a
    ``dsl.ParallelFor`` over the items, so each item runs the whole sub-pipeline once (a copy
    is one iteration of the loop's DAG, kfp/compiler/pipeline_spec_builder.py: the loop task's
    ``parameterIterator``; the sub-pipeline's task inside it)."""
    gn = names.group[group.id]
    src = group.items
    out: list[cst.BaseStatement] = []
    items: cst.BaseExpression
    if isinstance(src, OutputInput):
        items = _ref(ir, src.task, group.parent, names)  # an "items" output: a LIST
    elif isinstance(src, ParamInput):
        # A pipeline parameter holding a list travels as JSON text (mapping.param_annotation),
        # and kfp refuses to loop over a STRING ("Cannot iterate over a single parameter",
        # kfp/dsl/for_loop.py ~195-203): a component turns it into the list first
        assert gn.items is not None
        out += [
            _assign(gn.items_task, _call(cg.name(gn.items), kwargs=[("items", cg.name(src.name))])),
            _line(_call(_attr(gn.items_task, "set_display_name"),
                        cg.literal(f"{group.id} items"))),
        ]
        items = _attr(gn.items_task, "output")
    else:
        assert isinstance(src, LiteralInput)
        items = cg.literal([json.dumps(v) for v in src.value])  # type: ignore[union-attr]
    loop = [("items", items)]
    if group.max_parallel is not None:
        # iteratorPolicy.parallelismLimit of the loop (kfp/compiler/pipeline_spec_builder.py
        # ~999): at most N copies of the sub-pipeline scheduled at once
        loop.append(("parallelism", cg.literal(group.max_parallel)))
    out.append(_with(_call(_attr("dsl", "ParallelFor"), kwargs=loop), call, asname=gn.item))
    return out


def _emit_scope(ir: Pipeline, scope: _Scope, names: Names, plans: dict[str, mapping.TaskPlan],
                sources: set[str], body_of: str | None = None) -> list[cst.BaseStatement]:
    body: list[cst.BaseStatement] = []
    for node in scope.nodes:
        if node.kind == "task":
            body.extend(_task_statements(ir, ir.task(node.id), names, plans[node.id]))
        else:
            body.extend(_group_call(ir, ir.group(node.id), names))
    paired: set[Condition] = set()
    for cond, child in scope.children.items():
        if cond in paired:
            continue
        body.append(_with(_condition_expr(ir, cond, names, sources, body_of),
                          _emit_scope(ir, child, names, plans, sources, body_of)))
        other = _else_of(cond)
        if not cond.otherwise and other in scope.children:
            # up.otherwise(): dsl.Else right after its dsl.If (kfp/dsl/tasks_group.py ~340:
            # it negates the conditions of the last group, which must be a dsl.If)
            paired.add(other)
            body.append(_with(_call(_attr("dsl", "Else")),
                              _emit_scope(ir, scope.children[other], names, plans, sources,
                                          body_of)))
    return body


def _value_annotation(ir: Pipeline, task_id: str, sources: set[str], scope: str | None) -> str:
    """The KFP type of a task's output where the body of ``scope`` receives or returns it (as
    its consumers' component inputs take it: mapping.input_kind)."""
    task = ir.task(task_id)
    home = mapping.mapped_group(ir, task)
    if task.map_over is not None or (home is not None and home.id != scope):
        return "list"  # dsl.Collected
    kind = mapping.output_kind(ir, task, sources)
    return {"items": "list", "json": "str"}.get(kind, kind)


def group_alerts_component_def(ir: Pipeline, group: Group, names: Names,
                               default_image: str) -> cst.FunctionDef:
    body = [
        _docstring(f"Delivers sub-pipeline {group.id}'s alerts once it has ended."),
        *_code_line(ir),
        cst.SimpleStatementLine([cst.ImportFrom(
            module=_attr("unipipe_kubeflow", "adapter"),
            names=[cst.ImportAlias(cst.Name("group_alerts"))])]),
        cst.SimpleStatementLine([cst.Expr(_call(
            cg.name("group_alerts"),
            kwargs=[("alerts", cg.literal(group_alerts_spec(group))),
                    ("pipeline", cg.literal(ir.name)),
                    ("group", cg.literal(group.id)),
                    ("status", cg.name("status"))]))], leading_lines=[cst.EmptyLine()]),
    ]
    name = names.group[group.id].alerts
    assert name is not None
    return _func(name, [_param("status", _attr("dsl", "PipelineTaskFinalStatus"))],
                 body, returns=None,
                 decorator=_component_decorator(_image(ir, None, default_image), ir))


def group_outputs_def(ir: Pipeline, group: Group, names: Names, gp: GroupPlan,
                      sources: set[str]) -> cst.ClassDef:
    """The NamedTuple a sub-pipeline returns: one field per task output read outside it.
    kfp names a graph component's outputs after the fields (kfp/dsl/component_factory.py
    ~335-350) and wires each to the task that produced it (``valueFromParameter`` of the
    DAG's outputs, pipeline_spec_builder.py ``_build_dag_outputs`` ~537)."""
    name = names.group[group.id].outputs
    assert name is not None
    fields = [_line(cst.AnnAssign(cg.name(t), cst.Annotation(
        cst.parse_expression(_value_annotation(ir, t, sources, group.id)))))
        for t in gp.outputs[group.id]]
    return cst.ClassDef(
        name=cg.name(name), bases=[cst.Arg(cg.name("NamedTuple"))],
        body=cst.IndentedBlock([
            _docstring(f"The outputs of sub-pipeline {group.id} read outside it."), *fields]),
        leading_lines=[cst.EmptyLine(), cst.EmptyLine()])


def group_def(ir: Pipeline, group: Group, names: Names, plans: dict[str, mapping.TaskPlan],
              sources: set[str], gp: GroupPlan) -> cst.FunctionDef:
    """A sub-pipeline as a KFP pipeline used as a component (a graph component,
    kfp/dsl/graph_component.py): its inputs are what its tasks read from outside it, its
    outputs what is read of it outside."""
    gn = names.group[group.id]
    tasks, params = group_inputs(ir, group.id)
    args = [_param(gn.inputs[t], _value_annotation(ir, t, sources, group.id)) for t in tasks]
    args += [_param(p, mapping.param_annotation(ir.param(p).type)) for p in params]
    if takes_logical_date(ir):
        args.append(_param(LOGICAL_DATE_ARG, "str"))
    if group.map_over is not None:
        # the item of this copy: one JSON text of the list the ParallelFor iterates
        args.insert(0, _param(gn.element, "str"))
    body: list[cst.BaseStatement] = []
    if group.doc:
        body.append(_docstring(group.doc))
    body += _emit_scope(ir, _scope_tree(ir, gp, group.id), names, plans, sources, group.id)
    if gn.outputs is not None:
        body.append(cst.SimpleStatementLine([cst.Return(_call(
            cg.name(gn.outputs),
            kwargs=[(t, _ref(ir, t, group.id, names)) for t in gp.outputs[group.id]]))]))
    decorator_kw = [("name", cg.literal(group.pipeline))]
    if group.doc:
        decorator_kw.append(("description", cg.literal(group.doc)))
    return _func(gn.func, args, body, returns=gn.outputs,
                 decorator=_call(_attr("dsl", "pipeline"), kwargs=decorator_kw))


def pipeline_def(ir: Pipeline, names: Names, plans: dict[str, mapping.TaskPlan],
                 sources: set[str], gp: GroupPlan) -> cst.FunctionDef:
    params = []
    required = [p for p in ir.params if p.required] + [p for p in ir.params if not p.required]
    for p in required:
        annotation = mapping.param_annotation(p.type)
        if p.required:
            params.append(_param(p.name, annotation))
        elif annotation == "str" and p.type != "str":
            params.append(_param(p.name, annotation, json.dumps(p.default)))
        else:
            params.append(_param(p.name, annotation, p.default))
    if takes_logical_date(ir):
        params.append(_param(LOGICAL_DATE_ARG, "str", ""))
    body: list[cst.BaseStatement] = []
    if ir.description:
        body.append(_docstring(ir.description))
    tasks = _emit_scope(ir, _scope_tree(ir, gp, None), names, plans, sources)
    if ir.alerts:
        body.append(_assign("pipeline_alerts", _call(cg.name(ALERTS_COMPONENT))))
        body.append(_line(_call(_attr("pipeline_alerts", "set_display_name"),
                                cg.literal("pipeline alerts"))))
        body.append(_line(_call(_attr("pipeline_alerts", "set_caching_options"),
                                cg.literal(False))))
        body.append(_with(_call(_attr("dsl", "ExitHandler"), cg.name("pipeline_alerts")), tasks))
    else:
        body.extend(tasks)
    decorator_kw = [("name", cg.literal(ir.name))]
    if ir.description:
        decorator_kw.append(("description", cg.literal(ir.description)))
    return _func(names.pipeline, params, body or [_line(cst.Pass())], returns=None,
                 decorator=_call(_attr("dsl", "pipeline"), kwargs=decorator_kw))


# ---------------------------------------------------------------- the module


def module_text(ir: Pipeline, *, target_version: str, default_image: str = DEFAULT_IMAGE,
                yaml_name: str) -> tuple[str, dict[str, mapping.TaskPlan], Names]:
    sources = mapping.mapped_sources(ir)
    plans = {t.id: mapping.plan_task(ir, t, sources) for t in ir.tasks}
    groups = component_groups(ir, plans, sources, default_image)
    gp = group_plan(ir)
    names = names_for(ir, groups, gp.outputs)
    uses_timeout = any(p.deadline is not None for p in plans.values())
    imports: list[cst.BaseStatement] = []
    if any(gn.outputs for gn in names.group.values()):
        imports.append(cst.SimpleStatementLine([cst.ImportFrom(
            module=cst.Name("typing"), names=[cst.ImportAlias(cst.Name("NamedTuple"))])],
            trailing_whitespace=cst.TrailingWhitespace()))
    imports.append(cst.SimpleStatementLine(
        [cst.ImportFrom(module=cst.Name("kfp"), names=[cst.ImportAlias(cst.Name("dsl"))])],
        leading_lines=[cst.EmptyLine()] if imports else []))
    if uses_timeout:
        imports.append(cst.SimpleStatementLine([cst.ImportFrom(
            module=cst.Name("kfp"), names=[cst.ImportAlias(cst.Name("kubernetes"))])]))
    used = {part for t in ir.tasks for _, ann in artifact_params(t)
            for part in ann.replace("[", " ").replace("]", " ").split()}
    if used:
        imports.append(cst.SimpleStatementLine([cst.ImportFrom(
            module=_attr("kfp", "dsl"),
            names=[cst.ImportAlias(cst.Name(n)) for n in sorted(used)])]))
    body: list[cst.BaseStatement] = list(imports)
    if ir.store is not None:
        code_fn = cst.parse_statement(CODE_FUNCTION_SOURCE.strip() + "\n")
        body.append(code_fn.with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()]))
    if ir.alerts:
        body.append(alerts_component_def(ir, default_image))
    for g in ir.groups:
        if g.alerts:
            body.append(group_alerts_component_def(ir, g, names, default_image))
        if names.group[g.id].items is not None:
            body.append(items_component_def(ir, g, names, default_image))
    for first, members in groups.items():
        body.append(component_def(ir, ir.task(first), names, plans[first], sources, default_image,
                                  shared=len(members) > 1))
    # @dsl.pipeline runs the function when it decorates it (kfp/dsl/graph_component.py ~62),
    # so a sub-pipeline is defined before the one calling it: inner groups first
    def define(g: Group) -> None:
        for inner in ir.groups:
            if inner.parent == g.id:
                define(inner)
        if names.group[g.id].outputs is not None:
            body.append(group_outputs_def(ir, g, names, gp, sources))
        body.append(group_def(ir, g, names, plans, sources, gp))

    for g in ir.groups:
        if g.parent is None:
            define(g)
    body.append(pipeline_def(ir, names, plans, sources, gp))
    main = cst.If(
        test=cst.parse_expression('__name__ == "__main__"'),
        body=cst.IndentedBlock([
            cst.SimpleStatementLine([cst.ImportFrom(module=cst.Name("kfp"),
                                                    names=[cst.ImportAlias(cst.Name("compiler"))])]),
            _line(_call(_attr(_call(_attr("compiler", "Compiler")), "compile"),
                        cg.name(names.pipeline), cg.literal(yaml_name))),
        ]),
        leading_lines=[cst.EmptyLine(), cst.EmptyLine()],
    )
    body.append(main)
    doc = (f"KFP v2 pipeline {ir.name!r}, compiled from the unipipe IR.\n\n"
           f"Compile with `python {{this file}}` (writes {yaml_name}) or kfp.compiler.Compiler().\n")
    if ir.store is None:
        doc += ("Every component runs its task through unipipe.runtime: the base image must provide\n"
                "kfp, unipipe, unipipe-kubeflow and the pipeline's own modules.")
    else:
        doc += ("Every component runs its task through unipipe.runtime. KFP installs kfp and the\n"
                f"store's fsspec packages at start, then {CODE_FUNCTION}() fetches the code package\n"
                "(unipipe, unipipe-kubeflow, the pipeline's modules) from the store, where\n"
                "`unipipe deploy` publishes it.")
    if ir.schedule is not None:
        sched = f"cron {ir.schedule.cron!r}" if ir.schedule.cron else f"every {ir.schedule.interval:g}s"
        doc += (f"\n\nSchedule ({sched}, {ir.schedule.timezone}): applied when deployed, as a KFP "
                "recurring run.\nEach component gets the run's logical date: unipipe_logical_date "
                "(a backfilled run's),\nelse KFP's schedule time (a recurring run's fire time, a "
                "run by hand: its creation).")
    mod = cg.module(body, header=cg.header_lines(target="kubeflow", target_version=target_version,
                                                 ir_hash=ir.ir_hash(), pipeline=ir.name),
                    docstring=doc)
    return cg.render(mod), plans, names
