"""``up.compile``: validate, check features against the target, then let the backend write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unipipe.compiler.backend import CompileOptions, CompileResult
from unipipe.compiler.diagnostics import ErrorLevel, check_features
from unipipe.compiler.registry import get_backend
from unipipe.ir.features import features_used
from unipipe.ir.models import Pipeline
from unipipe.ir.validate import validate


def compile_ir(ir: Pipeline, target: str, out_dir: str | Path, *,
               error_level: ErrorLevel | str = ErrorLevel.RAISE,
               target_version: str | None = None, **extra: Any) -> CompileResult:
    validate(ir)
    backend = get_backend(target)
    level = ErrorLevel(error_level)
    version = target_version or backend.versions[0]
    if version not in backend.versions:
        raise ValueError(f"{target} cannot target version {version!r}; "
                         f"choose one of {', '.join(backend.versions)}")
    diags = check_features(target, backend.support(version), features_used(ir), level)
    out = Path(out_dir)
    result = backend.compile(ir, out, CompileOptions(error_level=level, target_version=version,
                                                     extra=extra))
    result.diagnostics[:0] = diags
    _report_one_machine(ir, target, result)
    _report_secrets(target, result)
    return result


def _report_one_machine(ir: Pipeline, target: str, result: CompileResult) -> None:
    from unipipe.compiler.diagnostics import Diagnostic
    from unipipe.ir.features import Feature
    from unipipe.store import one_machine_note

    note = one_machine_note(ir)
    if note is not None and target != "local":
        result.diagnostics.append(Diagnostic("info", Feature.SHARED_STORE, target, note))


def _report_secrets(target: str, result: CompileResult) -> None:
    """Generated files hold references, never secrets: say so loudly if one slipped through."""
    from unipipe.compiler.diagnostics import Diagnostic
    from unipipe.compiler.secrets import scan_paths
    from unipipe.ir.features import Feature

    for finding in scan_paths(result.paths):
        result.diagnostics.append(Diagnostic(
            "warning", Feature.ALERT_WEBHOOK, target,
            f"secret-looking value in generated output: {finding}"))


def compile(pipeline: Any, target: str = "airflow", out_dir: str | Path = "build", **kw: Any) -> list[Path]:
    """Compile ``pipeline`` for ``target`` into ``out_dir``; return the paths written."""
    from unipipe.authoring.loader import load_ir

    return compile_ir(load_ir(pipeline), target, out_dir, **kw).paths
