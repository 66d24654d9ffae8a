"""The ``airflow`` backend: compile a pipeline to one Airflow DAG file, or run it on Airflow."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from unipipe.compiler.backend import CompileOptions, CompileResult, RunOptions
from unipipe.compiler.codegen import write_all
from unipipe.compiler.diagnostics import Diagnostic, Support
from unipipe.ir.features import Feature
from unipipe.ir.models import Pipeline
from unipipe.result import RunResult
from unipipe_airflow.codegen import Options, dag_filename, generate
from unipipe_airflow.dialects import VERSIONS, dialect
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
        text, writer = generate(ir, dialect(options.target_version),
                               Options.from_extra(options.extra))
        dag_path = Path(out_dir) / dag_filename(ir)
        reqs = list(BASE_REQUIREMENTS)
        if writer.pods:
            reqs.append(KUBERNETES_PROVIDER)
        req_path = dag_path.with_suffix(".requirements.txt")
        diags = [Diagnostic("warning", Feature.RETRY_BACKOFF, self.name, note)
                 for note in writer.notes]
        # The DAG file comes last: a dags folder never sees a DAG whose requirements are unwritten.
        paths = write_all({req_path: "\n".join(reqs) + "\n", dag_path: text})
        return CompileResult(paths, diags)

    def run(self, ir: Pipeline, options: RunOptions) -> RunResult:
        from unipipe_airflow.engine import run_pipeline

        return run_pipeline(self, ir, options)


def requirements(ir: Pipeline, version: str | None = None) -> list[str]:
    """The pip requirements of the compiled DAG (what the deploy step adds)."""
    _, writer = generate(ir, dialect(version))
    return list(BASE_REQUIREMENTS) + ([KUBERNETES_PROVIDER] if writer.pods else [])
