"""The ``airflow`` backend: compile a pipeline to one Airflow DAG file, or run it on Airflow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from unipipe.compiler.backend import CompileOptions, CompileResult, RunOptions
from unipipe.compiler.codegen import write_all
from unipipe.compiler.diagnostics import Diagnostic, Support, check_features
from unipipe.ir.features import Feature
from unipipe.ir.models import Pipeline
from unipipe.result import RunResult
from unipipe_airflow.codegen import Options, dag_filename, generate
from unipipe_airflow.dialects import VERSIONS, dialect
from unipipe_airflow.support import executor_notes
from unipipe_airflow.support import support as support_table

#: What a deployment needs besides Airflow itself, by what the DAG uses.
BASE_REQUIREMENTS = ("unipipe", "unipipe-airflow")
KUBERNETES_PROVIDER = "apache-airflow-providers-cncf-kubernetes"


class Backend:
    name: ClassVar[str] = "airflow"
    versions: ClassVar[tuple[str, ...]] = VERSIONS

    def support(self, version: str | None = None) -> dict[Feature, Support]:
        return support_table(dialect(version))

    def compile(self, ir: Pipeline, out_dir: Path, options: CompileOptions) -> CompileResult:
        """Write ``<name>_dag.py`` and ``<name>_dag.requirements.txt`` (pip lines a deployment
        installs: unipipe, and the cncf.kubernetes provider when a task runs in a pod)."""
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
        req_path = dag_path.with_suffix(".requirements.txt")
        diags = refusal_diags + [Diagnostic("warning", Feature.RETRY_BACKOFF, self.name, note)
                                 for note in writer.notes]
        diags += [Diagnostic("warning", feature, self.name, note)
                  for feature, note in executor_notes(ir, gen_options.executor)]
        # The DAG file comes last: a dags folder never sees a DAG whose requirements are unwritten.
        paths = write_all({req_path: "\n".join(reqs) + "\n", dag_path: text})
        return CompileResult(paths, diags)

    def run(self, ir: Pipeline, options: RunOptions) -> RunResult:
        """``options.extra``: ``version`` (``"2.11"``: Airflow 2.11 in its own environment),
        ``mode`` (``"scheduler"``), ``dialect``, ``backoff``, ``timeout``."""
        from unipipe_airflow.engine import run_pipeline

        return run_pipeline(self, ir, options)

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
        """Runs of one harness lane share one migrated metadata DB template (``engine.cache_root``,
        copied for each run) instead of migrating a fresh one per run. A lane of the installed
        Airflow in ``dags-test`` mode also gets a prepared Airflow (:mod:`.forkserver`, started
        here, stopped when the lane ends; ``UNIPIPE_AIRFLOW_FORKSERVER=0`` in this process turns
        it off): each run is still a process of its own with its own home, DB, run id, store and
        trace, forked from one that has imported Airflow and built its Execution API once."""
        import os

        from unipipe_airflow import forkserver
        from unipipe_airflow.engine import clean_env, home_env

        extra = extra or {}
        env = {"UNIPIPE_AIRFLOW_CACHE": str(lane / "airflow-cache")}
        if (extra.get("version") or extra.get("isolated") or extra.get("mode", "dags-test")
                != "dags-test" or os.environ.get(forkserver.ENV) == "0"):
            yield env
            return
        from unipipe.forkserver import ForkServer

        folder = lane / "airflow-forkserver"
        with ForkServer("unipipe_airflow.forkserver", folder, {**clean_env(), **home_env(
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
    return out
