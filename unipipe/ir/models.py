"""The unipipe IR: frozen pydantic v2 models, one meaning for every backend.

Every value a user authors lands in one of these models, and every field survives a JSON round
trip (tests/test_ir_roundtrip.py proves it). Durations are float seconds; callables and exception
classes are import paths ``module:qualname``; secrets are references, never literal values.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = "1.0"

JSON = JsonValue

IDENT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,199}$"
PIPELINE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"
IMPORT_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.<>]*$"
SECRET_REF_PATTERN = r"^(env|airflow-conn|airflow-var|prefect-block):[A-Za-z_][A-Za-z0-9_./-]{0,199}$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceLocation(_Model):
    """Where the user wrote something; every validation error points here."""

    file: str
    line: int = 0


# ---------------------------------------------------------------- policies


class Retry(_Model):
    """Retry policy. Attempt k+1 (retry k, from 1) waits the delay of :func:`retry_delay`.

    ``retry_on`` (when non-empty) lists the only exception types that are retried; ``fail_on``
    lists types that are never retried and wins over ``retry_on``.
    """

    max_retries: int = Field(0, ge=0, le=1000)
    delay: float = Field(0.0, ge=0)
    backoff: float = Field(1.0, ge=1.0)
    max_delay: float | None = Field(None, ge=0)
    jitter: float = Field(0.0, ge=0.0, le=1.0)
    retry_on: tuple[Annotated[str, Field(pattern=IMPORT_PATH_PATTERN)], ...] = ()
    fail_on: tuple[Annotated[str, Field(pattern=IMPORT_PATH_PATTERN)], ...] = ()


class Cache(_Model):
    """Cache policy: key = task callable + source hash + version + inputs, or ``key_fn(inputs)``."""

    version: str = "0"
    expire: float | None = Field(None, gt=0)
    key_fn: str | None = Field(None, pattern=IMPORT_PATH_PATTERN)


class Resources(_Model):
    cpu: str | None = Field(None, pattern=r"^\d+(\.\d+)?m?$")
    memory: str | None = Field(None, pattern=r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")
    gpu: int | None = Field(None, ge=0, le=64)
    gpu_type: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,99}$")


AlertEvent = Literal["failure", "retry", "success"]


class Alert(_Model):
    """Where to tell a person about an event. Channels hold references, not secrets."""

    on: tuple[AlertEvent, ...] = ("failure",)
    webhook: str | None = Field(None, pattern=SECRET_REF_PATTERN)
    email: tuple[Annotated[str, Field(pattern=r"^[^@\s\"'\\]+@[^@\s\"'\\]+$")], ...] = ()
    callback: str | None = Field(None, pattern=IMPORT_PATH_PATTERN)

    @model_validator(mode="after")
    def _one_channel(self) -> Alert:
        if not (self.webhook or self.email or self.callback):
            raise ValueError("an alert needs a channel: webhook=, email= or callback=")
        if not self.on:
            raise ValueError("an alert needs at least one event in on=")
        if len(set(self.on)) != len(self.on):
            raise ValueError(f"alert events repeat: {self.on}")
        return self


#: an ISO 8601 date or date-time (``2024-01-01``, ``2024-01-01T06:00``); without an offset it
#: is a wall-clock time in the schedule's timezone
ISO_DATE_PATTERN = (r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?"
                    r"(Z|[+-]\d{2}:\d{2})?)?$")


class Schedule(_Model):
    """When the engine creates runs: a cron (in ``timezone``) or a fixed interval, between
    ``start`` and ``end``; ``catchup`` makes the engine create the runs it missed since
    ``start`` (each with its own logical date) instead of only the latest."""

    cron: str | None = None
    interval: float | None = Field(None, gt=0)
    timezone: str = "UTC"
    start: str | None = Field(None, pattern=ISO_DATE_PATTERN)
    end: str | None = Field(None, pattern=ISO_DATE_PATTERN)
    catchup: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("a schedule is either cron= or interval=, exactly one")
        return self


#: a URI an asset is named by: a scheme and a location, ASCII, no whitespace, quotes or
#: backslashes (unipipe.authoring.assets normalises and checks it further)
ASSET_PATTERN = r"^[a-z][a-z0-9+.-]*://[!-~]{1,1500}$"
AssetURI = Annotated[str, Field(pattern=ASSET_PATTERN)]


class Trigger(_Model):
    """Run the pipeline when the engine sees its assets updated (``@up.pipeline(trigger=
    up.On(a, b, mode="any"))``): ``all`` waits until each asset was updated since the last
    run, ``any`` runs on an update of any of them."""

    assets: tuple[AssetURI, ...] = Field(min_length=1)
    mode: Literal["all", "any"] = "all"

    @field_validator("assets")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"an asset is named twice in the trigger: {value}")
        return value


class Policies(_Model):
    """Policies that a task sets or inherits from the pipeline defaults (None = inherit)."""

    retry: Retry | None = None
    cache: Cache | None = None
    timeout: float | None = Field(None, gt=0)
    resources: Resources | None = None
    image: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-/:@]{0,254}$")
    alerts: tuple[Alert, ...] = ()

    def over(self, base: Policies) -> Policies:
        """These policies with ``base`` filled in where they set none (a task over its
        pipeline's defaults, or over a sub-pipeline's); alerts are replaced, not merged."""
        return Policies(
            retry=self.retry if self.retry is not None else base.retry,
            cache=self.cache if self.cache is not None else base.cache,
            timeout=self.timeout if self.timeout is not None else base.timeout,
            resources=self.resources if self.resources is not None else base.resources,
            image=self.image if self.image is not None else base.image,
            alerts=self.alerts if self.alerts else base.alerts,
        )


# ---------------------------------------------------------------- inputs


PathItem = Union[str, int]


class LiteralInput(_Model):
    kind: Literal["literal"] = "literal"
    value: JSON


class ParamInput(_Model):
    kind: Literal["param"] = "param"
    name: str = Field(pattern=IDENT_PATTERN)
    path: tuple[PathItem, ...] = ()


class OutputInput(_Model):
    kind: Literal["output"] = "output"
    task: str = Field(pattern=IDENT_PATTERN)
    path: tuple[PathItem, ...] = ()


class ElementInput(_Model):
    """The item a mapped sub-pipeline (``sub.map(x=items)``) runs its tasks for: inside group
    ``group``, the element of ``Group.items`` this copy of the group was made for."""

    kind: Literal["element"] = "element"
    group: str = Field(pattern=IDENT_PATTERN)
    path: tuple[PathItem, ...] = ()


Input = Annotated[LiteralInput | ParamInput | OutputInput | ElementInput,
                  Field(discriminator="kind")]


class ListValue(_Model):
    """A list whose items are inputs (used for pipeline outputs that collect several refs)."""

    kind: Literal["list"] = "list"
    items: tuple[Value, ...]


class DictValue(_Model):
    kind: Literal["dict"] = "dict"
    items: dict[str, Value]


Value = Annotated[
    LiteralInput | ParamInput | OutputInput | ListValue | DictValue, Field(discriminator="kind")
]
ListValue.model_rebuild()
DictValue.model_rebuild()


# ---------------------------------------------------------------- tasks and pipeline


ParamType = Literal["str", "int", "float", "bool", "dict", "list", "any"]


class Param(_Model):
    name: str = Field(pattern=IDENT_PATTERN)
    type: ParamType = "any"
    default: JSON = None
    required: bool = False
    description: str = ""


class Condition(_Model):
    """Run only if the referenced task output equals ``expect`` (a bool).

    ``otherwise`` marks the else branch of an ``up.when()`` block (``with up.otherwise():``):
    the same test with ``expect`` negated, kept apart so engines with an else construct
    (KFP ``dsl.Else``) can write one. It never changes when the task runs.
    """

    task: str = Field(pattern=IDENT_PATTERN)
    path: tuple[PathItem, ...] = ()
    expect: bool = True
    otherwise: bool = False


#: When a task runs, given its upstream tasks' final states (unipipe.result.upstream_verdict):
#: ``all_success`` every upstream succeeded (the default); ``all_done`` every upstream
#: finished, whatever its state (a cleanup task); ``one_failed`` at least one upstream failed
#: or was upstream_failed (a failure path), else skipped.
RunIf = Literal["all_success", "all_done", "one_failed"]


#: the callable a command task names: the shim's argv runner (unipipe.runtime.command)
COMMAND_FN = "unipipe.runtime.command:run"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,199}$"


ArtifactType = Literal["Artifact", "Dataset", "Model", "Metrics", "Markdown"]
#: what a task's code records besides its value (found when traced: it calls up.log_metric /
#: up.report); KFP needs a declared output to carry them
LogKind = Literal["metrics", "report"]
#: a package requirement as pip takes it: a name, extras and version specifiers; no URL, no
#: environment marker (they would reach a shell command line on KFP)
REQUIREMENT_PATTERN = (r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(\[[A-Za-z0-9._,-]{1,100}\])?"
                       r"(\s*(===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]{1,64}"
                       r"(\s*,\s*(===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]{1,64})*)?$")


class ArtifactSlot(_Model):
    """A file artifact a task reads (``up.Input[up.Dataset]``) or writes
    (``up.Output[up.Model]``), by parameter name in ``Task.artifacts``. An input comes from
    another task's output (``task``, ``output``) or from a fixed ``uri`` (an existing file in a
    store, as KFP's importer); the bytes move natively on KFP and through the store elsewhere
    (unipipe.runtime.artifacts)."""

    direction: Literal["input", "output"]
    type: ArtifactType = "Artifact"
    task: str | None = Field(None, pattern=IDENT_PATTERN)
    output: str | None = Field(None, pattern=IDENT_PATTERN)
    uri: str | None = Field(None, pattern=r"^[a-z][a-z0-9+.-]*://[^\s'\"\\]{1,2000}$")

    @model_validator(mode="after")
    def _source(self) -> ArtifactSlot:
        if self.direction == "output" and (self.task or self.output or self.uri):
            raise ValueError("an output artifact has no source")
        if self.direction == "input" and (self.uri is None) == (self.task is None or
                                                                self.output is None):
            raise ValueError("an input artifact comes from a task's output or from a uri")
        return self


class Task(_Model):
    """One node. A Python task names its callable in ``fn``; a command task (``up.command``)
    carries ``command`` (argv, ``{input}`` placeholders) and ``env`` instead, and its ``fn`` is
    :data:`COMMAND_FN` with ``source_hash`` the hash of the command and env."""

    id: str = Field(pattern=IDENT_PATTERN)
    fn: str = Field(pattern=IMPORT_PATH_PATTERN)
    source_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: dict[str, Input] = Field(default_factory=dict)
    after: tuple[str, ...] = ()
    when: tuple[Condition, ...] = ()
    map_over: str | None = None
    returns: str | None = None
    policies: Policies = Policies()
    run_if: RunIf = "all_success"
    doc: str = ""
    location: SourceLocation | None = None
    #: a command task's argv: each item one argument, ``{name}`` filled from the input ``name``
    #: inside that item; run without a shell (unipipe.runtime.command)
    command: tuple[str, ...] | None = None
    #: environment variables set for a command task's process (over the worker's environment)
    env: dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], str] = Field(default_factory=dict)
    #: a mapped task: at most this many of its elements run at once, in one run
    #: (``task.map(..., max_parallel=N)``); None = as many as the engine runs
    max_parallel: int | None = Field(None, ge=1, le=10000)
    #: the innermost sub-pipeline (``Pipeline.groups``) this task was created in; None: the
    #: pipeline's own body
    group: str | None = Field(None, pattern=IDENT_PATTERN)
    #: file artifacts the task reads and writes, by parameter name (``up.Input[...]``,
    #: ``up.Output[...]``); not in ``inputs``: their bytes never pass as values
    artifacts: dict[Annotated[str, Field(pattern=IDENT_PATTERN)], ArtifactSlot] = Field(
        default_factory=dict)
    #: what the task's code records: metrics (``up.log_metric``), a report (``up.report``)
    logs: tuple[LogKind, ...] = ()
    #: pip requirements the task needs where it runs (``@up.task(packages=[...])``)
    packages: tuple[Annotated[str, Field(pattern=REQUIREMENT_PATTERN)], ...] = ()
    #: assets a successful attempt updates (``@up.task(produces=[up.Asset(uri)])``)
    produces: tuple[AssetURI, ...] = ()

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        import re

        for name in value:
            if not re.match(IDENT_PATTERN, name):
                raise ValueError(f"input name {name!r} is not a Python identifier")
        return value

    @model_validator(mode="after")
    def _map_over_is_input(self) -> Task:
        if self.map_over is not None and self.map_over not in self.inputs:
            raise ValueError(f"map_over={self.map_over!r} is not one of the task's inputs")
        if self.max_parallel is not None and self.map_over is None:
            raise ValueError("max_parallel limits the elements of a mapped task; this task is "
                             "not mapped (use task.map(..., max_parallel=N))")
        return self

    def upstream(self) -> list[str]:
        """Every task this one waits for: data, ordering and condition edges, in stable order."""
        seen: dict[str, None] = {}
        for inp in self.inputs.values():
            if isinstance(inp, OutputInput):
                seen[inp.task] = None
        for cond in self.when:
            seen[cond.task] = None
        for slot in self.artifacts.values():
            if slot.task is not None:
                seen[slot.task] = None
        for dep in self.after:
            seen[dep] = None
        return list(seen)


class Group(_Model):
    """A sub-pipeline called inside a pipeline: a ``@up.pipeline`` function called in another's
    body. Its tasks are ordinary tasks of the pipeline (ids prefixed ``<group>__``) that name it
    in ``Task.group``; the sub-pipeline's ``defaults`` were folded into their policies when
    traced. What stays here is what applies to the members as one unit: the whole group is
    tried again while it failed and ``retries`` remain (after ``retry_delay``), and its
    ``alerts`` go out once, when it ends (unipipe.local.runner, rule 11)."""

    id: str = Field(pattern=IDENT_PATTERN)
    #: the sub-pipeline's own name (its ``@up.pipeline(name=)``)
    pipeline: str = Field(pattern=PIPELINE_NAME_PATTERN)
    #: the group this one was called in (a sub-pipeline calling another); None: the pipeline
    parent: str | None = Field(None, pattern=IDENT_PATTERN)
    retries: int = Field(0, ge=0, le=100)
    retry_delay: float = Field(0.0, ge=0, le=7 * 86400)
    alerts: tuple[Alert, ...] = ()
    doc: str = ""
    location: SourceLocation | None = None
    #: a mapped sub-pipeline (``sub.map(x=items)``): the parameter fanned out, the list it
    #: takes its items from, and how many copies run at once (None: as many as the engine runs).
    #: Its tasks read the item as an ElementInput; each runs once per item (``task[i]``), and a
    #: task outside reads a member's outputs as a list, in item order (runner rule 12)
    map_over: str | None = Field(None, pattern=IDENT_PATTERN)
    items: Input | None = None
    max_parallel: int | None = Field(None, ge=1, le=10000)

    @model_validator(mode="after")
    def _mapped(self) -> Group:
        if (self.map_over is None) != (self.items is None):
            raise ValueError("a mapped sub-pipeline has both map_over and items")
        if self.max_parallel is not None and self.map_over is None:
            raise ValueError("max_parallel limits a mapped sub-pipeline; this one is not mapped")
        if isinstance(self.items, ElementInput):
            raise ValueError("a mapped sub-pipeline cannot fan out over another's item")
        return self


class Pipeline(_Model):
    schema_version: str = SCHEMA_VERSION
    name: str = Field(pattern=PIPELINE_NAME_PATTERN)
    description: str = ""
    params: tuple[Param, ...] = ()
    tasks: tuple[Task, ...] = ()
    output: Value | None = None
    schedule: Schedule | None = None
    defaults: Policies = Policies()
    alerts: tuple[Alert, ...] = ()
    tags: tuple[str, ...] = ()
    module: str | None = None
    location: SourceLocation | None = None
    #: the shared store (fsspec URL) every worker uses for artifacts, cache entries, attempt
    #: markers and checkpoints; None = each machine's own local folder (one machine only).
    #: Set by ``--store`` at compile/run/deploy time (unipipe.store.with_store), never a credential.
    store: str | None = None
    #: at most this many runs of the pipeline at once (``@up.pipeline(max_active_runs=N)``);
    #: None = the engine's default
    max_active_runs: int | None = Field(None, ge=1, le=10000)
    #: a failed run is run again as a whole, up to this many more times
    #: (``@up.pipeline(retries=N)``): every task starts again, cached tasks hit their entries
    retries: int = Field(0, ge=0, le=100)
    #: seconds to wait before each retry of the whole run (``retry_delay=``)
    retry_delay: float = Field(0.0, ge=0, le=7 * 86400)
    #: seconds one run attempt may take (``timeout=``); past it the attempt fails (its running
    #: tasks are stopped) and, like any failed attempt, is retried while retries remain
    timeout: float | None = Field(None, gt=0, le=30 * 86400)
    #: the sub-pipelines called in this one (``Task.group`` names them), outer before inner
    groups: tuple[Group, ...] = ()
    #: runs created when assets are updated (``@up.pipeline(trigger=up.On(...))``), with or
    #: without a schedule besides
    trigger: Trigger | None = None

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from unipipe.store import check_store_url

        return check_store_url(value)

    # ------------------------------------------------------------ helpers used by everyone

    # (the tasks tuple it was built from, id -> first task with that id): built on first use,
    # rebuilt if model_copy gave this model other tasks; backends look a task up per edge
    _task_index: tuple[tuple[Task, ...], dict[str, Task]] | None = PrivateAttr(default=None)

    def task(self, task_id: str) -> Task:
        cached = self._task_index
        if cached is None or cached[0] is not self.tasks:
            index: dict[str, Task] = {}
            for t in self.tasks:
                index.setdefault(t.id, t)
            cached = self._task_index = (self.tasks, index)
        try:
            return cached[1][task_id]
        except KeyError:
            raise KeyError(task_id) from None

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def effective(self, task: Task | str) -> Policies:
        """The task's policies with the pipeline defaults filled in where the task sets none.

        Alerts are additive only at pipeline level (``Pipeline.alerts``); a task's own alerts
        replace the defaults' task alerts.
        """
        t = self.task(task) if isinstance(task, str) else task
        return t.policies.over(self.defaults)

    def group(self, group_id: str) -> Group:
        for g in self.groups:
            if g.id == group_id:
                return g
        raise KeyError(group_id)

    def topo_order(self) -> list[str]:
        """Task ids in a deterministic topological order (authoring order among ready tasks)."""
        order: list[str] = []
        done: set[str] = set()
        pending = [t.id for t in self.tasks]
        by_id = {t.id: t for t in self.tasks}
        while pending:
            progressed = False
            for tid in list(pending):
                if all(dep in done for dep in by_id[tid].upstream()):
                    order.append(tid)
                    done.add(tid)
                    pending.remove(tid)
                    progressed = True
            if not progressed:
                raise ValueError(f"cycle among tasks {sorted(pending)}")
        return order

    def downstream(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {t.id: [] for t in self.tasks}
        for t in self.tasks:
            for dep in t.upstream():
                if dep in result:
                    result[dep].append(t.id)
        return result

    def to_json(self, *, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent, exclude_none=False)

    def ir_hash(self) -> str:
        """sha256 of the canonical JSON (locations excluded: moving code does not change it)."""
        data = self.model_dump(mode="json")
        if data.get("store") is None:  # pipelines without a store hash as they did before it
            data.pop("store", None)
        for task in data.get("tasks", []):  # likewise fields added later, at their defaults
            if task.get("run_if") == "all_success":
                task.pop("run_if")
            for cond in task.get("when", []):
                if cond.get("otherwise") is False:
                    cond.pop("otherwise")
        for task in data.get("tasks", ()):  # Python tasks hash as they did before commands
            if task.get("command") is None:
                task.pop("command", None)
            if not task.get("env"):
                task.pop("env", None)
            if task.get("max_parallel") is None:
                task.pop("max_parallel", None)
            if task.get("group") is None:
                task.pop("group", None)
            for key in ("artifacts", "logs", "packages", "produces"):  # hash as before them
                if not task.get(key):
                    task.pop(key, None)
        if data.get("max_active_runs") is None:
            data.pop("max_active_runs", None)
        if not data.get("groups"):
            data.pop("groups", None)
        if data.get("trigger") is None:
            data.pop("trigger", None)
        schedule = data.get("schedule")
        if schedule is not None:  # schedules without a window hash as before one existed
            for key, default in (("start", None), ("end", None), ("catchup", False)):
                if schedule.get(key) == default:
                    schedule.pop(key)
        for key, default in (("retries", 0), ("retry_delay", 0.0), ("timeout", None)):
            if data.get(key) == default:  # pipelines without run retries hash as before them
                data.pop(key, None)
        _strip_locations(data)
        canon = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canon.encode()).hexdigest()


def _strip_locations(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("location", None)
        for v in node.values():
            _strip_locations(v)
    elif isinstance(node, list):
        for v in node:
            _strip_locations(v)
