"""Semantic validation of a Pipeline beyond what the models' own field checks do.

Everything found is reported at once, each problem with the user's file, line and field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from unipipe.ir.errors import PipelineError, Problem, line_of
from unipipe.ir.models import (
    COMMAND_FN,
    DictValue,
    ElementInput,
    Group,
    ListValue,
    LiteralInput,
    OutputInput,
    ParamInput,
    Pipeline,
    Task,
)

_PY_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
             "dict": (dict,), "list": (list,)}


def check_cron(expr: str) -> str | None:
    """Return None if ``expr`` is a valid 5-field cron or preset, else the reason."""
    from croniter import croniter

    presets = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}
    if expr in presets:
        return None
    if len(expr.split()) != 5:
        return f"cron {expr!r} must have 5 fields (minute hour day month weekday) or be a preset"
    if not croniter.is_valid(expr):
        return f"cron {expr!r} is not a valid cron expression"
    return None


def _json_problem(value: object) -> str | None:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"value is not JSON-serialisable: {exc}"
    del text
    return None


def _type_ok(ptype: str, value: object) -> bool:
    if ptype == "any" or value is None:
        return True
    allowed = _PY_TYPES[ptype]
    if ptype in ("int", "float") and isinstance(value, bool):
        return False
    return isinstance(value, allowed)


def validate(ir: Pipeline, *, file: str | None = None, text: str = "") -> Pipeline:
    """Raise PipelineError listing every problem; return the pipeline unchanged if it is valid.

    ``file``/``text`` name the IR document a pipeline came from, so problems in a document
    without source locations still point at a line of it.
    """
    problems: list[Problem] = []
    pfile = ir.location.file if ir.location else (file or "<pipeline>")
    pline = ir.location.line if ir.location else 0

    def at(task: Task | None, field: str, message: str) -> None:
        if task is not None and task.location is not None:
            problems.append(Problem(message, task.location.file, task.location.line, field))
        elif text:
            parts = tuple(p.split("[")[0] for p in field.split("."))
            problems.append(Problem(message, pfile, line_of(text, parts), field))
        else:
            problems.append(Problem(message, pfile, pline, field))

    # params
    seen_params: set[str] = set()
    for p in ir.params:
        if p.name in seen_params:
            at(None, f"params.{p.name}", f"duplicate parameter name {p.name!r}")
        seen_params.add(p.name)
        if not _type_ok(p.type, p.default):
            at(None, f"params.{p.name}.default",
               f"default {p.default!r} does not match the declared type {p.type}")
        if isinstance(p.default, float) and not math.isfinite(p.default):
            at(None, f"params.{p.name}.default", "default must be a finite number")

    # tasks
    ids: dict[str, Task] = {}
    for t in ir.tasks:
        if t.id in ids:
            at(t, f"tasks.{t.id}.id", f"duplicate task id {t.id!r}")
        ids[t.id] = t
    by_id = ids

    groups_by_id = {g.id: g for g in ir.groups}

    def check_value(task: Task | None, field: str, value: object) -> None:
        if isinstance(value, ElementInput):
            g = groups_by_id.get(value.group)
            if g is None or g.map_over is None:
                at(task, field, f"reads the item of {value.group!r}, which is not a mapped "
                   "sub-pipeline")
            elif task is None or task.group != value.group:
                at(task, field, f"the item of the mapped sub-pipeline {value.group!r} is read "
                   "only by its own tasks")
        elif isinstance(value, OutputInput):
            if value.task not in by_id:
                at(task, field, f"references unknown task {value.task!r}")
            elif task is not None and value.task == task.id:
                at(task, field, "a task cannot take its own output as input")
        elif isinstance(value, ParamInput):
            if value.name not in seen_params:
                at(task, field, f"references unknown parameter {value.name!r}")
        elif isinstance(value, LiteralInput):
            reason = _json_problem(value.value)
            if reason:
                at(task, field, reason)
        elif isinstance(value, ListValue):
            for i, item in enumerate(value.items):
                check_value(task, f"{field}[{i}]", item)
        elif isinstance(value, DictValue):
            for k, item in value.items.items():
                check_value(task, f"{field}.{k}", item)

    for t in ir.tasks:
        for name, inp in t.inputs.items():
            check_value(t, f"tasks.{t.id}.inputs.{name}", inp)
        for dep in t.after:
            if dep not in by_id:
                at(t, f"tasks.{t.id}.after", f"after() names unknown task {dep!r}")
            elif dep == t.id:
                at(t, f"tasks.{t.id}.after", "a task cannot run after itself")
        for i, cond in enumerate(t.when):
            field = f"tasks.{t.id}.when[{i}]"
            if cond.task not in by_id:
                at(t, field, f"condition on unknown task {cond.task!r}")
                continue
            src = by_id[cond.task]
            if not cond.path and src.returns not in (None, "bool", "any"):
                at(t, field, f"condition on task {cond.task!r}, whose output is "
                   f"{src.returns}, not bool; a condition needs a task that returns bool")
        if t.map_over is not None:
            field = f"tasks.{t.id}.inputs.{t.map_over}"
            src_inp = t.inputs[t.map_over]
            if isinstance(src_inp, LiteralInput) and not isinstance(src_inp.value, list):
                at(t, field, "map() needs a list to fan out over")
            if isinstance(src_inp, ParamInput) and src_inp.name in seen_params and not src_inp.path:
                ptype = ir.param(src_inp.name).type
                if ptype not in ("list", "any"):
                    at(t, field, f"map() over parameter {src_inp.name!r} of type {ptype}")
            if isinstance(src_inp, OutputInput) and src_inp.task in by_id and not src_inp.path:
                rtype = by_id[src_inp.task].returns
                if rtype not in (None, "list", "any"):
                    at(t, field, f"map() over task {src_inp.task!r} whose output is {rtype}")
        if t.run_if != "all_success":
            field = f"tasks.{t.id}.run_if"
            if not t.upstream():
                at(t, field, f"run_if={t.run_if!r} on a task with no upstream task; order it "
                   "after the tasks it follows with .after(...)")
            for name, inp in t.inputs.items():
                if isinstance(inp, OutputInput):
                    at(t, f"tasks.{t.id}.inputs.{name}",
                       f"a run_if={t.run_if!r} task cannot take the output of task "
                       f"{inp.task!r}: that task may have failed and produced none; order it "
                       "with .after(...) and pass data through parameters or the store")
            if t.when:
                at(t, field, f"a run_if={t.run_if!r} task cannot sit inside up.when() or "
                   "up.otherwise(); put the cleanup outside the block")
        _check_artifacts(ir, t, by_id, at)
        if t.command is not None:
            _check_command(t, at)
        elif t.env:
            at(t, f"tasks.{t.id}.env", "env is set only on a command task (up.command)")
        pol = t.policies
        if pol.retry is not None and pol.retry.max_delay is not None:
            if pol.retry.max_delay < pol.retry.delay:
                at(t, f"tasks.{t.id}.retry.max_delay", "max_delay is shorter than delay")

    if ir.output is not None:
        check_value(None, "output", ir.output)

    _check_groups(ir, by_id, problems, at)

    if ir.schedule is not None and ir.schedule.cron is not None:
        reason = check_cron(ir.schedule.cron)
        if reason:
            at(None, "schedule", reason)
    if ir.schedule is not None:
        from unipipe.schedules import problems as schedule_problems

        for where, reason in schedule_problems(ir.schedule):
            at(None, where, reason)
    if ir.trigger is not None:
        own = {uri: t for t in ir.tasks for uri in t.produces}
        for uri in ir.trigger.assets:
            if uri in own:
                at(own[uri], f"tasks.{own[uri].id}.produces", f"pipeline {ir.name!r} is "
                   f"triggered by {uri!r} and updates it itself: each run would start the next")

    # cycles (only meaningful when references resolve)
    if not problems:
        try:
            ir.topo_order()
        except ValueError:
            cycle = _find_cycle(ir)
            first = by_id[cycle[0]]
            at(first, f"tasks.{first.id}", "cycle: " + " -> ".join(cycle + [cycle[0]]))

    if problems:
        raise PipelineError(problems)
    return ir


def _check_groups(ir: Pipeline, by_id: dict[str, Task], problems: list[Problem],
                  at: Callable[[Task | None, str, str], None]) -> None:
    """Sub-pipelines: known, unique, nested without a loop, each one unit to the tasks around
    it (no task outside a group both after one member and before another)."""
    from unipipe.ir.groups import children

    known: set[str] = set()
    before = len(problems)
    for g in ir.groups:
        field = f"groups.{g.id}"

        def here(message: str, field: str = field, g: Group = g) -> None:
            if g.location is not None:
                problems.append(Problem(message, g.location.file, g.location.line, field))
            else:
                at(None, field, message)

        if g.id in known:
            here(f"duplicate sub-pipeline id {g.id!r}")
        if g.id in by_id:
            here(f"sub-pipeline id {g.id!r} is also a task id")
        if g.parent is not None and g.parent not in known:
            here(f"parent {g.parent!r} is not a sub-pipeline listed before this one")
        known.add(g.id)
    for t in ir.tasks:
        if t.group is not None and t.group not in known:
            at(t, f"tasks.{t.id}.group", f"names unknown sub-pipeline {t.group!r}")
    if len(problems) > before or not ir.groups:
        return
    for g in ir.groups:
        if g.map_over is not None:
            _check_mapped_group(ir, g, by_id, problems, at)
    if len(problems) > before:
        return
    try:
        ir.topo_order()
    except ValueError:
        return  # a plain cycle, reported below
    for gid in [None, *known]:
        try:
            children(ir, gid)
        except ValueError as exc:
            at(None, f"groups.{gid}" if gid else "groups",
               f"{exc}: a task outside a sub-pipeline is both after one of its tasks and "
               "before another; a sub-pipeline runs as one unit")
            return


def _check_mapped_group(ir: Pipeline, g: Group, by_id: dict[str, Task],
                        problems: list[Problem],
                        at: Callable[[Task | None, str, str], None]) -> None:
    """What a mapped sub-pipeline may hold today: tasks in a chain or a fan-in, each run once
    per item; no blocks, cleanups, maps or sub-pipelines inside, no group retries or alerts."""
    from unipipe.ir.groups import ancestry, in_group

    field = f"groups.{g.id}"

    def here(message: str, where: str = field) -> None:
        if g.location is not None:
            problems.append(Problem(message, g.location.file, g.location.line, where))
        else:
            at(None, where, message)

    if g.retries or g.alerts:
        here("a mapped sub-pipeline takes no retries= or alerts= of its own yet; set them on "
             "its tasks")
    if any(ir.group(a).map_over for a in ancestry(ir, g.parent)):
        here("a mapped sub-pipeline cannot sit inside another mapped one")
    items = g.items
    if isinstance(items, LiteralInput) and not isinstance(items.value, list):
        here("map() needs a list to fan out over", f"{field}.items")
    elif isinstance(items, OutputInput):
        if items.task not in by_id:
            here(f"items from unknown task {items.task!r}", f"{field}.items")
        elif in_group(ir, items.task, g.id):
            here("a mapped sub-pipeline cannot fan out over its own task's output",
                 f"{field}.items")
    elif isinstance(items, ParamInput) and items.name not in {p.name for p in ir.params}:
        here(f"items from unknown parameter {items.name!r}", f"{field}.items")
    for t in ir.tasks:
        if t.group != g.id:
            if t.group is not None and g.id in ancestry(ir, t.group):
                at(t, f"tasks.{t.id}.group", "a mapped sub-pipeline holds tasks only: no "
                   "sub-pipeline can be called inside it")
            continue
        if t.when:
            at(t, f"tasks.{t.id}.when", "up.when() is not supported inside a mapped "
               "sub-pipeline yet")
        if t.run_if != "all_success":
            at(t, f"tasks.{t.id}.run_if", f"run_if={t.run_if!r} is not supported inside a "
               "mapped sub-pipeline yet")
        if t.map_over is not None:
            at(t, f"tasks.{t.id}.map_over", "a task inside a mapped sub-pipeline cannot be "
               "mapped itself (no nested fan-out)")


def _check_artifacts(ir: Pipeline, t: Task, by_id: dict[str, Task],
                     at: Callable[[Task | None, str, str], None]) -> None:
    """Input artifacts come from a task that declares that output, outside mapped parts."""
    mapped_groups = {g.id for g in ir.groups if g.map_over is not None}
    for name, slot in t.artifacts.items():
        field = f"tasks.{t.id}.artifacts.{name}"
        if name in t.inputs:
            at(t, field, f"{name!r} is both a value input and an artifact")
        if slot.direction == "output":
            if t.map_over is not None or t.group in mapped_groups:
                at(t, field, f"task {t.id!r} runs once per element: output artifacts of mapped "
                   "tasks are not supported yet (return values are)")
            continue
        if slot.task is None:
            continue
        src = by_id.get(slot.task)
        if src is None:
            at(t, field, f"input artifact from unknown task {slot.task!r}")
            continue
        out = src.artifacts.get(slot.output or "")
        if out is None or out.direction != "output":
            at(t, field, f"task {slot.task!r} has no output artifact {slot.output!r}")
        elif "Artifact" not in (out.type, slot.type) and out.type != slot.type:
            at(t, field, f"{slot.task}.outputs[{slot.output!r}] is a {out.type}; this parameter "
               f"takes up.Input[up.{slot.type}]")
        if t.run_if != "all_success":
            at(t, field, f"a run_if={t.run_if!r} task cannot read an artifact of task "
               f"{slot.task!r}: that task may have failed and written none")
    if t.command is not None and (t.artifacts or t.packages):
        at(t, f"tasks.{t.id}", "a command task runs an argv: artifacts and packages belong to "
           "Python tasks")


def _check_command(t: Task, at: Callable[[Task | None, str, str], None]) -> None:
    """A command task: a program, placeholders that parse, one input per placeholder name."""
    from unipipe.runtime.command import PlaceholderError, placeholders

    field = f"tasks.{t.id}.command"
    if t.fn != COMMAND_FN:
        at(t, f"tasks.{t.id}.fn", f"a command task's fn is {COMMAND_FN!r}, not {t.fn!r}")
    if not t.command:
        at(t, field, "a command needs at least the program to run: command=['prog', ...]")
    elif not t.command[0].strip():
        at(t, f"{field}[0]", "the program (the first item) is empty")
    used: set[str] = set()
    for key, value in t.env.items():
        if "\x00" in value:
            at(t, f"tasks.{t.id}.env.{key}", "an environment value cannot hold a NUL character")
    for i, item in enumerate(t.command or ()):
        if "\x00" in item:
            at(t, f"{field}[{i}]", "an argument cannot hold a NUL character")
            continue
        try:
            names = placeholders(item)
        except PlaceholderError as exc:
            at(t, f"{field}[{i}]", str(exc))
            continue
        for name in names:
            if name not in t.inputs and name not in used:
                at(t, f"{field}[{i}]", f"placeholder {{{name}}} has no input: pass {name}=... "
                   f"when calling {t.id}")
            used.add(name)
    for name in t.inputs:
        if name not in used:
            at(t, f"tasks.{t.id}.inputs.{name}", f"input {name!r} is used by no placeholder of "
               f"the command (write '{{{name}}}' in an argument, or drop the input)")


def _find_cycle(ir: Pipeline) -> list[str]:
    graph = {t.id: t.upstream() for t in ir.tasks}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return stack[stack.index(dep):]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return list(reversed(found))
    return []
