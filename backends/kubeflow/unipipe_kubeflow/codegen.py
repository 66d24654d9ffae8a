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

Lightweight components ship their function's *source* in the container command, so the body
imports the adapter itself and holds the spec as a literal (module globals do not travel).
Identifiers come from validated IR ids; every user string goes through ``codegen.literal``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import libcst as cst

from unipipe.compiler import codegen as cg
from unipipe.compiler.spec import pipeline_alerts_spec, task_spec
from unipipe.ir.models import Condition, LiteralInput, OutputInput, ParamInput, Pipeline, Task
from unipipe_kubeflow import mapping

DEFAULT_IMAGE = "python:3.11"
ALERTS_COMPONENT = "unipipe_pipeline_alerts"
#: the function that brings the code package into a component compiled with a shared store
CODE_FUNCTION = "unipipe_code"
_RESERVED = {"dsl", "kubernetes", "compiler", "run_component", "pipeline_alerts", ALERTS_COMPONENT,
             CODE_FUNCTION}

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
    ann = cst.Annotation(cst.parse_expression(annotation) if isinstance(annotation, str) else annotation)
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
        returns=cst.Annotation(cst.parse_expression(returns)) if returns else None,
        leading_lines=[cst.EmptyLine(), cst.EmptyLine()],
    )


# ---------------------------------------------------------------- naming


@dataclass
class Names:
    component: dict[str, str]
    task: dict[str, str]
    item: dict[str, str]  # the ParallelFor loop variable of a mapped task
    pipeline: str
    shared: dict[str, bool]  # task id -> its component serves several tasks


def names_for(ir: Pipeline, groups: dict[str, list[str]]) -> Names:
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
    return Names(component, task, item, pipeline, shared)


# ---------------------------------------------------------------- components

#: the argument that tells a shared component which IR task it runs
TASK_ID_ARG = "unipipe_task_id"


def component_groups(ir: Pipeline, plans: dict[str, mapping.TaskPlan], sources: set[str],
                     default_image: str) -> dict[str, list[str]]:
    """Tasks that can share one component: same function, spec (but for the id), inputs,
    output kind, shim duties and image. kfp's compiler is O(components x tasks) and writes one
    executor per component, so a pipeline that calls one task 1000 times must not become 1000
    components; the shared component learns its task id from a constant argument."""
    groups: dict[str, list[str]] = {}
    for task in ir.tasks:
        spec = {k: v for k, v in task_spec(ir, task).items() if k != "id"}
        inputs = [(a, *mapping.input_kind(ir, task, a, sources)) for a in mapping.component_inputs(task)]
        key = json.dumps([spec, inputs, plans[task.id].output_kind, plans[task.id].emulate,
                          _image(ir, task, default_image)], sort_keys=True, default=str)
        groups.setdefault(key, []).append(task.id)
    return {members[0]: members for members in groups.values()}



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


def _component_decorator(image: str, ir: Pipeline) -> cst.Call:
    """``@dsl.component``. Without a store the image provides kfp, unipipe and the user's
    modules; with one, KFP installs kfp (its default) and the store's fsspec packages at start,
    and :data:`CODE_FUNCTION` brings the rest from the store."""
    if ir.store is None:
        return _call(_attr("dsl", "component"),
                     kwargs=[("base_image", cg.literal(image)),
                             ("install_kfp_package", cg.literal(False))])
    from unipipe.store import worker_packages

    return _call(_attr("dsl", "component"),
                 kwargs=[("base_image", cg.literal(image)),
                         ("packages_to_install", cg.literal(worker_packages(ir.store))),
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
    spec = task_spec(ir, task)
    extra: list[tuple[str, cst.BaseExpression]] = []
    if shared:
        del spec["id"]
        params.append(_param(TASK_ID_ARG, "str"))
        extra.append(("task_id", cg.name(TASK_ID_ARG)))
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
                 decorator=_component_decorator(_image(ir, task, default_image), ir))


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
    tasks: list[str]
    children: dict[Condition, _Scope]


def _scope_tree(ir: Pipeline, conds: dict[str, tuple[Condition, ...]]) -> _Scope:
    root = _Scope([], {})
    left_out = set(never_runs(ir))
    for tid in ir.topo_order():
        if tid in left_out:
            continue
        scope = root
        for c in conds[tid]:
            scope = scope.children.setdefault(c, _Scope([], {}))
        scope.tasks.append(tid)
    return root


def _task_arg(ir: Pipeline, task: Task, arg: str, names: Names) -> cst.BaseExpression:
    inp = task.inputs[arg]
    if arg == task.map_over:
        return cg.name(names.item[task.id])
    if isinstance(inp, OutputInput):
        ref = _attr(names.task[inp.task], "output")
        if ir.task(inp.task).map_over is not None:
            return _call(_attr("dsl", "Collected"), ref)
        return ref
    if isinstance(inp, ParamInput):
        return cg.name(inp.name)
    raise AssertionError(arg)


def _task_statements(ir: Pipeline, task: Task, names: Names, plan: mapping.TaskPlan) -> list[cst.BaseStatement]:
    var = names.task[task.id]
    pol = ir.effective(task)
    kwargs = [(a, _task_arg(ir, task, a, names)) for a in mapping.component_inputs(task)]
    if names.shared.get(task.id):
        kwargs.append((TASK_ID_ARG, cg.literal(task.id)))
    call = _call(cg.name(names.component[task.id]), kwargs=kwargs)
    out: list[cst.BaseStatement] = [_assign(var, call)]

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
    for dep in task.after:
        method("after", cg.name(names.task[dep]))
    if task.run_if == "all_done":
        # triggerPolicy ALL_UPSTREAM_TASKS_COMPLETED: runs once its upstream tasks are in any
        # final state (kfp/compiler/pipeline_spec_builder.py ~1584); run_if tasks take no task
        # outputs (IR validation), so no input can be missing
        method("ignore_upstream_failure")
    if task.map_over is not None:
        src = task.inputs[task.map_over]
        items: cst.BaseExpression
        if isinstance(src, OutputInput):
            items = _attr(names.task[src.task], "output")
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


def _condition_expr(ir: Pipeline, cond: Condition, names: Names, sources: set[str]) -> cst.BaseExpression:
    kind = mapping.output_kind(ir, ir.task(cond.task), sources)
    expected = cond.expect if kind == "bool" else json.dumps(cond.expect)
    return _call(_attr("dsl", "If"), cst.Comparison(
        _attr(names.task[cond.task], "output"),
        [cst.ComparisonTarget(cst.Equal(), cg.literal(expected))]))


def _emit_scope(ir: Pipeline, scope: _Scope, names: Names, plans: dict[str, mapping.TaskPlan],
                sources: set[str]) -> list[cst.BaseStatement]:
    body: list[cst.BaseStatement] = []
    for tid in scope.tasks:
        body.extend(_task_statements(ir, ir.task(tid), names, plans[tid]))
    paired: set[Condition] = set()
    for cond, child in scope.children.items():
        if cond in paired:
            continue
        body.append(_with(_condition_expr(ir, cond, names, sources),
                          _emit_scope(ir, child, names, plans, sources)))
        other = _else_of(cond)
        if not cond.otherwise and other in scope.children:
            # up.otherwise(): dsl.Else right after its dsl.If (kfp/dsl/tasks_group.py ~340:
            # it negates the conditions of the last group, which must be a dsl.If)
            paired.add(other)
            body.append(_with(_call(_attr("dsl", "Else")),
                              _emit_scope(ir, scope.children[other], names, plans, sources)))
    return body


def pipeline_def(ir: Pipeline, names: Names, plans: dict[str, mapping.TaskPlan],
                 sources: set[str]) -> cst.FunctionDef:
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
    body: list[cst.BaseStatement] = []
    if ir.description:
        body.append(_docstring(ir.description))
    tasks = _emit_scope(ir, _scope_tree(ir, effective_conditions(ir)), names, plans, sources)
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
    names = names_for(ir, groups)
    uses_timeout = any(p.deadline is not None for p in plans.values())
    imports: list[cst.BaseStatement] = [
        cst.SimpleStatementLine([cst.ImportFrom(module=cst.Name("kfp"),
                                                names=[cst.ImportAlias(cst.Name("dsl"))])]),
    ]
    if uses_timeout:
        imports.append(cst.SimpleStatementLine([cst.ImportFrom(
            module=cst.Name("kfp"), names=[cst.ImportAlias(cst.Name("kubernetes"))])]))
    body: list[cst.BaseStatement] = list(imports)
    if ir.store is not None:
        code_fn = cst.parse_statement(CODE_FUNCTION_SOURCE.strip() + "\n")
        body.append(code_fn.with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()]))
    if ir.alerts:
        body.append(alerts_component_def(ir, default_image))
    for first, members in groups.items():
        body.append(component_def(ir, ir.task(first), names, plans[first], sources, default_image,
                                  shared=len(members) > 1))
    body.append(pipeline_def(ir, names, plans, sources))
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
                "recurring run.")
    mod = cg.module(body, header=cg.header_lines(target="kubeflow", target_version=target_version,
                                                 ir_hash=ir.ir_hash(), pipeline=ir.name),
                    docstring=doc)
    return cg.render(mod), plans, names
