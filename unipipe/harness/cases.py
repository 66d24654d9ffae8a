"""Conformance cases as data, in the manner of the CWL conformance suite.

A case is a folder ``<id>/`` holding a pipeline file and a ``case.yaml``::

    id: retry_fail_twice                 # equals the folder name
    doc: A task fails twice with ConnectionError, then succeeds.
    pipeline: case_retry_fail_twice.py:pipe   # relative to the folder (or module:name)
    paths: [../../../examples]           # optional: more import folders, relative to the folder
    store: shared                        # optional: run with a shared store (a folder of the
                                         # run's own, or a prefix of `conform --store URL`)
    required: true                       # the required tier: no backend may skip it
    params: {fail_times: 2}
    tags: [params, retry, retry.delay]   # must equal features_used() of the pipeline
    expect:
      state: success                     # or failed; or `refused: true` (rejected before running)
      output: ok after 3
      tasks: {flaky: {state: success, attempts: 3}}
      alerts: [{task: flaky, event: retry, channel: webhook}]   # exact multiset; [] when absent
      run_attempts: 1                    # optional: tries of the whole run (pipeline retries)
    second_run:                          # optional: the same case again (same stores)
      wait: 0                            # seconds between the runs
      params: {}                         # overrides for the second run
      expect: {state: success, tasks: {flaky: {cache_hit: true, attempts: 1}}, alerts: []}
    delay_tolerance: {early: 0.1, late: 10.0, late_ratio: 1.0}   # the defaults
    backends:                            # expected differences, strict
      kubeflow: {status: notyet, reason: "..."}
      airflow@2.11: {status: notyet, reason: "..."}   # keyed by the column's label, exactly

A *chain* case (issue 14: pipeline A's task updates an asset and the engine itself starts
pipeline B) names A as ``pipeline`` and has no ``params``, ``expect`` nor ``second_run`` of its
own; its A runs and what each made the engine start are listed under ``chain``::

    pipeline: case_asset_chain_any.py:producer    # A: a task with produces=[asset]
    tags: [...]        # features_used() of A and B together, in the enum's order
    chain:
      consumer: case_asset_chain_any.py:consumer  # B: trigger=up.On(asset, ...)
      runs:                                       # A's runs, one after the other
        - params: {fail: true}
          expect: {state: failed}                 # what this A run shows (as `expect` above)
          consumer_runs: 0                        # B runs the engine created after it
        - {params: {fail: false}, expect: {state: success}, consumer_runs: 1}
      expect: {state: success, output: {...}}     # what every B run shows

Each A run waits until the B runs it caused were created and finished before the next A run
starts (so the count per A run is deterministic); an engine's other counts are declared
differences (``backends:``). The reference's meaning (:mod:`unipipe.local.chain`): after a
successful A run, B runs once per update in ``any`` mode, and for ``all`` once every asset was
updated since B's last run; a failed task updates nothing.

Statuses of an expected difference (ibis' markers, all strict: a case that passes anyway fails the
run): ``unsupported`` (compile must refuse), ``notimpl`` (we have not built it), ``notyet`` (the
engine lacks it), ``never`` (will not be, with a reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPECTED_STATUSES = ("unsupported", "notimpl", "notyet", "never")
TASK_FIELDS = ("state", "attempts", "cache_hit", "error_type", "output", "max_concurrent")
DEFAULT_TOLERANCE = {"early": 0.1, "late": 10.0, "late_ratio": 1.0}


class CaseError(ValueError):
    """A case file that does not say what it means; the message names the file and the field."""


@dataclass(frozen=True)
class Expectation:
    """What one run must show. ``None`` fields are not checked (the reference still is)."""

    refused: bool = False
    state: str | None = None
    output: Any = None
    check_output: bool = False
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] | None = None
    #: how many tries of the whole run (``@up.pipeline(retries=N)``)
    run_attempts: int | None = None
    #: metrics by task label and name, as the engine recorded them (RunResult.metrics)
    metrics: dict[str, dict[str, Any]] | None = None
    #: the sha256 of each output artifact, by task label and name (RunResult.artifacts)
    artifacts: dict[str, dict[str, str]] | None = None
    #: Markdown reports by task label (RunResult.reports)
    reports: dict[str, str] | None = None

    @classmethod
    def parse(cls, data: Any, where: str) -> Expectation:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise CaseError(f"{where}: expect must be a mapping")
        unknown = set(data) - {"refused", "state", "output", "tasks", "alerts", "run_attempts",
                               "metrics", "artifacts", "reports"}
        if unknown:
            raise CaseError(f"{where}: unknown expect field(s) {sorted(unknown)}")
        state = data.get("state")
        if state not in (None, "success", "failed"):
            raise CaseError(f"{where}: expect.state is success or failed, not {state!r}")
        tasks = data.get("tasks") or {}
        if not isinstance(tasks, dict):
            raise CaseError(f"{where}: expect.tasks maps task labels to fields")
        for label, fields in tasks.items():
            if not isinstance(fields, dict) or set(fields) - set(TASK_FIELDS):
                raise CaseError(f"{where}: expect.tasks.{label} takes only {TASK_FIELDS}")
            peak = fields.get("max_concurrent")
            if "max_concurrent" in fields and (isinstance(peak, bool) or not isinstance(peak, int)
                                               or peak < 1):
                raise CaseError(f"{where}: expect.tasks.{label}.max_concurrent is a whole "
                                f"number >= 1 (at most that many elements at once), not {peak!r}")
        alerts = data.get("alerts")
        if alerts is not None:
            if not isinstance(alerts, list):
                raise CaseError(f"{where}: expect.alerts is a list of {{task, event, channel}}")
            for a in alerts:
                if not isinstance(a, dict) or set(a) != {"task", "event", "channel"}:
                    raise CaseError(f"{where}: each alert is {{task, event, channel}}, got {a!r}")
        tries = data.get("run_attempts")
        if tries is not None and (isinstance(tries, bool) or not isinstance(tries, int)
                                  or tries < 1):
            raise CaseError(f"{where}: expect.run_attempts is a whole number of tries >= 1, "
                            f"not {tries!r}")
        refused = bool(data.get("refused", False))
        if not refused and state is None:
            raise CaseError(f"{where}: expect.state is required unless refused: true")
        return cls(refused=refused, state=state, output=data.get("output"),
                   check_output="output" in data, tasks=tasks,
                   alerts=[dict(a) for a in alerts] if alerts is not None else [],
                   run_attempts=tries, metrics=_by_task(data, "metrics", where),
                   artifacts=_by_task(data, "artifacts", where),
                   reports=_by_task(data, "reports", where, flat=True))


def _by_task(data: dict[str, Any], key: str, where: str, *, flat: bool = False) -> Any:
    """``expect.metrics`` / ``.artifacts`` (task -> name -> value) or ``.reports`` (task -> text)."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
            isinstance(v, str) if flat else isinstance(v, dict) for v in value.values()):
        shape = "task labels to text" if flat else "task labels to {name: value}"
        raise CaseError(f"{where}: expect.{key} maps {shape}")
    return {k: (v if flat else dict(v)) for k, v in value.items()}


@dataclass(frozen=True)
class SecondRun:
    wait: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    expect: Expectation = Expectation()


@dataclass(frozen=True)
class ChainRun:
    """One run of the producer in a chain and how many consumer runs it must cause."""

    params: dict[str, Any]
    expect: Expectation
    consumer_runs: int


@dataclass(frozen=True)
class Chain:
    """``chain:``: the consumer (its spec, resolved like ``pipeline``), the producer's runs,
    and what every consumer run shows."""

    consumer: str
    runs: tuple[ChainRun, ...]
    expect: Expectation

    def params(self) -> list[dict[str, Any]]:
        return [dict(r.params) for r in self.runs]


def _spec(ref: str, folder: Path) -> str:
    """``case.py:name`` relative to the case's folder becomes absolute; ``module:name`` stays."""
    target, _, attr = ref.rpartition(":")
    return f"{(folder / target).resolve()}:{attr}" if target.endswith(".py") else ref


def _parse_chain(data: Any, where: str, folder: Path) -> Chain:
    if not isinstance(data, dict) or set(data) != {"consumer", "runs", "expect"}:
        raise CaseError(f"{where}: chain takes exactly consumer, runs, expect, got "
                        f"{sorted(data) if isinstance(data, dict) else data!r}")
    consumer = data["consumer"]
    if not isinstance(consumer, str) or ":" not in consumer:
        raise CaseError(f"{where}: chain.consumer is a pipeline spec `file.py:name` or "
                        f"`module:name`, not {consumer!r}")
    runs = data["runs"]
    if not isinstance(runs, list) or not runs:
        raise CaseError(f"{where}: chain.runs is a non-empty list of {{params, expect, "
                        f"consumer_runs}}")
    parsed = []
    for i, run in enumerate(runs):
        at = f"{where}: chain.runs[{i}]"
        if not isinstance(run, dict) or set(run) - {"params", "expect", "consumer_runs"}:
            raise CaseError(f"{at} takes params, expect, consumer_runs, got {run!r}")
        for key in ("expect", "consumer_runs"):
            if key not in run:
                raise CaseError(f"{at}.{key} is required")
        params = run.get("params") or {}
        if not isinstance(params, dict):
            raise CaseError(f"{at}.params maps parameter names to values")
        count = run["consumer_runs"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise CaseError(f"{at}.consumer_runs is a whole number >= 0 (the consumer runs the "
                            f"engine created after this run), not {count!r}")
        exp = Expectation.parse(run["expect"], at)
        if exp.refused:
            raise CaseError(f"{at}.expect: a chain's runs are not refused (declare the backend "
                            f"unsupported instead)")
        parsed.append(ChainRun(dict(params), exp, count))
    exp = Expectation.parse(data["expect"], f"{where}: chain")
    if exp.refused:
        raise CaseError(f"{where}: chain.expect: a consumer run is not refused")
    return Chain(_spec(consumer, folder), tuple(parsed), exp)


@dataclass(frozen=True)
class Declared:
    status: str
    reason: str


@dataclass(frozen=True)
class Case:
    id: str
    doc: str
    pipeline: str  # an absolute path spec ``/x/case.py:name`` or ``module:name``
    folder: Path | None
    params: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    required: bool = False
    expect: Expectation = Expectation()
    second_run: SecondRun | None = None
    tolerance: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    backends: dict[str, Declared] = field(default_factory=dict)
    timeout: float = 300.0  # wall-clock limit of one backend's worker for this case
    adhoc: bool = False  # made from a bare pipeline: compared with the reference only
    paths: tuple[str, ...] = ()  # more folders the worker needs on sys.path
    shared_store: bool = False  # ``store: shared``: always runs with a shared store
    chain: Chain | None = None  # ``chain:``: the producer's runs and the consumer they start

    def declared(self, backend: str) -> Declared | None:
        return self.backends.get(backend)

    def search_path(self) -> list[str]:
        return list(dict.fromkeys([*([str(self.folder)] if self.folder else []), *self.paths]))


def load_case(path: str | Path) -> Case:
    """A case from its folder or its ``case.yaml``."""
    p = Path(path)
    file = p / "case.yaml" if p.is_dir() else p
    where = str(file)
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CaseError(f"{where}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise CaseError(f"{where}: a case is a mapping")
    known = {"id", "doc", "pipeline", "required", "params", "tags", "expect", "second_run",
             "delay_tolerance", "backends", "timeout", "paths", "store", "chain"}
    unknown = set(data) - known
    if unknown:
        raise CaseError(f"{where}: unknown field(s) {sorted(unknown)}")
    for key in ("id", "doc", "pipeline"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise CaseError(f"{where}: `{key}` is a required string")
    folder = file.parent.resolve()
    if data["id"] != folder.name:
        raise CaseError(f"{where}: id {data['id']!r} must equal the folder name {folder.name!r}")
    ref = _spec(data["pipeline"], folder)
    chain = None
    if "chain" in data:
        mixed = sorted({"params", "expect", "second_run"} & set(data))
        if mixed:
            raise CaseError(f"{where}: a chain case gives params and expect per run under "
                            f"chain.runs, not {mixed} at the top")
        chain = _parse_chain(data["chain"], where, folder)
    backends: dict[str, Declared] = {}
    for name, decl in (data.get("backends") or {}).items():
        if not isinstance(decl, dict) or decl.get("status") not in EXPECTED_STATUSES:
            raise CaseError(f"{where}: backends.{name}.status is one of {EXPECTED_STATUSES}")
        if not str(decl.get("reason") or "").strip():
            raise CaseError(f"{where}: backends.{name} needs a reason")
        backends[name] = Declared(decl["status"], str(decl["reason"]).strip())
    required = bool(data.get("required", False))
    if required and backends:
        raise CaseError(f"{where}: a required case cannot declare expected differences "
                        f"({', '.join(backends)}): no backend may skip it")
    second = None
    if data.get("second_run") is not None:
        sr = data["second_run"]
        if not isinstance(sr, dict) or set(sr) - {"wait", "params", "expect"}:
            raise CaseError(f"{where}: second_run takes wait, params, expect")
        second = SecondRun(float(sr.get("wait", 0.0)), dict(sr.get("params") or {}),
                           Expectation.parse(sr.get("expect"), f"{where}: second_run"))
    tolerance = dict(DEFAULT_TOLERANCE)
    tolerance.update({k: float(v) for k, v in (data.get("delay_tolerance") or {}).items()})
    paths = data.get("paths") or []
    if not isinstance(paths, list) or not all(isinstance(x, str) and x for x in paths):
        raise CaseError(f"{where}: paths is a list of folders, relative to the case's folder")
    extra = []
    for x in paths:
        path = (folder / x).resolve()
        if not path.is_dir():
            raise CaseError(f"{where}: paths: {x!r} is not a folder ({path})")
        extra.append(str(path))
    if data.get("store") not in (None, "shared"):
        raise CaseError(f"{where}: store: {data['store']!r}: the only value is `shared` (the "
                        f"harness picks the URL: a folder of the run's own, or conform --store)")
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise CaseError(f"{where}: tags is a list of feature names")
    return Case(
        id=data["id"], doc=data["doc"].strip(), pipeline=ref, folder=folder,
        params=dict(data.get("params") or {}), tags=tuple(tags), required=required,
        expect=Expectation.parse(data.get("expect"), where), second_run=second,
        tolerance=tolerance, backends=backends, timeout=float(data.get("timeout", 300.0)),
        paths=tuple(extra), shared_store=data.get("store") == "shared", chain=chain,
    )


def adhoc_case(pipeline: Any, params: dict[str, Any] | None = None, *,
               second_run: bool | None = None, timeout: float = 300.0) -> Case:
    """A case for a bare pipeline: no expectations, every backend compared with the reference.

    ``pipeline`` is a spec string (``file.py:name``, ``module:name``) or an ``@up.pipeline``
    object defined at module level. Cached pipelines get a second run so cache hits are
    compared too.
    """
    from unipipe.api import search_path
    from unipipe.authoring.loader import load_ir, load_pipeline_object
    from unipipe.ir.features import features_used

    if not isinstance(pipeline, str):
        fn = getattr(pipeline, "fn", None)
        if fn is None or "<locals>" in fn.__qualname__:
            raise CaseError("conform() takes a pipeline spec 'module:name' or a module-level "
                            "@up.pipeline (worker processes import it by name)")
        pipeline = f"{fn.__module__}:{fn.__name__}"
    obj = load_pipeline_object(pipeline)
    ir = load_ir(obj)
    folder = None
    ref = pipeline
    if isinstance(pipeline, str):
        target, _, attr = pipeline.rpartition(":")
        if target.endswith(".py"):
            ref = f"{Path(target).resolve()}:{attr}"
            folder = Path(target).resolve().parent
    tags = tuple(f.value for f in features_used(ir))
    if second_run is None:
        second_run = "cache" in tags
    return Case(id=_slug(ir.name), doc=ir.description or f"pipeline {ir.name}", pipeline=ref,
                folder=folder, params=dict(params or {}), tags=tags,
                expect=Expectation(alerts=None),
                second_run=SecondRun(expect=Expectation(alerts=None)) if second_run else None,
                timeout=timeout, adhoc=True, paths=tuple(search_path(ir)))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_") or "case"


def discover(paths: list[str | Path]) -> list[Case]:
    """Cases named by folders (searched for ``case.yaml``), case files, or pipeline specs."""
    cases: list[Case] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir() and (p / "case.yaml").exists():
            cases.append(load_case(p))
        elif p.is_dir():
            for f in sorted(p.glob("*/case.yaml")):
                cases.append(load_case(f))
        elif p.name == "case.yaml" or p.suffix in (".yaml", ".yml") and _is_case_file(p):
            cases.append(load_case(p))
        else:
            cases.append(adhoc_case(str(raw)))
    seen: set[str] = set()
    for c in cases:
        if c.id in seen:
            raise CaseError(f"two cases have the id {c.id!r}")
        seen.add(c.id)
    return cases


def _is_case_file(p: Path) -> bool:
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "expect" in data and "pipeline" in data


def case_ir(case: Case) -> Any:
    """The case's pipeline IR (imports the pipeline module in this process).

    The case's extra import folders (``paths``) go on ``sys.path`` first, as in its worker.
    """
    from unipipe.api import add_to_sys_path
    from unipipe.authoring.loader import load_ir

    add_to_sys_path(case.paths)
    ir = load_ir(case.pipeline)
    if case.shared_store:  # the harness picks the URL per run; any shared one has its features
        from unipipe.store import with_store

        ir = with_store(ir, CASE_STORE_PLACEHOLDER)
    return ir


#: the store a ``store: shared`` case's IR is checked with (its runs get a URL of their own)
CASE_STORE_PLACEHOLDER = "file:///unipipe-case-store"


def check_tags(case: Case) -> list[str]:
    """Problems with a case's tags: they must equal ``features_used()`` of its pipeline."""
    from unipipe.ir.features import features_used

    if case.chain is not None:  # the producer's and the consumer's features, in the enum's order
        from unipipe.authoring.loader import load_ir
        from unipipe.ir.features import Feature

        both = set(features_used(case_ir(case))) | set(features_used(load_ir(case.chain.consumer)))
        used = [f.value for f in Feature if f in both]
    else:
        used = [f.value for f in features_used(case_ir(case))]
    if list(case.tags) != used:
        return [f"{case.id}: tags {list(case.tags)} differ from features_used() {used}"]
    return []
