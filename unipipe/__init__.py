"""unipipe: write a pipeline once; compile and run it on Airflow, Prefect and Kubeflow Pipelines.

Attributes load lazily so that ``import unipipe.runtime`` (what generated task code does) never
pays for pydantic or libcst.
"""

from __future__ import annotations

__version__ = "0.1.0"

_EXPORTS = {
    "task": "unipipe.authoring.decorators",
    "pipeline": "unipipe.authoring.decorators",
    "when": "unipipe.authoring.decorators",
    "otherwise": "unipipe.authoring.decorators",
    "command": "unipipe.authoring.commands",
    "CommandFailed": "unipipe.runtime.command",
    "Retry": "unipipe.authoring.policies",
    "Cache": "unipipe.authoring.policies",
    "Resources": "unipipe.authoring.policies",
    "Alert": "unipipe.authoring.policies",
    "Defaults": "unipipe.authoring.policies",
    "compile": "unipipe.compiler.driver",
    "run": "unipipe.api",
    "load": "unipipe.api",
    "current": "unipipe.runtime.context",
    "NonRetryable": "unipipe.runtime.invoke",
    "TaskTimeout": "unipipe.runtime.invoke",
    "RunResult": "unipipe.result",
    "TaskResult": "unipipe.result",
    "PipelineError": "unipipe.ir.errors",
    "UnsupportedFeature": "unipipe.compiler.diagnostics",
    "features_used": "unipipe.ir.features",
    "Schedule": "unipipe.authoring.events",
    "Asset": "unipipe.authoring.events",
    "On": "unipipe.authoring.events",
    "Input": "unipipe.runtime.artifacts",
    "Output": "unipipe.runtime.artifacts",
    "Artifact": "unipipe.runtime.artifacts",
    "Dataset": "unipipe.runtime.artifacts",
    "Model": "unipipe.runtime.artifacts",
    "Metrics": "unipipe.runtime.artifacts",
    "Markdown": "unipipe.runtime.artifacts",
    "log_metric": "unipipe.runtime.artifacts",
    "report": "unipipe.runtime.artifacts",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

from unipipe._lazy import lazy_exports  # noqa: E402 - after the table it serves

__getattr__, __dir__ = lazy_exports("unipipe", _EXPORTS, globals(), ("__version__",))
