"""The Backend protocol every target implements (and third parties register by entry point)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from unipipe.compiler.diagnostics import Diagnostic, ErrorLevel, Support
from unipipe.ir.features import Feature
from unipipe.ir.models import Pipeline
from unipipe.result import RunResult


@dataclass
class CompileOptions:
    error_level: ErrorLevel = ErrorLevel.RAISE
    target_version: str | None = None  # a dialect: e.g. Airflow "2.11" or "3.3"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CompileResult:
    paths: list[Path]
    diagnostics: list[Diagnostic]


@dataclass
class RunOptions:
    params: dict[str, Any] = field(default_factory=dict)
    workdir: Path | None = None  # isolated home for the engine; a temp dir when None
    search_path: list[str] = field(default_factory=list)  # folders holding the user's modules
    run_id: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    name: ClassVar[str]
    #: dialects this backend can write, newest first; the first is the default
    versions: ClassVar[tuple[str, ...]]

    def support(self, version: str | None = None) -> dict[Feature, Support]:
        """Per-feature status for a dialect: what the matrix and the compiler read."""
        ...

    def compile(self, ir: Pipeline, out_dir: Path, options: CompileOptions) -> CompileResult:
        """Write the target's files for ``ir`` into ``out_dir`` (atomically) and list them."""
        ...

    def run(self, ir: Pipeline, options: RunOptions) -> RunResult:
        """Compile, run on the real engine, and build the RunResult from the engine's records."""
        ...
