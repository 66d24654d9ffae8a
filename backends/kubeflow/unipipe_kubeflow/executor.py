"""Execute a compiled KFP v2 PipelineSpec on this machine with the open-source backend's semantics.

``kfp.local`` cannot stand in for a cluster: it ignores ``retryPolicy``, never caches, skips
``dsl.If`` bodies and rejects ``PipelineTaskFinalStatus`` (BACKEND_FACTS.md sections 1-3, 6). This
module reads the YAML a user would upload and plays the roles of the KFP driver and Argo:

Scheduling (KFP driver + Argo DAG)
    Tasks of a DAG run in dependency order (``dependentTasks``), one at a time. A task whose
    ``triggerPolicy.strategy`` is the default ``ALL_UPSTREAM_TASKS_SUCCEEDED`` runs only if every
    upstream task succeeded (or was a cache hit); otherwise it is not triggered. A task with
    ``ALL_UPSTREAM_TASKS_COMPLETED`` ("all upstream tasks in any final state", KFP's
    pipeline_spec.proto; an ExitHandler's exit task, or ``.ignore_upstream_failure()``) runs
    once its upstream tasks have ended, whatever their state; an exit task receives the group's
    ``PipelineTaskFinalStatus`` (``taskFinalStatus`` input: state SUCCEEDED/FAILED, error). Such
    a task after a task that never started fails without running, as the KFP driver fails to
    resolve a status without the producer's execution (backend/src/v2/driver/resolve.go).
Sub-pipelines (a pipeline used as a component: a ``dag`` component without a loop or a
    condition)
    Run as a nested DAG with the task's inputs as the DAG's inputs; its outputs are its
    ``dag.outputs`` (``valueFromParameter``: a subtask's output parameter, itself a nested
    DAG's output when that subtask is one). Its state is the DAG's: FAILED if one of its
    tasks failed, and the tasks after it in the parent are then upstream-failed, or run if
    they ignore upstream failure. A ``retryPolicy`` on a DAG task is not applied: the KFP
    backend's Argo compiler retries container executors only (argocompiler/dag.go, the
    ``ComponentSpec_Dag`` case builds a DAG driver and a DAG task, no retryStrategy).
    A DAG has failed if any of its tasks failed, even when a task after it then succeeded (this
    project's reading of Argo's DAG phase; not checked on a cluster).
    Independent branches keep running after a failure. Argo's DAG ``failFast`` (default on)
    would stop scheduling *new* tasks once one fails on a cluster; which tasks had already
    started there depends on pod timing, which cannot be known without a cluster.
Conditions (``dsl.If``)
    ``triggerPolicy.condition`` is a CEL expression over ``inputs.parameter_values``; the subset
    the KFP compiler emits (comparisons, ``&&``, ``||``, ``!``, literals) is evaluated. False:
    the task (a condition DAG) and everything inside it is skipped.
Fan-out (``dsl.ParallelFor`` / ``dsl.Collected``)
    ``parameterIterator`` runs the loop DAG once per item (``items.inputParameter`` or
    ``items.raw``), the item bound to ``itemInput``; iterations run in order (so any
    ``iteratorPolicy.parallelismLimit`` is honoured). The loop DAG's output parameters are the
    lists of each iteration's value (``dsl.Collected``). One failed iteration fails the loop.
Retries (Argo ``retryStrategy`` as the KFP backend compiles ``retryPolicy``)
    ``maxRetryCount`` retries; retry k waits ``backoffDuration * backoffFactor**(k-1)``;
    ``backoffMaxDuration`` is a total budget measured from the first attempt's start: a retry
    whose wait would end past it is not started.
Caching (KFP v2 OSS cache, ``backend/src/v2/cacheutils``)
    With ``cachingOptions.enableCache`` the fingerprint is sha256 of the canonical JSON of the
    input parameter values, input artifact names, output parameter types, output artifact
    types, image and command+args (unresolved placeholders), or, with ``cacheKey``, of the
    component name and that key. A hit reuses the stored outputs and starts no container;
    only successful executions are stored. Entries never expire (KFP v2 has no staleness).
    The store is an SQLite file under the pipeline root, scoped by pipeline name.
Timeouts (kfp-kubernetes ``activeDeadlineSeconds``)
    The container's process group is killed when the deadline passes; that attempt failed and
    is retried like any failure (Argo retries a pod that hit its deadline).
Artifacts (the KFP driver and launcher)
    An output artifact gets the URI ``<run>/<component>-a<attempt>/<name>`` (a local path, as
    ``kfp.local`` lays them out under its pipeline root, executor_input_utils.py ~120-146);
    the component's executor writes its metadata (Metrics' values among it) into
    ``executor_output.json`` (kfp/dsl/executor.py ~318-348), which is what the run records
    for each output. An input artifact (``taskOutputArtifact``) is the producer's recorded
    output: its URI and metadata. A ``dsl.importer`` runs no container: its output is an
    artifact at the constant URI (kfp/local/importer_handler.py does the same). A cache hit
    reuses the recorded outputs, so a consumer reads the earlier run's files.
Packages (``packages_to_install``)
    The command's own pip prelude runs, with ``PIP_NO_INDEX``: a requirement the interpreter
    does not satisfy fails the launch before the function starts, as a failed install does
    on a cluster (the pod exits non-zero).
Launching one container
    kfp.local's own pieces build it: ``executor_input_utils.construct_executor_input``,
    ``placeholder_utils.replace_placeholders``, ``subprocess_task_handler.replace_python_executable``
    (the current interpreter, no venv, no pip) and ``executor_output_utils.get_outputs_for_task``.
    The process gets ``UNIPIPE_RUN_ID``, ``UNIPIPE_KFP_ATTEMPT`` (Argo's ``{{retries}}`` + 1) and
    ``UNIPIPE_KFP_ITERATION`` (the innermost loop index), which KFP itself does not pass.

Not modelled (no cluster here): pod scheduling and resource limits (recorded in the spec, not
enforced), images (every task runs in this interpreter), an importer's remote URI (a pod reads
gs://, s3://, minio:// URIs at /gcs/, /s3/, /minio/; here only file:// URIs can be read).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUCCEEDED, FAILED, CACHED, SKIPPED, UPSTREAM_FAILED = (
    "SUCCEEDED", "FAILED", "CACHED", "SKIPPED", "UPSTREAM_FAILED")
_DONE_OK = (SUCCEEDED, CACHED)


@dataclass
class Launch:
    attempt: int
    start: float
    end: float
    exit_code: int | None
    timed_out: bool
    log: str
    #: the container's command pip-installs packages_to_install before the function starts
    installs: bool = False


@dataclass
class Execution:
    """One leaf task instance (one per ParallelFor iteration)."""

    name: str  # task key in its DAG
    display: str  # taskInfo.name
    component: str
    iterations: tuple[int, ...]
    state: str
    launches: list[Launch] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None
    reason: str | None = None
    decided: tuple[float, float] | None = None  # when a cache hit was looked up (no launch)


@dataclass
class PipelineRunRecord:
    pipeline: str
    run_id: str
    state: str
    executions: list[Execution]
    pipeline_root: str


class SpecError(ValueError):
    """The PipelineSpec uses something this executor does not implement."""


class _MissingOutput(LookupError):
    """An upstream task succeeded without writing the output parameter a consumer reads."""


class _ProducerNeverRan(LookupError):
    """A ``taskFinalStatus`` input names a task that never started."""

    def __init__(self, message: str, state: str):
        super().__init__(message)
        self.state = state


# ---------------------------------------------------------------- small helpers

#: kfp.dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER / PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER
#: (kfp/dsl/__init__.py:191, 204)
CREATE_TIME_PLACEHOLDER = "{{$.pipeline_job_create_time_utc}}"
SCHEDULE_TIME_PLACEHOLDER = "{{$.pipeline_job_schedule_time_utc}}"


def pipeline_job_times(schedule_time: str | None = None,
                       now: float | None = None) -> tuple[str, str]:
    """(create time, schedule time) of a run, as the KFP backend fills the two placeholders in
    a task input's ``runtimeValue.constant``: RFC 3339 in UTC, whole seconds (Go's
    ``time.RFC3339``: ``2026-01-09T13:00:00Z``). A recurring run's schedule time is the time
    its ScheduledWorkflow fired for (the ``workflowEpoch`` label); a run without one (a one-off
    run) gets its creation time (kubeflow/pipelines backend/src/v2, executor plugin:
    ``resolvePipelineJobScheduleTimeUTCFromWorkflow`` falls back to the Workflow's
    CreationTimestamp; driver test ``TestResolvePipelineJobScheduleTimePlaceholder``).
    kfp.local 2.16.1 does not fill them at all (kfp/local/placeholder_utils.py ~366-383 knows
    only the job name/id, task name/id and pipeline root): it would pass the text itself."""
    from datetime import UTC, datetime

    created = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    create = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    if schedule_time is None:
        return create, create
    when = datetime.fromisoformat(schedule_time.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"schedule time {schedule_time!r} has no UTC offset")
    return create, when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")



def _seconds(text: str | None) -> float:
    if not text:
        return 0.0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(text).strip())
    if not m:
        raise SpecError(f"cannot read duration {text!r}")
    return float(m.group(1))


def _topo(tasks: dict[str, Any]) -> list[str]:
    order: list[str] = []
    done: set[str] = set()
    pending = sorted(tasks)
    while pending:
        ready = [n for n in pending if all(d in done for d in tasks[n].get("dependentTasks", []))]
        if not ready:
            raise SpecError(f"cycle among {pending}")
        for n in ready:
            order.append(n)
            done.add(n)
            pending.remove(n)
    return order


_CEL_TOKEN = re.compile(r"inputs\.parameter_values\[|&&|\|\||!(?!=)|\btrue\b|\bfalse\b|\bnull\b")


def evaluate_condition(expr: str, values: dict[str, Any]) -> bool:
    """The CEL subset the KFP compiler writes for dsl.If/Elif/Else, evaluated without eval()."""
    repl = {"inputs.parameter_values[": "P[", "&&": " and ", "||": " or ", "!": " not ",
            "true": "True", "false": "False", "null": "None"}
    py = _CEL_TOKEN.sub(lambda m: repl[m.group(0)], expr).strip()
    try:
        tree = ast.parse(py, mode="eval")
    except SyntaxError as exc:
        raise SpecError(f"cannot read condition {expr!r}: {exc}") from None

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BoolOp):
            vals = [ev(v) for v in node.values]
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "P":
            return values[ev(node.slice)]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 1:
            conv = {"int": int, "double": float, "string": str}.get(node.func.id)
            if conv is not None:
                return conv(ev(node.args[0]))
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            left, right = ev(node.left), ev(node.comparators[0])
            op = node.ops[0]
            table: dict[type, Callable[[Any, Any], bool]] = {
                ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
                ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
                ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b}
            if type(op) in table:
                return table[type(op)](left, right)
        raise SpecError(f"unsupported condition syntax in {expr!r}")

    return bool(ev(tree))


def fingerprint(pipeline: str, component: str, component_spec: dict[str, Any],
                container: dict[str, Any], params: dict[str, Any], cache_key: str | None,
                artifacts: dict[str, Any] | None = None) -> str:
    """The OSS cache key (see module docstring). ``inputArtifactNames`` holds each input
    artifact's name (backend/src/v2/cacheutils/cache.go, GenerateCacheKey: ``artifact.GetName()``
    per input), one per produced artifact: here its URI, which names the producing launch."""
    if cache_key:
        return hashlib.sha256(f"{component}\0{cache_key}".encode()).hexdigest()
    outs = component_spec.get("outputDefinitions", {})
    artifacts = artifacts or {}
    key = {
        "inputArtifactNames": {name: [artifacts[name]["uri"]] if name in artifacts else []
                               for name in sorted(component_spec.get("inputDefinitions", {})
                                                  .get("artifacts", {}))},
        "inputParameterValues": {k: params[k] for k in sorted(params)},
        "outputArtifactsWithTypes": {k: v.get("artifactType", {}) for k, v in
                                     sorted(outs.get("artifacts", {}).items())},
        "outputParametersTypes": {k: v.get("parameterType") for k, v in
                                  sorted(outs.get("parameters", {}).items())},
        "containerSpec": {"image": container.get("image", ""),
                          "cmdArgs": list(container.get("command", [])) + list(container.get("args", []))},
        "pvcNames": [],
    }
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def is_artifact(value: Any) -> bool:
    """An artifact in a task's outputs (a plain dict, so outputs stay JSON for the cache)."""
    return isinstance(value, dict) and value.get("kind") == ARTIFACT_KIND


ARTIFACT_KIND = "kfp-artifact"


def artifact_record(art: Any) -> dict[str, Any]:
    """A kfp dsl.Artifact from an executor output -> the executor's record of it."""
    return {"kind": ARTIFACT_KIND, "name": art.name, "uri": art.uri,
            "schemaTitle": art.schema_title, "metadata": dict(art.metadata or {})}


def _dsl_artifact(rec: dict[str, Any]) -> Any:
    from kfp.dsl.executor import create_artifact_instance

    return create_artifact_instance({"name": rec["name"], "uri": rec["uri"],
                                     "metadata": rec.get("metadata") or {},
                                     "type": {"schemaTitle": rec["schemaTitle"]}})


class CacheDB:
    """SQLite store of successful executions' outputs, keyed by (pipeline, fingerprint)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._conn() as db:
            db.execute("CREATE TABLE IF NOT EXISTS cache (pipeline TEXT, fingerprint TEXT, "
                       "outputs TEXT, created REAL, run_id TEXT, PRIMARY KEY (pipeline, fingerprint))")

    def _conn(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, pipeline: str, fp: str) -> dict[str, Any] | None:
        with self._conn() as db:
            row = db.execute("SELECT outputs FROM cache WHERE pipeline=? AND fingerprint=?",
                             (pipeline, fp)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, pipeline: str, fp: str, outputs: dict[str, Any], run_id: str) -> None:
        with self._conn() as db:
            db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?, ?)",
                       (pipeline, fp, json.dumps(outputs), time.time(), run_id))


# ---------------------------------------------------------------- the executor


class SpecExecutor:
    def __init__(self, spec_path: str | Path, *, pipeline_root: str | Path, run_id: str | None = None,
                 env: dict[str, str] | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, code_url: str | None = None,
                 schedule_time: str | None = None):
        """``code_url``: launch every component in its own sandbox (:mod:`unipipe.sandbox`), as a
        pod of its own, with the pipeline's code only from the code package published there.
        ``schedule_time``: the time a recurring run was scheduled for (RFC 3339, UTC); None for a
        one-off run, whose schedule time is then its creation time (see
        :func:`pipeline_job_times`)."""
        import yaml

        docs = [d for d in yaml.safe_load_all(Path(spec_path).read_text()) if d]
        self.spec = docs[0]
        platform = docs[1] if len(docs) > 1 else {}
        self.deadlines = {
            label: int(cfg["activeDeadlineSeconds"])
            for label, cfg in platform.get("platforms", {}).get("kubernetes", {})
            .get("deploymentSpec", {}).get("executors", {}).items()
            if cfg.get("activeDeadlineSeconds")
        }
        self.pipeline = self.spec["pipelineInfo"]["name"]
        self.pipeline_root = Path(pipeline_root)
        self.run_id = run_id or f"kfp-{uuid.uuid4().hex[:12]}"
        self.env = dict(os.environ if env is None else env)
        self.sleep = sleep
        self.clock = clock
        self.cache = CacheDB(self.pipeline_root / "kfp-cache.sqlite3")
        self.executions: list[Execution] = []
        self.run_dir = self.pipeline_root / self.run_id
        self.code_url = code_url
        self._wheels: dict[str, bytes] | None = None  # fetched from the store once per run
        self.create_time, self.schedule_time = pipeline_job_times(schedule_time)

    # ------------------------------------------------------------ entry

    def run(self, arguments: dict[str, Any] | None = None) -> PipelineRunRecord:
        root = self.spec["root"]
        inputs = {}
        for name, pdef in root.get("inputDefinitions", {}).get("parameters", {}).items():
            if arguments and name in arguments:
                inputs[name] = arguments[name]
            elif "defaultValue" in pdef:
                inputs[name] = pdef["defaultValue"]
            elif not pdef.get("isOptional"):
                raise SpecError(f"pipeline input {name!r} has no value")
            if pdef.get("parameterType") == "NUMBER_INTEGER" and name in inputs:
                inputs[name] = int(inputs[name])
        state, _outs, _err = self._run_dag(root, inputs, ())
        return PipelineRunRecord(self.pipeline, self.run_id, state, self.executions,
                                 str(self.pipeline_root))

    # ------------------------------------------------------------ DAGs

    def _run_dag(self, comp: dict[str, Any], inputs: dict[str, Any],
                 iterations: tuple[int, ...]) -> tuple[str, dict[str, Any], str | None]:
        dag = comp["dag"]
        tasks = dag.get("tasks", {})
        states: dict[str, str] = {}
        outputs: dict[str, dict[str, Any]] = {}
        errors: dict[str, str | None] = {}
        for name in _topo(tasks):
            task = tasks[name]
            trigger = task.get("triggerPolicy", {})
            deps = task.get("dependentTasks", [])
            if trigger.get("strategy") != "ALL_UPSTREAM_TASKS_COMPLETED":
                blocked = [d for d in deps if states[d] not in _DONE_OK]
                if blocked:
                    failed = any(states[d] in (FAILED, UPSTREAM_FAILED) for d in blocked)
                    states[name] = UPSTREAM_FAILED if failed else SKIPPED
                    self._mark(task, states[name], iterations, f"upstream {blocked[0]} {states[blocked[0]]}")
                    continue
            try:
                args = self._resolve_inputs(task, inputs, outputs, states, errors)
            except _ProducerNeverRan as exc:
                states[name] = exc.state
                if exc.state == FAILED:
                    errors[name] = str(exc)
                self._mark(task, exc.state, iterations, str(exc))
                continue
            except _MissingOutput as exc:
                # the KFP driver fails a task whose input parameter was never produced
                states[name], errors[name] = FAILED, str(exc)
                self._mark(task, FAILED, iterations, str(exc))
                continue
            cond = trigger.get("condition")
            if cond and not evaluate_condition(cond, args):
                states[name] = SKIPPED
                self._mark(task, SKIPPED, iterations, "condition false")
                continue
            child_name = task["componentRef"]["name"]
            child = self.spec["components"][child_name]
            if "dag" in child and "parameterIterator" in task:
                state, outs, err = self._run_loop(task, child, args, iterations)
            elif "dag" in child:
                state, outs, err = self._run_dag(child, args, iterations)
            else:
                state, outs, err = self._run_container(name, task, child_name, child, args, iterations)
            states[name], outputs[name], errors[name] = state, outs, err
        failed = [n for n, s in states.items() if s == FAILED]
        state = FAILED if failed else SUCCEEDED
        dag_outputs = {}
        for out_name, src in dag.get("outputs", {}).get("parameters", {}).items():
            sel = src.get("valueFromParameter")
            if sel and sel["producerSubtask"] in outputs:
                dag_outputs[out_name] = outputs[sel["producerSubtask"]].get(sel["outputParameterKey"])
        return state, dag_outputs, (errors.get(failed[0]) or f"task {failed[0]} failed") if failed else None

    def _run_loop(self, task: dict[str, Any], child: dict[str, Any], args: dict[str, Any],
                  iterations: tuple[int, ...]) -> tuple[str, dict[str, Any], str | None]:
        it = task["parameterIterator"]
        items_src = it["items"]
        if "inputParameter" in items_src:
            items = args[items_src["inputParameter"]]
        else:
            items = json.loads(items_src["raw"])
        if isinstance(items, str):
            items = json.loads(items)
        state, error = SUCCEEDED, None
        collected: dict[str, list[Any]] = {}
        for i, item in enumerate(items):
            st, outs, err = self._run_dag(child, {**args, it["itemInput"]: item}, iterations + (i,))
            if st == FAILED and state != FAILED:
                state, error = FAILED, err
            for key, value in outs.items():
                collected.setdefault(key, []).append(value)
        return state, collected, error

    def _resolve_inputs(self, task: dict[str, Any], inputs: dict[str, Any],
                        outputs: dict[str, dict[str, Any]], states: dict[str, str],
                        errors: dict[str, str | None]) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for key, src in task.get("inputs", {}).get("artifacts", {}).items():
            # The driver resolves an input artifact to the producer's output artifact (its
            # URI and metadata as the producer's executor output recorded them)
            if "componentInputArtifact" in src:
                # a DAG's input (a dsl.If branch or a loop body reading a task outside it)
                args[key] = inputs[src["componentInputArtifact"]]
                continue
            sel = src.get("taskOutputArtifact")
            if sel is None:
                raise SpecError(f"unsupported input artifact source for {key!r}: {sorted(src)}")
            produced = outputs.get(sel["producerTask"], {})
            art = produced.get(sel["outputArtifactKey"])
            if not is_artifact(art):
                raise _MissingOutput(f"input artifact {key!r}: task {sel['producerTask']} "
                                     f"produced no artifact {sel['outputArtifactKey']!r}")
            args[key] = art
        for key, src in task.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in src:
                args[key] = inputs[src["componentInputParameter"]]
            elif "taskOutputParameter" in src:
                sel = src["taskOutputParameter"]
                produced = outputs.get(sel["producerTask"], {})
                if sel["outputParameterKey"] not in produced:
                    raise _MissingOutput(f"input {key!r}: task {sel['producerTask']} produced no "
                                         f"output {sel['outputParameterKey']!r}")
                args[key] = produced[sel["outputParameterKey"]]
            elif "runtimeValue" in src:
                args[key] = self._runtime_constant(src["runtimeValue"]["constant"])
            elif "taskFinalStatus" in src:
                producer = src["taskFinalStatus"]["producerTask"]
                if states[producer] == UPSTREAM_FAILED:
                    # The KFP driver resolves the status from the producer's execution and
                    # fails when there is none (kubeflow/pipelines backend/src/v2/driver/
                    # resolve.go, TaskFinalStatus: "producer task, %v, not in tasks"): the
                    # task fails without running, so a sub-pipeline that never started sends
                    # no alert. (A producer skipped by a condition: its exit task sits in the
                    # same dsl.If, so this is only reached with a skipped upstream.)
                    raise _ProducerNeverRan(f"producer task, {producer}, not in tasks", FAILED)
                if states[producer] == SKIPPED:
                    raise _ProducerNeverRan(f"producer task {producer} was skipped", SKIPPED)
                ok = states[producer] in _DONE_OK
                args[key] = {
                    "state": "SUCCEEDED" if ok else "FAILED",
                    "pipelineJobResourceName": f"{self.pipeline}/{self.run_id}",
                    "pipelineTaskName": producer,
                    "error": {} if ok else {"code": 2, "message": errors.get(producer) or "failed"},
                }
            else:
                raise SpecError(f"unsupported input source for {key!r}: {sorted(src)}")
            if src.get("parameterExpressionSelector"):
                raise SpecError("parameterExpressionSelector is not supported")
        return args

    def _runtime_constant(self, value: Any) -> Any:
        """A task input's constant; the KFP driver fills the pipeline-job time placeholders
        when the whole constant is one (see :func:`pipeline_job_times`)."""
        if value == CREATE_TIME_PLACEHOLDER:
            return self.create_time
        if value == SCHEDULE_TIME_PLACEHOLDER:
            return self.schedule_time
        return value

    def _mark(self, task: dict[str, Any], state: str, iterations: tuple[int, ...], reason: str) -> None:
        """Record every leaf task under a task that will not run."""
        comp_name = task["componentRef"]["name"]
        comp = self.spec["components"][comp_name]
        if "dag" in comp:
            for sub in comp["dag"].get("tasks", {}).values():
                self._mark(sub, state, iterations, reason)
            return
        self.executions.append(Execution(task["taskInfo"]["name"], task["taskInfo"]["name"],
                                         comp_name, iterations, state, reason=reason))

    # ------------------------------------------------------------ one container task

    def _run_container(self, name: str, task: dict[str, Any], comp_name: str, comp: dict[str, Any],
                       args: dict[str, Any], iterations: tuple[int, ...]) -> tuple[str, dict[str, Any], str | None]:
        label = comp["executorLabel"]
        executor = self.spec["deploymentSpec"]["executors"][label]
        display = task.get("taskInfo", {}).get("name", name)
        if "importer" in executor:
            return self._run_importer(name, display, comp_name, executor["importer"], iterations)
        container = executor["container"]
        exe = Execution(name, display, comp_name, iterations, FAILED)
        self.executions.append(exe)
        in_arts = set(comp.get("inputDefinitions", {}).get("artifacts", {}))
        params = {k: v for k, v in args.items() if k not in in_arts}
        arts = {k: v for k, v in args.items() if k in in_arts}
        caching = task.get("cachingOptions", {})
        if caching.get("enableCache"):
            looked_up = time.time()
            exe.fingerprint = fingerprint(self.pipeline, comp_name, comp, container, params,
                                          caching.get("cacheKey"), arts)
            hit = self.cache.get(self.pipeline, exe.fingerprint)
            if hit is not None:
                exe.state, exe.outputs = CACHED, hit
                exe.decided = (looked_up, time.time())
                return CACHED, hit, None
        policy = task.get("retryPolicy", {})
        retries = int(policy.get("maxRetryCount", 0))
        duration = _seconds(policy.get("backoffDuration"))
        factor = float(policy.get("backoffFactor", 2.0) or 2.0)
        budget = _seconds(policy.get("backoffMaxDuration")) if policy else 0.0
        first_start = self.clock()
        for attempt in range(1, retries + 2):
            if attempt > 1:
                wait = duration * factor ** (attempt - 2)
                if budget and self.clock() + wait - first_start > budget:
                    exe.reason = "retry budget (backoffMaxDuration) exhausted"
                    break
                self.sleep(wait)
            launch, outputs = self._launch(display, comp_name, comp, label, container, args,
                                           iterations, attempt)
            exe.launches.append(launch)
            if launch.exit_code == 0 and not launch.timed_out:
                exe.state, exe.outputs = SUCCEEDED, outputs
                if exe.fingerprint:
                    self.cache.put(self.pipeline, exe.fingerprint, outputs, self.run_id)
                return SUCCEEDED, outputs, None
        last = exe.launches[-1] if exe.launches else None
        why = ("deadline exceeded" if last and last.timed_out
               else f"exit code {last.exit_code}" if last else exe.reason)
        return FAILED, {}, f"task {display} failed: {why}"

    def _run_importer(self, name: str, display: str, comp_name: str, importer: dict[str, Any],
                      iterations: tuple[int, ...]) -> tuple[str, dict[str, Any], str | None]:
        """A dsl.importer: no container; its output is an artifact at the constant URI, of the
        importer's type (kfp/local/importer_handler.py, run_importer, does the same)."""
        uri = importer.get("artifactUri", {}).get("constant")
        if not isinstance(uri, str):
            raise SpecError(f"importer {display}: only a constant artifactUri is supported")
        rec = {"kind": ARTIFACT_KIND, "name": "artifact", "uri": uri,
               "schemaTitle": importer.get("typeSchema", {}).get("schemaTitle", "system.Artifact"),
               "metadata": dict(importer.get("metadata") or {})}
        exe = Execution(name, display, comp_name, iterations, SUCCEEDED, outputs={"artifact": rec})
        now = time.time()
        exe.decided = (now, now)
        self.executions.append(exe)
        return SUCCEEDED, {"artifact": rec}, None

    def _launch(self, display: str, comp_name: str, comp: dict[str, Any], label: str,
                container: dict[str, Any], args: dict[str, Any], iterations: tuple[int, ...],
                attempt: int) -> tuple[Launch, dict[str, Any]]:
        from google.protobuf import json_format
        from kfp.local import executor_input_utils, executor_output_utils, placeholder_utils
        from kfp.local.subprocess_task_handler import replace_python_executable
        from kfp.pipeline_spec import pipeline_spec_pb2

        comp_pb = json_format.ParseDict(comp, pipeline_spec_pb2.ComponentSpec())
        suffix = "".join(f"-{i}" for i in iterations)
        task_resource = f"{comp_name[len('comp-'):]}{suffix}-a{attempt}"
        task_root = str(self.run_dir / task_resource)
        in_arts = set(comp.get("inputDefinitions", {}).get("artifacts", {}))
        arguments = {k: _dsl_artifact(v) if k in in_arts else v for k, v in args.items()}
        # Output artifacts get URIs <task_root>/<name> (a local path, as kfp.local gives them;
        # on a cluster <pipeline_root>/<run>/<task>/<name> in the object store)
        executor_input = executor_input_utils.construct_executor_input(
            component_spec=comp_pb, arguments=arguments, task_root=task_root,
            block_input_artifact=False)
        ei_dict = executor_input_utils.executor_input_to_dict(executor_input, comp_pb)
        command = list(container.get("command", [])) + list(container.get("args", []))
        command = placeholder_utils.replace_placeholders(
            full_command=command, executor_input_dict=ei_dict,
            pipeline_resource_name=f"{self.pipeline}-{self.run_id}",
            task_resource_name=task_resource, pipeline_root=str(self.pipeline_root),
            unique_pipeline_id=self.run_id)
        env = dict(self.env, UNIPIPE_RUN_ID=self.run_id, UNIPIPE_KFP_ATTEMPT=str(attempt),
                   UNIPIPE_KFP_ITERATION=str(iterations[-1]) if iterations else "")
        # KFP's pip prelude (a component with packages_to_install) finds what it installs in
        # the interpreter's environment, the "image"; it never downloads (PIP_NO_INDEX): what
        # is missing fails the launch rather than changing the environment.
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
        env["PIP_NO_INDEX"] = "1"
        box = None
        if self.code_url is not None:
            # A pod of its own; HOME, TMPDIR and the working folder are the sandbox's. A
            # component compiled with the store fetches the code package itself (codegen's
            # unipipe_code); for one that expects its image to have it (a task with an image of
            # its own) the launcher stages the package, as that image would hold it.
            from unipipe import sandbox
            from unipipe_kubeflow.codegen import CODE_FUNCTION

            fetches = any(f"{CODE_FUNCTION}(" in part for part in command)
            if self._wheels is None and not fetches:
                self._wheels = sandbox.fetch_code(self.code_url)
            box = sandbox.make(self.run_dir / "sandboxes" / task_resource,
                               {} if fetches else self._wheels or {})
            command = replace_python_executable(command, str(box.python))
            # The image's PATH: none of the user's own tool folders (sandbox.image_path_entries).
            env = box.env(env, image_path=True)
            # KFP's pip prelude installs into the image's environment, where every package is
            # there already; what it still spends most of its time on is an environment-wide
            # conflict scan (the dependencies of every installed distribution, read from their
            # metadata: pip/_internal/commands/install.py ~714 _determine_conflicts), which only
            # prints a warning. Without it the prelude resolves and installs the same way and a
            # missing package still fails the launch. "false": pip gives the store_false option
            # --no-warn-conflicts its value from the variable (pip/_internal/cli/parser.py ~286),
            # so warn_about_conflicts = False.
            env["PIP_NO_WARN_CONFLICTS"] = "false"
            scratch, cwd = box.tmp, str(box.work)
        else:
            command = replace_python_executable(command, sys.executable)
            # The component's /tmp, as a container has its own: KFP's command writes the
            # component source to `mktemp -d` (a folder per launch that nothing removes
            # outside a container).
            scratch, cwd = Path(task_root) / "tmp", None
            scratch.mkdir(parents=True, exist_ok=True)
            env["TMPDIR"] = str(scratch)
        log_path = self.run_dir / "logs" / f"{task_resource}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = self.deadlines.get(label)
        start = time.time()
        timed_out = False
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
            try:
                code: int | None = proc.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                code = proc.wait()
        shutil.rmtree(box.root if box is not None else scratch, ignore_errors=True)
        launch = Launch(attempt, start, time.time(), code, timed_out, str(log_path),
                        installs=any("pip install" in part for part in command))
        outputs: dict[str, Any] = {}
        if code == 0 and not timed_out:
            got = executor_output_utils.get_outputs_for_task(executor_input=executor_input,
                                                             component_spec=comp_pb)
            out_arts = set(comp.get("outputDefinitions", {}).get("artifacts", {}))
            outputs = {k: artifact_record(v) if k in out_arts else v for k, v in got.items()}
        return launch, outputs
