"""The ``airflow`` backend: compile a pipeline to one Airflow DAG file, or run it on Airflow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from unipipe.compiler.backend import CompileOptions, CompileResult, RunOptions
from unipipe.compiler.codegen import write_all
from unipipe.compiler.diagnostics import Diagnostic, Support, check_features
from unipipe.ir.features import Feature
from unipipe.ir.models import Pipeline, Task
from unipipe.result import RunResult
from unipipe_airflow.codegen import Options, dag_filename, generate
from unipipe_airflow.dialects import VERSIONS, dialect
from unipipe_airflow.support import executor_notes
from unipipe_airflow.support import support as support_table

if TYPE_CHECKING:
    from packaging.requirements import Requirement

#: What a deployment needs besides Airflow itself, by what the DAG uses.
BASE_REQUIREMENTS = ("unipipe", "unipipe-airflow")
KUBERNETES_PROVIDER = "apache-airflow-providers-cncf-kubernetes"


def _asked(ir: Pipeline) -> dict[str, list[tuple[Task, Requirement]]]:
    """Each distribution the tasks' ``packages`` name (normalised), with who asks for what."""
    if not any(t.packages for t in ir.tasks):
        return {}  # packaging's import (~15 ms) only when a task names packages
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    asked: dict[str, list[tuple[Task, Requirement]]] = {}
    for t in ir.tasks:
        for text in t.packages:
            req = Requirement(text)
            asked.setdefault(canonicalize_name(req.name), []).append((t, req))
    return asked


def _joined(reqs: list[tuple[Task, Requirement]]) -> Requirement:
    from packaging.requirements import Requirement

    out = Requirement(str(reqs[0][1]))
    for _, req in reqs[1:]:
        out.extras |= req.extras
        out.specifier &= req.specifier
    return out


def task_packages(ir: Pipeline) -> list[str]:
    """Every task's ``packages`` as the environment's requirements: one line per distribution
    (sorted by its normalised name), the extras and version specifiers of all tasks that ask
    for it joined, since one environment serves every task (``numpy>=1.26`` and ``numpy<2``
    become ``numpy<2,>=1.26``)."""
    asked = _asked(ir)
    return [str(_joined(asked[k])) for k in sorted(asked)]


def package_conflicts(ir: Pipeline) -> list[str]:
    """Pins no one environment can hold: a task pins a version (``==``) that another task's
    requirement of the same distribution excludes (``pandas==2.1`` and ``pandas==2.2``). On
    Airflow every task runs in the environment's one set of packages, so the compile refuses
    them, naming the task's file, line and field."""
    out = []
    for reqs in _asked(ir).values():
        joined = _joined(reqs).specifier
        for t, req in reqs:
            pins = [s.version for s in req.specifier
                    if s.operator in ("==", "===") and not s.version.endswith(".*")]
            if any(not joined.contains(v, prereleases=True) for v in pins):
                others = sorted({f"{o.id}: {r}" for o, r in reqs if o.id != t.id})
                where = f"{t.location.file}:{t.location.line}" if t.location else "<pipeline>"
                out.append(f"{where}: [tasks.{t.id}.packages] task {t.id!r} pins {req}, which "
                           f"the other tasks' requirements exclude ({'; '.join(others)}); every "
                           f"Airflow task runs in the environment's one set of packages")
                break
    return out


class Backend:
    name: ClassVar[str] = "airflow"
    versions: ClassVar[tuple[str, ...]] = VERSIONS
    #: about how long a conformance case takes in a harness lane of this backend, in seconds,
    #: for the order the lanes start in (unipipe.harness.execute.lane_order): 337 s for 69
    #: cases in a whole suite at 4 lanes on 2 cores (2026-12-07)
    harness_case_seconds: ClassVar[float] = 4.9
    #: what a harness lane's worker fork server imports once for this backend's runs
    #: (unipipe.harness.workerserver): the modules a run imports besides unipipe's own
    harness_preload: ClassVar[tuple[str, ...]] = (
        "unipipe_airflow.codegen", "unipipe_airflow.engine", "unipipe_airflow.results",
        "unipipe_airflow.support", "sqlite3")

    def support(self, version: str | None = None) -> dict[Feature, Support]:
        return support_table(dialect(version))

    def compile(self, ir: Pipeline, out_dir: Path, options: CompileOptions) -> CompileResult:
        """Write ``<name>_dag.py`` and ``<name>_dag.requirements.txt`` (pip lines a deployment
        installs: unipipe, the cncf.kubernetes provider when a task runs in a pod, and every
        task's ``packages``: on Airflow they are the environment's requirements)."""
        gen_options = Options.from_extra(options.extra)
        refused = refusals(ir, gen_options, options.target_version)
        refusal_diags = check_features(self.name, refused, list(refused), options.error_level)
        if refused.get(Feature.PARAMS) and ir.schedule is not None:
            # allowed to go on: the DAG keeps its parameters and loses its schedule
            ir = ir.model_copy(update={"schedule": None})
        text, writer = generate(ir, dialect(options.target_version), gen_options)
        dag_path = Path(out_dir) / dag_filename(ir)
        reqs = list(BASE_REQUIREMENTS)
        if writer.pods:
            reqs.append(KUBERNETES_PROVIDER)
        reqs += task_packages(ir)
        req_path = dag_path.with_suffix(".requirements.txt")
        diags = refusal_diags + [Diagnostic("warning", Feature.RETRY_BACKOFF, self.name, note)
                                 for note in writer.notes]
        diags += [Diagnostic("warning", feature, self.name, note)
                  for feature, note in executor_notes(ir, gen_options.executor)]
        for tid in writer.pods:  # @task.kubernetes pushes only the return value as XCom
            t = ir.task(tid)
            if t.artifacts or t.logs:
                diags.append(Diagnostic(
                    "warning", Feature.ARTIFACTS if t.artifacts else Feature.METRICS, self.name,
                    f"task {tid!r} runs in a pod, whose only XCom is its return value "
                    f"(/airflow/xcom/return.json): its artifacts, metrics and report move "
                    f"through the store as usual but are not shown as XComs nor in "
                    f"RunResult.metrics/.artifacts/.reports"))
        # The DAG file comes last: a dags folder never sees a DAG whose requirements are unwritten.
        paths = write_all({req_path: "\n".join(reqs) + "\n", dag_path: text})
        return CompileResult(paths, diags)

    def run(self, ir: Pipeline, options: RunOptions) -> RunResult:
        """``options.extra``: ``version`` (``"2.11"``: Airflow 2.11 in its own environment),
        ``mode`` (``"scheduler"``), ``dialect``, ``backoff``, ``timeout``."""
        from unipipe_airflow.engine import run_pipeline

        return run_pipeline(self, ir, options)

    def backfill(self, ir: Pipeline, dates: list[str], *, max_active: int = 1,
                 params: dict[str, Any] | None = None, progress: Any = None,
                 extra: dict[str, Any] | None = None) -> list[RunResult]:
        """Airflow's own backfill of the dates' window (3.3: ``POST /api/v2/backfills`` run by a
        real scheduler; 2.11: ``airflow dags backfill``), each run reported as it ends
        (:mod:`unipipe_airflow.backfill`)."""
        from unipipe_airflow import backfill as engine_backfill

        return engine_backfill.run(self, ir, dates, max_active=max_active,
                                   params=dict(params or {}), progress=progress,
                                   extra=dict(extra or {}))

    def run_chain(self, producer: Pipeline, consumer: Pipeline, runs: list[dict[str, Any]],
                  options: RunOptions) -> tuple[list[RunResult], list[list[RunResult]]]:
        """An event chain under a real scheduler (in a harness lane, its scheduler,
        dag-processor and API server forked from the lane's prepared Airflow; else ``airflow
        standalone``): the producer's task updates an asset, Airflow starts the consumer
        (:mod:`unipipe_airflow.chain`)."""
        from unipipe_airflow.chain import run_chain

        return run_chain(producer, consumer, runs, options)

    @property
    def run_versions(self) -> tuple[str, ...]:
        """Engine versions ``airflow@VERSION`` runs on: the installed Airflow's, then 2.11."""
        from unipipe_airflow.engine import run_versions

        return run_versions()

    def prepare_engine(self, version: str) -> dict[str, str]:
        """Build (once) the engine for ``version`` in this process; the environment variables
        that point later runs, in other processes and homes, at it."""
        from unipipe_airflow.engine import airflow2_venv, engine_for

        engine = engine_for(version)
        return {"UNIPIPE_AIRFLOW2_VENV": str(airflow2_venv())} if engine.own_env else {}

    @contextmanager
    def lane_service(self, lane: Path, extra: dict[str, Any] | None = None
                     ) -> Iterator[dict[str, str]]:
        """Runs of a harness suite's lanes share one migrated metadata DB template
        (``engine.cache_root`` in the lanes' parent folder, copied for each run) instead of
        migrating a fresh one per run. A lane of the installed
        Airflow in ``dags-test`` mode also gets a prepared Airflow (:mod:`.forkserver`, started
        by the suite's first such lane, stopped when its last ends;
        ``UNIPIPE_AIRFLOW_FORKSERVER=0`` in this process turns it off): each run is still a
        process of its own with its own home, DB, run id, store and trace, forked from one that
        has imported Airflow and built its Execution API once. An
        isolated lane (``extra["isolated"]``) gets a long-lived broker, scheduler and API server
        (:func:`.isolated.lane_control_plane`; ``UNIPIPE_AIRFLOW_ISOLATED_LANE=0`` in this
        process turns it off)."""
        import os

        from unipipe_airflow import forkserver, isolated
        from unipipe_airflow.engine import clean_env, home_env

        extra = extra or {}
        # the suite's lanes share one template per Airflow version (engine.template_db makes
        # it under a file lock): ``airflow db migrate`` is about 3.6 s of CPU on top of the
        # import that the lane's prepared Airflow pays once
        env = {"UNIPIPE_AIRFLOW_CACHE": str(lane.parent / "airflow-cache")}
        if (extra.get("isolated") and not extra.get("version")
                and os.environ.get(isolated.LANE_ENV) != "0"):
            # the isolated lane's long-lived broker, scheduler and API server (:mod:`.isolated`:
            # each run still gets fresh workers and its own dag-processor); ``=0`` turns it off
            with isolated.lane_control_plane(lane / "airflow-isolated",
                                             extra.get("store")) as lane_env:
                yield {**env, **lane_env}
            return
        if (extra.get("version") or extra.get("isolated") or extra.get("mode", "dags-test")
                != "dags-test" or os.environ.get(forkserver.ENV) == "0"):
            yield env
            return
        from unipipe.forkserver import shared

        # one prepared Airflow for the suite's lanes (its runs are forked per request, each
        # with its own environment): a lane that starts later, or beside another, does not
        # warm up another (about 6.6 s of CPU each here: importing Airflow, Cadwyn's routes)
        folder = lane.parent / "airflow-forkserver"
        with shared("unipipe_airflow.forkserver", folder, {**clean_env(), **home_env(
                folder / "home", folder / "home" / "dags")}) as server:
            yield {**env, forkserver.ENV: server.path}


def refusals(ir: Pipeline, options: Options, options_version: str | None) -> dict[Feature, Support]:
    """Combinations Airflow cannot honour though each feature alone is supported."""
    out: dict[Feature, Support] = {}
    required = [p.name for p in ir.params if p.required]
    if ir.schedule is not None and required:
        out[Feature.PARAMS] = Support.unsupported(
            f"a scheduled DAG needs a default for every parameter (Airflow refuses to load a "
            f"schedule with required params): give {', '.join(required)} a default, or drop "
            f"the schedule")
    if options.kubernetes and options.executor == "kubernetes" and not dialect(options_version).retry_policy:
        in_pods = [t.id for t in ir.tasks
                   if (pol := ir.effective(t)).retry is not None
                   and (pol.retry.retry_on or pol.retry.fail_on)
                   and (pol.resources is not None or pol.image is not None)]
        if in_pods:
            out[Feature.RETRY_EXCEPTION_FILTER] = Support.unsupported(
                f"tasks {', '.join(in_pods)} run in a pod (resources/image), where Airflow sees "
                f"only the pod's exit status, not the exception, and this dialect has no "
                f"retry_policy to read the pod's verdict (Airflow 3.3+ has): allowed, every "
                f"failure is retried")
    conflicts = package_conflicts(ir)
    if conflicts:
        out[Feature.PACKAGES] = Support.unsupported(
            "; ".join(conflicts) + " (allowed: the requirements list the joined specifiers, "
            "which pip then refuses to install)")
    return out
