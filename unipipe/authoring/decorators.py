"""``@up.task`` and ``@up.pipeline``: tracing plain Python into the IR.

The pipeline function runs once with placeholders (as KFP and Airflow's task SDK do). A task
called inside it records a node and returns a :class:`Ref`; called anywhere else it is the plain
function, so users unit-test tasks directly.
"""

from __future__ import annotations

import contextlib
import functools

from unipipe.authoring.base import Loc, caller_location, fail, import_path, m
from unipipe.runtime.loading import executing

# What a task's module imports inside an attempt (an Airflow task process, a KFP component, a
# Prefect forked child) is this module and unipipe.authoring.base only: the policies, events,
# the IR (pydantic) and most of the standard library used below (inspect, typing, json,
# hashlib) are imported by the functions that trace or check, which an attempt never calls
# (tests/core/test_import_cost.py; comparisons/perf/shim_engines.md). The classes below are
# written out rather than made by @dataclass, which compiles their methods at import (~1 ms a
# class, in every attempt) and imports dataclasses and inspect.
TYPE_CHECKING = False  # type checkers see True
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from unipipe.authoring.policies import Alert, Cache, Defaults, Duration, Resources, Retry

_TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool", dict: "dict", list: "list"}


def type_name(annotation: Any) -> str | None:
    """IR type name of an annotation; None when absent, "any" when not one of the JSON types."""
    import inspect
    import typing

    if annotation is inspect.Parameter.empty or annotation is inspect.Signature.empty:
        return None
    origin = typing.get_origin(annotation) or annotation
    return _TYPE_NAMES.get(origin, "any")


def source_hash(fn: Callable[..., Any]) -> str:
    """sha256 of the function's own source (dedented); falls back to its bytecode."""
    import hashlib
    import inspect
    import textwrap

    try:
        src = textwrap.dedent(inspect.getsource(fn))
        data = src.encode()
    except (OSError, TypeError):
        code = fn.__code__
        data = code.co_code + repr(code.co_consts).encode()
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- references


class Ref:
    """A placeholder for a value that exists only when the pipeline runs."""

    def _input(self) -> m.OutputInput | m.ParamInput:  # pragma: no cover - abstract
        raise NotImplementedError

    def __bool__(self) -> bool:
        raise TypeError(
            "a task output has no value while the pipeline is traced; use `with up.when(ref):` "
            "instead of `if ref:`"
        )

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("a task output cannot be iterated while tracing; fan out with task.map()")


class TaskRef(Ref):
    def __init__(self, builder: _Builder, task: str, path: tuple[str | int, ...] = ()):
        self.builder = builder
        self.task = task
        self.path = path

    def __getitem__(self, key: str | int) -> TaskRef:
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise TypeError("ref[...] takes a string key or an integer index")
        return TaskRef(self.builder, self.task, self.path + (key,))

    def after(self, *others: TaskRef) -> TaskRef:
        """Run this task only after ``others`` finish (an ordering edge without data)."""
        node = self.builder.nodes[self.task]
        for other in others:
            if not isinstance(other, TaskRef):
                raise TypeError(".after() takes task references")
            if other.task not in node["after"]:
                node["after"].append(other.task)
        return self

    def _input(self) -> m.OutputInput:
        return m.OutputInput(task=self.task, path=self.path)

    @property
    def outputs(self) -> _Outputs:
        """The task's output artifacts by name (``train(...).outputs["model"]``), as in KFP."""
        return _Outputs(self)

    def __repr__(self) -> str:
        return f"<output of {self.task}{''.join(f'[{p!r}]' for p in self.path)}>"


class ArtifactRef(Ref):
    """An output artifact of a traced task, for another task's ``up.Input[...]`` parameter."""

    def __init__(self, task: str, name: str, type: str):
        self.task = task
        self.name = name
        self.type = type

    def _input(self) -> Any:
        raise TypeError(f"{self!r} is a file artifact: pass it to a parameter annotated "
                        f"up.Input[...] (its value is a path, not data)")

    def __repr__(self) -> str:
        return f"<artifact {self.task}.outputs[{self.name!r}]>"


class _Outputs:
    def __init__(self, ref: TaskRef):
        self.ref = ref

    def __repr__(self) -> str:
        return f"_Outputs(ref={self.ref!r})"

    def __getitem__(self, name: str) -> ArtifactRef:
        node = self.ref.builder.nodes[self.ref.task]
        slots = {k: v for k, v in node.get("artifacts", {}).items() if v.direction == "output"}
        if name not in slots:
            have = ", ".join(sorted(slots)) or "none"
            raise fail(caller_location(2), f"{self.ref.task}.outputs",
                       f"task {self.ref.task!r} has no output artifact {name!r} (it declares: "
                       f"{have}; an output is a parameter annotated up.Output[...])")
        if node.get("map_over"):
            raise fail(caller_location(2), f"{self.ref.task}.outputs",
                       f"task {self.ref.task!r} is mapped: its output artifacts cannot be read "
                       f"by another task yet (return values can)")
        return ArtifactRef(self.ref.task, name, slots[name].type)


class ParamRef(Ref):
    def __init__(self, name: str, path: tuple[str | int, ...] = ()):
        self.name = name
        self.path = path

    def __getitem__(self, key: str | int) -> ParamRef:
        return ParamRef(self.name, self.path + (key,))

    def _input(self) -> m.ParamInput:
        return m.ParamInput(name=self.name, path=self.path)

    def __repr__(self) -> str:
        return f"<param {self.name}>"


class ElementRef(Ref):
    """Inside a mapped sub-pipeline (``sub.map(x=items)``): the item this copy runs for."""

    def __init__(self, group: str, path: tuple[str | int, ...] = ()):
        self.group = group
        self.path = path

    def __getitem__(self, key: str | int) -> ElementRef:
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise TypeError("item[...] takes a string key or an integer index")
        return ElementRef(self.group, self.path + (key,))

    def _input(self) -> m.ElementInput:
        return m.ElementInput(group=self.group, path=self.path)

    def __repr__(self) -> str:
        return f"<item of {self.group}>"


# ---------------------------------------------------------------- the tracing builder


class _Builder:
    _FIELDS = ("nodes", "counts", "conditions", "closed", "groups", "scope", "calls")

    def __init__(self, nodes: dict[str, dict[str, Any]] | None = None,
                 counts: dict[str, int] | None = None,
                 conditions: list[m.Condition] | None = None,
                 closed: dict[int, m.Condition] | None = None,
                 groups: dict[str, dict[str, Any]] | None = None,
                 scope: list[_Scope] | None = None, calls: list[PipelineDef] | None = None):
        self.nodes = {} if nodes is None else nodes
        self.counts = {} if counts is None else counts
        self.conditions = [] if conditions is None else conditions
        #: nesting depth -> the condition of the up.when() block that closed last at that
        #: depth, which an up.otherwise() block right after it negates
        self.closed = {} if closed is None else closed
        #: sub-pipelines called so far: group id -> the fields of its m.Group
        self.groups = {} if groups is None else groups
        #: the sub-pipeline calls being traced, innermost last
        self.scope = [] if scope is None else scope
        #: the pipelines whose bodies are running, the traced one first (a call of one of
        #: them again is a sub-pipeline calling itself)
        self.calls = [] if calls is None else calls

    def __repr__(self) -> str:
        return "_Builder(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in self._FIELDS) + ")"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._FIELDS)

    __hash__ = None  # type: ignore[assignment] - mutable, as @dataclass(eq=True) made it

    @property
    def prefix(self) -> str:
        """What ids created now start with: ``<group>__`` inside a sub-pipeline."""
        return f"{self.scope[-1].group}__" if self.scope else ""

    def fold(self, policies: m.Policies) -> m.Policies:
        """A task's policies over the defaults of the sub-pipelines it is created in, innermost
        first (the pipeline's own defaults stay in ``Pipeline.defaults``)."""
        for sc in reversed(self.scope):
            policies = policies.over(sc.defaults)
        return policies

    def new_id(self, base: str) -> str:
        n = self.counts.get(base, 0) + 1
        self.counts[base] = n
        candidate = base if n == 1 else f"{base}_{n}"
        while candidate in self.nodes:  # a user task literally named e.g. "train_2"
            n += 1
            self.counts[base] = n
            candidate = f"{base}_{n}"
        return candidate


class _Scope:
    def __init__(self, group: str, defaults: m.Policies):
        self.group = group
        self.defaults = defaults

    def __repr__(self) -> str:
        return f"_Scope(group={self.group!r}, defaults={self.defaults!r})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.group, self.defaults) == (other.group, other.defaults)  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment] - as @dataclass(eq=True) made it


_ACTIVE: list[_Builder] = []


def _active() -> _Builder | None:
    return _ACTIVE[-1] if _ACTIVE else None


def _to_input(value: Any, loc: Loc, field_name: str) -> Any:
    import json

    if isinstance(value, ArtifactRef):
        raise fail(loc, field_name, f"{value!r} is a file artifact: it goes to a parameter "
                   f"annotated up.Input[...], not to a value parameter")
    if isinstance(value, Ref):
        return value._input()
    if _contains_ref(value):
        raise fail(loc, field_name,
                   "a list or dict that holds task outputs cannot be a task argument; pass each "
                   "output as its own argument, or collect them with task.map()")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise fail(loc, field_name, f"argument is not JSON-serialisable ({exc}); pass data "
                   "through a task output or a parameter") from None
    return m.LiteralInput(value=value)


def _contains_ref(value: Any) -> bool:
    if isinstance(value, Ref):
        return True
    if isinstance(value, dict):
        return any(_contains_ref(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains_ref(v) for v in value)
    return False


def _to_value(value: Any, loc: Loc, field_name: str) -> Any:
    if isinstance(value, Ref):
        return value._input()
    if isinstance(value, dict) and _contains_ref(value):
        for k in value:
            if not isinstance(k, str):
                raise fail(loc, field_name, "output dict keys must be strings")
        return m.DictValue(items={k: _to_value(v, loc, f"{field_name}.{k}") for k, v in value.items()})
    if isinstance(value, (list, tuple)) and _contains_ref(value):
        return m.ListValue(items=tuple(_to_value(v, loc, f"{field_name}[{i}]") for i, v in enumerate(value)))
    return _to_input(value, loc, field_name)


@contextlib.contextmanager
def when(condition: Ref, *, expect: bool = True) -> Iterator[None]:
    """Tasks created in the block run only if ``condition`` (a task's bool output) == expect."""
    builder = _active()
    loc = caller_location(3)
    if builder is None:
        raise fail(loc, "when", "up.when() is used inside a @up.pipeline function")
    if not isinstance(condition, TaskRef):
        raise fail(loc, "when", "up.when() takes the output of a task that returns a bool")
    cond = m.Condition(task=condition.task, path=condition.path, expect=expect)
    with _block(builder, cond):
        yield


@contextlib.contextmanager
def otherwise() -> Iterator[None]:
    """The else branch of the ``with up.when(...)`` block just before it, at the same level:
    tasks created in it run only if that condition does not hold (KFP ``dsl.Else``)."""
    builder = _active()
    loc = caller_location(3)
    if builder is None:
        raise fail(loc, "otherwise", "up.otherwise() is used inside a @up.pipeline function")
    prev = builder.closed.pop(len(builder.conditions), None)
    if prev is None:
        raise fail(loc, "otherwise", "up.otherwise() has no `with up.when(...)` block right "
                   "before it at the same level")
    cond = m.Condition(task=prev.task, path=prev.path, expect=not prev.expect, otherwise=True)
    with _block(builder, cond):
        yield
    builder.closed.pop(len(builder.conditions), None)  # one else per when


@contextlib.contextmanager
def _block(builder: _Builder, cond: m.Condition) -> Iterator[None]:
    depth = len(builder.conditions)
    builder.closed.pop(depth, None)
    builder.conditions.append(cond)
    try:
        yield
    finally:
        builder.conditions.pop()
        for d in [d for d in builder.closed if d > depth]:  # inner blocks are closed for good
            del builder.closed[d]
        if not cond.otherwise:
            builder.closed[depth] = cond


def _map_call(loc: Loc, what: str, args: tuple[Any, ...], kwargs: dict[str, Any],
              over: str | None, max_parallel: Any, unit: str) -> tuple[_Builder, str]:
    """The checks ``task.map()`` and ``sub.map()`` share: inside a pipeline, keyword arguments
    only, the argument fanned out (``over`` or the first) a list or a reference (not the item
    of a mapped sub-pipeline), ``max_parallel`` a whole number >= 1. Returns the builder and
    the name of the argument fanned out."""
    builder = _active()
    if builder is None:
        raise fail(loc, "map", f"{what} is used inside a @up.pipeline function")
    if args:
        raise fail(loc, "map", "map() takes keyword arguments only: map(items=..., k=v)")
    if not kwargs:
        raise fail(loc, "map", "map() needs the argument to fan out over")
    target = over or next(iter(kwargs))
    if target not in kwargs:
        raise fail(loc, "map", f"over={target!r} is not one of the arguments")
    value = kwargs[target]
    if (not isinstance(value, Ref) and not isinstance(value, (list, tuple))) or (
            unit == "copies" and isinstance(value, ElementRef)):
        raise fail(loc, f"map.{target}", "map() fans out over a list, a parameter or a task "
                   "output")
    if max_parallel is not None and (isinstance(max_parallel, bool)
                                     or not isinstance(max_parallel, int) or max_parallel < 1):
        raise fail(loc, "map.max_parallel",
                   f"max_parallel takes a whole number of {unit} >= 1, not {max_parallel!r}")
    return builder, target


# ---------------------------------------------------------------- tasks


#: what a TaskDef made in execution mode works out on first use (TaskDef.__getattr__)
_DEFERRED = frozenset({"packages", "produces", "signature", "fn_path", "returns", "slots",
                       "logs", "call_signature"})


class TaskDef:
    """A function decorated with ``@up.task``."""

    def __init__(self, fn: Callable[..., Any], *, id: str | None,
                 policies: m.Policies | dict[str, Any], loc: Loc, run_if: str = "all_success",
                 packages: tuple[str, ...] = (), produces: tuple[str, ...] = (),
                 deferred: tuple[Any, Any] | None = None):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.run_if = run_if
        self.id = id or fn.__name__
        # the IR policies, or (imported in execution mode) the decorator's arguments, turned
        # into IR the first time a pipeline is traced
        self._policies = policies
        self.loc = loc
        self._source_hash: str | None = None
        if deferred is not None:
            # execution mode: the runtime calls ``fn`` and nothing else; the decorator's checks
            # and what tracing needs wait for first use (the pipeline was compiled and checked
            # before the engine ran it), so an attempt does not pay for inspect and typing
            self._deferred = deferred  # (packages=, produces=) as written
            return
        self.packages = packages
        self.produces = produces
        self._inspect()

    def __getattr__(self, name: str) -> Any:
        # reached only for attributes not set: those a TaskDef made in execution mode defers
        deferred = self.__dict__.pop("_deferred", None) if name in _DEFERRED else None
        if deferred is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        loc = self.loc
        # the checks task() makes at the decorator's line otherwise, in the same order
        self.packages = _packages(deferred[0], loc)
        self.produces = _produces(deferred[1], loc)
        _check_run_if(self.run_if, loc)
        _check_sync(self.fn, loc)
        self._inspect()
        return getattr(self, name)

    def _inspect(self) -> None:
        """Signature, import path, return type, artifact slots and logs of the function."""
        import inspect
        import typing

        fn, loc = self.fn, self.loc
        self.signature = inspect.signature(fn)
        self.fn_path = import_path(fn, loc, "task")
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            hints = {}
        self.returns = type_name(hints.get("return", self.signature.return_annotation))
        self.slots = _artifact_slots(fn, loc)
        self.logs = _logs(fn)
        outs = {k for k, (direction, _t) in self.slots.items() if direction == "output"}
        # what a call binds: every parameter but the outputs, which the runtime fills
        self.call_signature = self.signature.replace(parameters=[
            p for p in self.signature.parameters.values() if p.name not in outs])

    @property
    def policies(self) -> m.Policies:
        if isinstance(self._policies, dict):
            from unipipe.authoring.policies import policies_ir

            self._policies = policies_ir(self.loc, **self._policies)
        return self._policies

    @property
    def source_hash(self) -> str:
        if self._source_hash is None:
            self._source_hash = source_hash(self.fn)
        return self._source_hash

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = _active()
        if builder is None:
            return self.fn(*args, **kwargs)
        return self._record(builder, args, kwargs, map_over=None, loc=caller_location(2))

    def map(self, *args: Any, over: str | None = None, max_parallel: int | None = None,
            **kwargs: Any) -> TaskRef:
        """Fan out over one argument: the first keyword argument, or the one named by ``over``;
        with ``max_parallel=N`` at most N elements run at once."""
        loc = caller_location(2)
        builder, target = _map_call(loc, f"{self.id}.map()", args, kwargs, over, max_parallel,
                                    "elements")
        if isinstance(kwargs[target], tuple):
            kwargs[target] = list(kwargs[target])
        ref = self._record(builder, (), kwargs, map_over=target, loc=loc)
        builder.nodes[ref.task]["max_parallel"] = max_parallel
        return ref

    def _record(self, builder: _Builder, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                map_over: str | None, loc: Loc) -> TaskRef:
        for name, (direction, _t) in self.slots.items():
            if direction == "output" and name in kwargs:
                raise fail(loc, f"{self.id}.{name}", f"{name!r} is an output artifact of task "
                           f"{self.id!r}: the runtime gives it a path to write; read it "
                           f"downstream as {self.id}(...).outputs[{name!r}]")
        try:
            bound = self.call_signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise fail(loc, self.id, f"bad arguments for task {self.id!r}: {exc}") from None
        from inspect import Parameter, cleandoc

        inputs: dict[str, Any] = {}
        artifacts: dict[str, m.ArtifactSlot] = {}
        for name, (direction, type_) in self.slots.items():  # in the signature's order
            if direction == "output":
                artifacts[name] = m.ArtifactSlot(direction="output", type=type_)
            elif name in bound.arguments:
                artifacts[name] = _artifact_input(bound.arguments[name], type_, loc,
                                                  f"{self.id}.{name}", map_over == name)
        for name, value in bound.arguments.items():
            kind = self.signature.parameters[name].kind
            if kind in (Parameter.VAR_POSITIONAL, Parameter.VAR_KEYWORD):
                raise fail(loc, self.id, "tasks with *args/**kwargs cannot be traced; name the arguments")
            if name in self.slots:
                continue
            inputs[name] = _to_input(value, loc, f"{self.id}.{name}")
        return self._add_node(builder, inputs, map_over=map_over, loc=loc,
                              doc=cleandoc(self.fn.__doc__ or ""),
                              artifacts=artifacts, logs=self.logs, packages=self.packages,
                              produces=self.produces)

    def _add_node(self, builder: _Builder, inputs: dict[str, Any], *, map_over: str | None,
                  loc: Loc, doc: str, **extra: Any) -> TaskRef:
        """Record one call of this task in the pipeline being traced (``extra``: more IR fields)."""
        task_id = builder.new_id(builder.prefix + self.id)
        builder.nodes[task_id] = {
            "id": task_id,
            "fn": self.fn_path,
            "source_hash": self.source_hash,
            "inputs": inputs,
            "after": [],
            "when": list(builder.conditions),
            "map_over": map_over,
            "returns": "list" if map_over else self.returns,
            "policies": builder.fold(self.policies),
            "run_if": self.run_if,
            "group": builder.scope[-1].group if builder.scope else None,
            "doc": doc,
            "location": loc,
            **extra,
        }
        return TaskRef(builder, task_id)

    def __repr__(self) -> str:
        return f"<unipipe task {self.id} ({self.fn_path})>"


def _artifact_slots(fn: Callable[..., Any], loc: Loc) -> dict[str, tuple[str, str]]:
    """``{parameter: ("input"|"output", artifact type)}`` from ``up.Input``/``up.Output``."""
    annotations = getattr(fn, "__annotations__", {})
    if not any("Input[" in str(a) or "Output[" in str(a) or hasattr(a, "__metadata__")
               for a in annotations.values()):
        return {}
    import typing

    from unipipe.runtime.artifacts import slot_of

    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # noqa: BLE001 - an annotation that does not resolve
        if any("Input[" in str(a) or "Output[" in str(a) for a in annotations.values()):
            raise fail(loc, fn.__name__, f"cannot resolve the artifact annotations of "
                       f"{fn.__name__!r}: {exc}") from None
        return {}
    slots = {}
    for name, hint in hints.items():
        slot = slot_of(hint)
        if slot is not None and name != "return":
            slots[name] = slot
    return slots


def _artifact_input(value: Any, type_: str, loc: Loc, field_name: str,
                    mapped: bool) -> m.ArtifactSlot:
    """The source of an ``up.Input[...]`` argument: another task's output, or a store URI."""
    if mapped:
        raise fail(loc, field_name, "map() fans out over values; an input artifact is one file")
    if isinstance(value, ArtifactRef):
        if "Artifact" not in (type_, value.type) and type_ != value.type:
            raise fail(loc, field_name, f"{value!r} is a {value.type}; this parameter takes "
                       f"up.Input[up.{type_}] (up.Artifact takes any)")
        return m.ArtifactSlot(direction="input", type=type_, task=value.task, output=value.name)
    if isinstance(value, str) and "://" in value:
        try:
            return m.ArtifactSlot(direction="input", type=type_, uri=value)
        except ValueError:
            pass
    raise fail(loc, field_name, f"an up.Input[up.{type_}] takes another task's output artifact "
               f"(task(...).outputs['name']) or a URI such as s3://bucket/key, not {value!r}")


def _global_calls(code: Any, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` the code reaches as a global (``log_metric``) or an attribute of one
    (``up.log_metric``), not of a local (``metrics.log_metric`` on an Output[Metrics])."""
    import dis

    found: set[str] = set()
    prev = None
    for ins in dis.get_instructions(code):
        if ins.argval in wanted and (
                ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") or
                (ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and prev is not None
                 and prev.opname in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF"))):
            found.add(ins.argval)
        prev = ins
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            found |= _global_calls(const, wanted)
    return found


def _logs(fn: Callable[..., Any]) -> tuple[str, ...]:
    """What the function's code records: it calls ``up.log_metric`` / ``up.report`` (found in
    its bytecode; a helper that calls them is not seen: declare up.Output[up.Metrics] there)."""
    code = getattr(fn, "__code__", None)
    if code is None or not {"log_metric", "report"} & set(code.co_names) and not any(
            hasattr(c, "co_code") for c in code.co_consts):
        return ()
    names = _global_calls(code, {"log_metric", "report"})
    return tuple(k for k, n in (("metrics", "log_metric"), ("report", "report")) if n in names)


def _packages(value: Any, loc: Loc) -> tuple[str, ...]:
    import re

    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise fail(loc, "packages", "packages= takes a list of requirement strings, such as "
                   "['scikit-learn==1.5.2']")
    for item in value:
        if not isinstance(item, str) or not re.match(m.REQUIREMENT_PATTERN, item):
            raise fail(loc, "packages", f"{item!r} is not a requirement string: write a package "
                       f"name with optional extras and version specifiers, such as "
                       f"'scikit-learn==1.5.2' or 'pandas[parquet]>=2,<3' (no URLs or markers)")
    return tuple(value)


def _produces(value: Any, loc: Loc) -> tuple[str, ...]:
    if value is None:
        return ()
    from unipipe.authoring.events import asset_uri

    if not isinstance(value, (list, tuple)):
        raise fail(loc, "produces", "produces= takes a list of up.Asset(...)")
    uris = tuple(asset_uri(a, loc, "produces") for a in value)
    if len(set(uris)) != len(uris):
        raise fail(loc, "produces", f"an asset is named twice: {list(uris)}")
    return uris


def _check_run_if(run_if: str, loc: Loc) -> None:
    from unipipe.result import RUN_IF_VALUES

    if run_if not in RUN_IF_VALUES:
        raise fail(loc, "run_if", f"run_if={run_if!r} is not one of "
                   + ", ".join(repr(v) for v in RUN_IF_VALUES))


def _check_sync(f: Callable[..., Any], loc: Loc) -> None:
    import inspect

    if inspect.iscoroutinefunction(f):
        raise fail(loc, "task", "async tasks are not supported yet; write a plain function")


def task(fn: Callable[..., Any] | None = None, *, id: str | None = None,
         retry: Retry | None = None, retries: int | None = None,
         cache: Cache | bool | None = None, timeout: Duration | None = None,
         resources: Resources | None = None, image: str | None = None,
         alerts: list[Alert] | None = None, run_if: str = "all_success",
         packages: list[str] | None = None, produces: list[Any] | None = None) -> Any:
    """Declare a task. ``@up.task`` or ``@up.task(retries=2, cache=True, timeout="5m", ...)``.

    ``run_if`` says what its upstream tasks' states must be for it to run: ``"all_success"``
    (the default), ``"all_done"`` (a cleanup: after its upstream tasks whatever they ended as)
    or ``"one_failed"`` (a failure path: only if one of them failed).
    """
    loc = caller_location(2)
    args = {"retry": retry, "retries": retries, "cache": cache, "timeout": timeout,
            "resources": resources, "image": image, "alerts": alerts}
    if executing():
        # a task process: wrap only; every check below waits for a trace, if ever (TaskDef)
        def wrap_deferred(f: Callable[..., Any]) -> TaskDef:
            return TaskDef(f, id=id, policies=args, loc=loc, run_if=run_if,
                           deferred=(packages, produces))

        return wrap_deferred(fn) if fn is not None else wrap_deferred
    pkgs = _packages(packages, loc)
    outlets = _produces(produces, loc)
    _check_run_if(run_if, loc)

    def wrap(f: Callable[..., Any]) -> TaskDef:
        from unipipe.authoring.policies import policies_ir

        _check_sync(f, loc)
        # authoring: check now, at the decorator's line
        pol = policies_ir(loc, **args)
        return TaskDef(f, id=id, policies=pol, loc=loc, run_if=run_if, packages=pkgs,
                       produces=outlets)

    return wrap(fn) if fn is not None else wrap


# ---------------------------------------------------------------- pipelines


class PipelineDef:
    """A function decorated with ``@up.pipeline``; ``.ir`` traces it (once) into the IR."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None, description: str | None,
                 schedule: str | Duration | None, defaults: Defaults | None,
                 alerts: list[Alert] | None, tags: list[str] | None, loc: Loc,
                 max_active_runs: int | None = None, retries: int = 0,
                 retry_delay: str | Duration | None = None,
                 timeout: str | Duration | None = None, trigger: Any = None):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self._trigger = trigger
        self.name = name or fn.__name__.replace("_", "-")
        self.loc = loc
        self._description = description
        self._schedule = schedule
        self._defaults = defaults
        self._alerts = alerts or []
        self._tags = tags or []
        self._max_active_runs = max_active_runs
        self._retries = retries
        self._retry_delay = retry_delay
        self._timeout = timeout
        self._ir: m.Pipeline | None = None
        if not executing():  # in a task process: checked when traced, if ever
            self._check_decoration()

    def _check_decoration(self) -> None:
        from unipipe.authoring.policies import Alert, Defaults

        loc = self.loc
        if self._defaults is not None and not isinstance(self._defaults, Defaults):
            raise fail(loc, "defaults", "defaults= takes up.Defaults(...)")
        for a in self._alerts:
            if not isinstance(a, Alert):
                raise fail(loc, "alerts", "alerts= takes a list of up.Alert(...)")
        n = self._max_active_runs
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise fail(loc, "max_active_runs",
                       f"max_active_runs takes a whole number of runs >= 1, not {n!r}")
        self._run_policy()
        self._schedule_ir()
        self._trigger_ir()

    def _trigger_ir(self) -> m.Trigger | None:
        from unipipe.authoring.events import On

        if self._trigger is None:
            return None
        if not isinstance(self._trigger, On):
            raise fail(self.loc, "trigger", "trigger= takes up.On(up.Asset(...), ...)")
        return self._trigger.to_ir()

    def _run_policy(self) -> tuple[int, float, float | None]:
        """``retries=``, ``retry_delay=``, ``timeout=`` checked: (retries, delay s, timeout s)."""
        from unipipe.authoring.policies import duration

        loc, n = self.loc, self._retries
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 100:
            raise fail(loc, "retries", "retries takes a whole number of run retries from 0 to "
                       f"100, not {n!r}")
        delay = 0.0
        if self._retry_delay is not None:
            if not n:
                raise fail(loc, "retry_delay", "retry_delay= without retries=: the run is "
                           "never retried, so there is nothing to wait for")
            delay = duration(self._retry_delay, loc, "retry_delay")
        timeout = None
        if self._timeout is not None:
            timeout = duration(self._timeout, loc, "timeout")
            if not timeout:
                raise fail(loc, "timeout", "a pipeline timeout must be longer than 0s")
        return n, delay, timeout

    def _schedule_ir(self) -> m.Schedule | None:
        from datetime import timedelta

        from unipipe.authoring.events import Schedule
        from unipipe.authoring.policies import duration

        s = self._schedule
        if s is None:
            return None
        if isinstance(s, Schedule):
            return s.to_ir()
        if not isinstance(s, (str, int, float, timedelta)) or isinstance(s, bool):
            raise fail(self.loc, "schedule", "schedule= takes a cron string, an interval "
                       "('6h') or up.Schedule(cron=..., timezone=..., start=...)")
        if isinstance(s, str) and (s.startswith("@") or " " in s.strip()):
            from unipipe.ir.validate import check_cron

            reason = check_cron(s)
            if reason:
                raise fail(self.loc, "schedule", reason)
            return m.Schedule(cron=s)
        seconds = duration(s, self.loc, "schedule")
        if not seconds:
            raise fail(self.loc, "schedule", "an interval schedule must be longer than 0s")
        return m.Schedule(interval=seconds)

    def _params(self) -> tuple[list[m.Param], dict[str, ParamRef]]:
        import inspect
        import json
        import typing

        try:
            hints = typing.get_type_hints(self.fn)
        except Exception:
            hints = {}
        params, refs = [], {}
        for pname, p in inspect.signature(self.fn).parameters.items():
            if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise fail(self.loc, f"params.{pname}", "pipeline parameters must be named")
            ptype = type_name(hints.get(pname, p.annotation)) or "any"
            required = p.default is inspect.Parameter.empty
            default = None if required else p.default
            if not required:
                try:
                    json.dumps(default, allow_nan=False)
                except (TypeError, ValueError) as exc:
                    raise fail(self.loc, f"params.{pname}.default",
                               f"default {default!r} is not JSON-serialisable ({exc})") from None
            params.append(m.Param(name=pname, type=ptype, default=default, required=required))
            refs[pname] = ParamRef(pname)
        return params, refs

    @property
    def ir(self) -> m.Pipeline:
        if self._ir is None:
            self._ir = self._trace()
        return self._ir

    def _trace(self) -> m.Pipeline:
        import inspect

        from unipipe.authoring.modules import main_module_name
        from unipipe.ir.errors import PipelineError
        from unipipe.ir.validate import validate

        self._check_decoration()
        params, refs = self._params()
        builder = _Builder(calls=[self])
        _ACTIVE.append(builder)
        try:
            result = self.fn(**refs)
        finally:
            _ACTIVE.pop()
        output = None if result is None else _to_value(result, self.loc, "output")
        run_retries, run_delay, run_timeout = self._run_policy()
        tasks = []
        for node in builder.nodes.values():
            tasks.append(m.Task(
                id=node["id"], fn=node["fn"], source_hash=node["source_hash"],
                inputs=node["inputs"], after=tuple(node["after"]), when=tuple(node["when"]),
                map_over=node["map_over"], returns=node["returns"], policies=node["policies"],
                run_if=node.get("run_if", "all_success"), doc=node["doc"], location=node["location"].to_ir(),
                command=node.get("command"), env=node.get("env") or {},
                max_parallel=node.get("max_parallel"), group=node.get("group"),
                artifacts=node.get("artifacts") or {}, logs=node.get("logs") or (),
                packages=node.get("packages") or (), produces=node.get("produces") or (),
            ))
        module = self.fn.__module__
        if module == "__main__":
            module = main_module_name() or module
        try:
            ir = m.Pipeline(
                name=self.name,
                description=self._description or inspect.cleandoc(self.fn.__doc__ or ""),
                params=tuple(params), tasks=tuple(tasks), output=output,
                schedule=self._schedule_ir(), trigger=self._trigger_ir(),
                defaults=self._defaults.to_ir() if self._defaults else m.Policies(),
                alerts=tuple(a.to_ir() for a in self._alerts),
                tags=tuple(self._tags), module=module, location=self.loc.to_ir(),
                max_active_runs=self._max_active_runs,
                retries=run_retries, retry_delay=run_delay, timeout=run_timeout,
                groups=tuple(m.Group(**g) for g in builder.groups.values()),
            )
        except Exception as exc:
            from pydantic import ValidationError

            if isinstance(exc, ValidationError):
                from unipipe.ir.io import problems_from_validation_error

                probs = problems_from_validation_error(exc, self.loc.file)
                raise PipelineError([p.__class__(p.message, self.loc.file, self.loc.line, p.field)
                                     for p in probs]) from None
            raise
        return validate(ir)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = _active()
        if builder is None:
            raise TypeError(
                f"pipeline {self.name!r} is not called directly; use up.run({self.fn.__name__}) "
                "or up.compile(...), or call it inside another @up.pipeline as a sub-pipeline"
            )
        return self._call_in(builder, args, kwargs, caller_location(2))

    def map(self, *args: Any, over: str | None = None, max_parallel: int | None = None,
            **kwargs: Any) -> Any:
        """Fan the whole sub-pipeline out over one argument (the first keyword argument, or the
        one named by ``over``): its tasks run once per item (``task[i]``), a task outside reads
        each of their outputs as a list in item order; ``max_parallel=N``: at most N copies at
        once. Airflow: a mapped TaskGroup; Prefect: a subflow per item; KFP: ParallelFor over
        the pipeline component (runner rule 12)."""
        loc = caller_location(2)
        builder, target = _map_call(loc, f"{self.name}.map()", args, kwargs, over, max_parallel,
                                    "copies")
        value = kwargs[target]
        items = _to_input(list(value) if isinstance(value, tuple) else value, loc,
                          f"{self.name}.{target}")
        return self._call_in(builder, (), kwargs, loc,
                             mapped=(target, items, max_parallel))

    def _call_in(self, builder: _Builder, args: tuple[Any, ...], kwargs: dict[str, Any],
                 loc: Loc, mapped: tuple[str, Any, int | None] | None = None) -> Any:
        """Called inside another pipeline: trace this body there as a group (m.Group).

        Its tasks get ids ``<group>__<task>``, its ``defaults`` fill their policies, its
        ``retries``/``retry_delay``/``alerts`` apply to the group as one unit; its return
        value (task references) is what the caller gets. ``schedule`` and
        ``max_active_runs`` are about runs of a pipeline of its own and do not apply here.
        """
        import inspect

        if self in builder.calls:
            cycle = [p.name for p in builder.calls[builder.calls.index(self):]] + [self.name]
            raise fail(loc, "pipeline", f"sub-pipeline {self.name!r} calls itself ("
                       + " -> ".join(cycle) + "); a pipeline cannot contain itself")
        self._check_decoration()
        retries, delay, timeout = self._run_policy()
        if timeout is not None:
            raise fail(self.loc, "timeout", f"pipeline {self.name!r} is called as a "
                       "sub-pipeline, where timeout= does not apply (it bounds a whole run); "
                       "set timeout= on its tasks")
        try:
            bound = inspect.signature(self.fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise fail(loc, self.name, f"bad arguments for sub-pipeline {self.name!r}: "
                       f"{exc}") from None
        bound.apply_defaults()
        for pname, value in bound.arguments.items():
            if mapped is not None and pname == mapped[0]:
                continue
            if not isinstance(value, Ref) and _contains_ref(value):
                raise fail(loc, f"{self.name}.{pname}", "a list or dict that holds task "
                           "outputs cannot be a sub-pipeline argument; pass each output as its "
                           "own argument")
            if not isinstance(value, Ref):
                _to_input(value, loc, f"{self.name}.{pname}")  # JSON, or a clear error
        gid = builder.new_id(builder.prefix + self.fn.__name__)
        builder.groups[gid] = {
            "id": gid, "pipeline": self.name,
            "parent": builder.scope[-1].group if builder.scope else None,
            "retries": retries, "retry_delay": delay,
            "alerts": tuple(a.to_ir() for a in self._alerts),
            "doc": self._description or inspect.cleandoc(self.fn.__doc__ or ""),
            "location": loc.to_ir(),
        }
        if mapped is not None:
            target, items, max_parallel = mapped
            builder.groups[gid].update(map_over=target, items=items, max_parallel=max_parallel)
            bound.arguments[target] = ElementRef(gid)
        defaults = self._defaults.to_ir() if self._defaults else m.Policies()
        builder.scope.append(_Scope(gid, defaults))
        builder.calls.append(self)
        try:
            return self.fn(**bound.arguments)
        finally:
            builder.calls.pop()
            builder.scope.pop()

    def __repr__(self) -> str:
        return f"<unipipe pipeline {self.name}>"


def pipeline(fn: Callable[..., Any] | None = None, *, name: str | None = None,
             description: str | None = None, schedule: str | Duration | None = None,
             defaults: Defaults | None = None, alerts: list[Alert] | None = None,
             tags: list[str] | None = None, max_active_runs: int | None = None,
             retries: int = 0, retry_delay: str | Duration | None = None,
             timeout: str | Duration | None = None, trigger: Any = None) -> Any:
    """Declare a pipeline. The function body wires tasks; it runs once, when traced.
    ``schedule``: a cron string, an interval (``"6h"``) or ``up.Schedule(cron=...,
    timezone=..., start=..., end=..., catchup=...)``. ``trigger=up.On(asset, ...)``: runs when
    the engine sees the asset(s) updated (all of them, or any with ``mode="any"``).
    ``max_active_runs=N``: at most N runs of it at once (a scheduled or triggered run waits).
    ``retries=N``: a failed run is run again as a whole, up to N more times, after
    ``retry_delay``; its tasks start again and cached tasks hit their entries.
    ``timeout="2h"``: a run attempt past it fails, its running tasks stopped (and is retried
    while retries remain); the pipeline's failure alert goes out once, after the last attempt."""
    loc = caller_location(2)

    def wrap(f: Callable[..., Any]) -> PipelineDef:
        return PipelineDef(f, name=name, description=description, schedule=schedule,
                           defaults=defaults, alerts=alerts, tags=tags, loc=loc,
                           max_active_runs=max_active_runs, retries=retries,
                           retry_delay=retry_delay, timeout=timeout, trigger=trigger)

    return wrap(fn) if fn is not None else wrap
