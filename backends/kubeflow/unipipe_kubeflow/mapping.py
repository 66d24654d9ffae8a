"""How each IR policy lands on KFP v2: native first, the unipipe shim where KFP cannot.

Everything here is a pure function of the IR, so the code generator, the support table and the
tests read the same decisions. Facts relied on (kfp 2.16.1, re-checked in the installed source):

- ``PipelineTask.set_retry`` (``kfp/dsl/structures.py::RetryPolicy.to_proto``) takes whole
  seconds only (``convert_duration_to_seconds`` -> int), turns a factor of 0/None into 2.0 and
  caps ``backoffMaxDuration`` at 3600 s. The OSS backend hands it to Argo's ``retryStrategy``:
  retry k waits ``duration * factor**(k-1)``; ``maxDuration`` is a total budget. No per-delay cap,
  no jitter, no exception filter.
- ``set_caching_options(enable_caching, cache_key)``: the OSS fingerprint hashes inputs and the
  container command (which holds the task spec, so the task's source hash and cache version).
  No expiry; ``cache_key`` is a constant, so a key *function* of the inputs cannot be native.
- ``kfp.kubernetes.set_timeout(task, seconds)``: the pod's ``activeDeadlineSeconds``, integer,
  counted from pod start (so it includes container start-up, not only the task function).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from unipipe.ir.features import Feature
from unipipe.ir.models import (
    ElementInput,
    Group,
    LiteralInput,
    OutputInput,
    ParamInput,
    Pipeline,
    Task,
)

#: KFP's hard cap on backoffMaxDuration (kfp/dsl/structures.py)
KFP_MAX_RETRY_WINDOW = 3600
#: extra seconds of pod deadline behind a shim-enforced timeout (a backstop, never the timeout).
#: activeDeadlineSeconds counts from pod start, so it includes starting Python and importing kfp
#: (kfp.dsl.executor_main imports kfp.client: 1-7 s on a loaded 2-core machine).
DEADLINE_GRACE = 30

SCALARS = {"bool": "bool", "int": "int", "float": "float"}


@dataclass(frozen=True)
class RetryPlan:
    num_retries: int
    backoff_duration: int | None = None  # whole seconds, native wait before retry 1
    backoff_factor: float | None = None
    notes: tuple[tuple[Feature, str], ...] = ()


@dataclass(frozen=True)
class TaskPlan:
    """Every decision about one IR task."""

    emulate: tuple[str, ...]
    retry: RetryPlan | None
    native_cache: bool
    deadline: int | None  # activeDeadlineSeconds
    output_kind: str  # "bool" | "int" | "float" | "json" | "items"
    notes: tuple[tuple[Feature, str], ...] = field(default=())


def _integral(x: float) -> bool:
    return float(x).is_integer()


def plan_retry(retry: dict[str, Any] | None) -> tuple[RetryPlan | None, set[str]]:
    """Native set_retry when Argo's formula gives the IR's waits exactly, else the shim waits."""
    if not retry or retry.get("max_retries", 0) <= 0:
        return None, set()
    n = int(retry["max_retries"])
    delay = float(retry.get("delay", 0.0))
    backoff = float(retry.get("backoff", 1.0))
    cap = retry.get("max_delay")
    emulate: set[str] = set()
    notes: list[tuple[Feature, str]] = []
    waits = [delay * backoff ** (k - 1) for k in range(1, n + 1)] if delay > 0 else []
    cap_binds = cap is not None and any(w > float(cap) for w in waits)
    native = (
        delay > 0
        and _integral(delay)
        and _integral(backoff)  # Argo's backoff factor is an int-or-string
        and not cap_binds
        and sum(waits) <= KFP_MAX_RETRY_WINDOW
    )
    if delay > 0 and not native:
        emulate.add("retry.delay")
        if not _integral(delay) or not _integral(backoff):
            notes.append((Feature.RETRY_DELAY,
                          "KFP takes whole seconds and an integral factor: the shim waits"))
        if cap_binds:
            notes.append((Feature.RETRY_MAX_DELAY,
                          "KFP has no per-delay cap: the shim waits the capped delay"))
        if sum(waits) > KFP_MAX_RETRY_WINDOW:
            notes.append((Feature.RETRY_DELAY,
                          "waits exceed KFP's 3600 s retry window: the shim waits"))
    if float(retry.get("jitter", 0.0)) > 0:
        emulate.add("retry.jitter" if native else "retry.delay")
        notes.append((Feature.RETRY_JITTER, "KFP has no jitter: the shim sleeps the random part"))
    if retry.get("retry_on") or retry.get("fail_on"):
        notes.append((Feature.RETRY_EXCEPTION_FILTER,
                      "KFP has no exception filter: the shim fails later attempts at once"))
    if native:
        # backoff 1.0 is passed explicitly: KFP would turn a missing factor into 2.0
        return RetryPlan(n, int(delay), float(backoff), tuple(notes)), emulate
    return RetryPlan(n, None, None, tuple(notes)), emulate


def mapped_sources(ir: Pipeline) -> set[str]:
    """Tasks whose whole output some task or mapped sub-pipeline maps over (their output
    travels as a list of items)."""
    out = set()
    for t in ir.tasks:
        if t.map_over is not None:
            src = t.inputs[t.map_over]
            if isinstance(src, OutputInput):
                out.add(src.task)
    for g in ir.groups:
        if isinstance(g.items, OutputInput):
            out.add(g.items.task)
    return out


def mapped_group(ir: Pipeline, task: Task) -> Group | None:
    """The mapped sub-pipeline (``sub.map(...)``) a task runs in, once per item; None if
    none. A mapped sub-pipeline holds tasks only (IR validation), so it is the task's own."""
    if task.group is None:
        return None
    group = ir.group(task.group)
    return group if group.map_over is not None else None


def output_kind(ir: Pipeline, task: Task, sources: set[str] | None = None) -> str:
    """How a task's output travels as a KFP parameter.

    bool/int/float pass natively. Everything else travels as JSON text in a STRING parameter:
    KFP stores parameters as protobuf Values, where every number in a list or dict becomes a
    double (an int list index would arrive as 1.0), and a value over the inline limit must be
    able to become an artifact pointer. An output that some task maps over is a LIST whose
    items are JSON texts, so ``dsl.ParallelFor`` iterates it natively.
    """
    sources = mapped_sources(ir) if sources is None else sources
    if task.map_over is not None or mapped_group(ir, task) is not None:
        # one value per iteration, collected (dsl.Collected) as a list of JSON texts
        return "json"
    if task.id in sources:
        return "items"
    return SCALARS.get(task.returns or "", "json")


def plan_task(ir: Pipeline, task: Task, sources: set[str] | None = None) -> TaskPlan:
    pol = ir.effective(task)
    emulate: set[str] = set()
    notes: list[tuple[Feature, str]] = []
    retry, retry_emulate = plan_retry(pol.retry.model_dump() if pol.retry else None)
    emulate |= retry_emulate
    if retry is not None:
        notes.extend(retry.notes)
    alert_events = {ev for a in pol.alerts for ev in a.on}
    if pol.alerts:
        emulate.add("alerts")
    native_cache = False
    if pol.cache is not None:
        reads_artifacts = any(s.direction == "input" for s in task.artifacts.values())
        if pol.cache.expire is not None or pol.cache.key_fn is not None or "success" in alert_events:
            emulate.add("cache")
            notes.append((Feature.CACHE, "cached by the shim: KFP's cache has no expiry or key "
                          "function, and a KFP cache hit never starts the task (no success alert)"))
        elif reads_artifacts:
            # KFP's OSS cache key holds each input artifact's name, not its bytes
            # (kubeflow/pipelines backend/src/v2/cacheutils/cache.go, GenerateCacheKey:
            # InputArtifactNames from artifact.GetName(); api/v2alpha1/cache_key.proto), and
            # an uncached producer that runs again makes a new artifact; the reference keys
            # on the bytes. The shim caches by the input files' digests and restores the
            # outputs into KFP's output paths on a hit (unipipe.runtime.artifacts.restore_native).
            emulate.add("cache")
            notes.append((Feature.CACHE, "cached by the shim on the input artifacts' bytes: "
                          "KFP's key holds their identities, new on every run of the producer"))
        elif ir.schedule is not None:
            # a scheduled pipeline's components take the run's logical date as inputs
            # (codegen.takes_logical_date), and KFP's key holds every input parameter value
            # (backend/src/v2/cacheutils/cache.go, GenerateCacheKey): no run would hit another
            # run's entry. The reference's key has no logical date: the shim caches.
            emulate.add("cache")
            notes.append((Feature.CACHE, "cached by the shim: the run's logical date is an "
                          "input of every component of a scheduled pipeline, and KFP's key "
                          "holds every input value"))
        else:
            native_cache = True
    deadline = None
    if pol.timeout is not None:
        # The IR's timeout bounds the task function. A pod deadline counts from container start
        # (Python, kfp's executor imports, on a cluster the image pull), so used alone it would
        # cut short a task that is well within its timeout. The shim stops the function at the
        # IR timeout (and can still send the task's alerts); the pod deadline stays as the
        # engine's guarantee for code the shim cannot interrupt.
        emulate.add("timeout")
        deadline = int(math.ceil(pol.timeout)) + DEADLINE_GRACE
        notes.append((Feature.TIMEOUT, f"the shim stops the function at {pol.timeout:g}s; the "
                      f"pod deadline ({deadline}s) is the backstop"))
    return TaskPlan(tuple(sorted(emulate)), retry, native_cache, deadline,
                    output_kind(ir, task, sources), tuple(notes))


def input_kind(ir: Pipeline, task: Task, name: str, sources: set[str]) -> tuple[str, str]:
    """(Python annotation, codec) of one component input.

    codecs: ``raw`` (native scalar or str param), ``json`` (JSON text), ``json-list`` (a list of
    JSON texts: a Collected fan-out or an ``items`` output).
    """
    if name == task.map_over:
        return "str", "json"
    inp = task.inputs[name]
    if isinstance(inp, ElementInput):
        return "str", "json"  # one item of a list of JSON texts (the mapped group's loop)
    if isinstance(inp, OutputInput):
        producer = ir.task(inp.task)
        home = mapped_group(ir, producer)
        if producer.map_over is not None or (home is not None and home.id != task.group):
            # a fan-out's outputs, or a mapped sub-pipeline member's read outside its copy:
            # dsl.Collected, a list of JSON texts
            return "list", "json-list"
        kind = output_kind(ir, producer, sources)
        if kind == "items":
            return "list", "json-list"
        if kind == "json":
            return "str", "json"
        return kind, "raw"
    if isinstance(inp, ParamInput):
        ptype = ir.param(inp.name).type
        if ptype in ("str", "int", "float", "bool"):
            return ptype, "raw"
        return "str", "json"
    raise AssertionError(f"literal input {name} is not a component argument")


def param_annotation(ptype: str) -> str:
    return ptype if ptype in ("str", "int", "float", "bool") else "str"


def component_inputs(task: Task) -> list[str]:
    """Inputs the component takes as arguments: everything but literals (they live in the spec),
    except a mapped literal list, whose items arrive one per ParallelFor iteration."""
    return [n for n, inp in task.inputs.items()
            if not isinstance(inp, LiteralInput) or n == task.map_over]
