"""The Backend protocol every target implements (and third parties register by entry point)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
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
    """What every target implements. Optional hooks (a backend defines them only if it needs
    them): ``lane_service`` (see :class:`LaneServices`), ``run_chain`` (see :class:`Chains`)."""

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


@runtime_checkable
class LaneServices(Protocol):
    """Optional hook: an engine service that runs of one backend share.

    The conformance harness runs a backend's cases one after the other in a *lane* (a folder
    holding the engine homes its workers share) and enters ``lane_service(lane)`` once around
    them: the backend starts what is costly to start per run (a ``prefect server``, a prepared
    Airflow) or names what its runs may reuse (Airflow's migrated metadata DB), and yields the
    environment variables every worker of the lane gets. Leaving the context stops what it
    started. ``extra`` is what the lane's runs get in ``RunOptions.extra`` (the label's
    ``version``/``mode``, ``isolated``): a service only some lanes need starts only there.
    """

    def lane_service(self, lane: Path, extra: dict[str, Any] | None = None
                     ) -> AbstractContextManager[dict[str, str]]: ...


def lane_service(backend: object | None, lane: Path, extra: dict[str, Any] | None = None
                 ) -> AbstractContextManager[dict[str, str]]:
    """``backend.lane_service(lane, extra)``, or no service (an empty environment) if it has
    none (or ``backend`` is None: the lane's backend could not be loaded)."""
    if isinstance(backend, LaneServices):
        return backend.lane_service(lane, dict(extra or {}))
    return nullcontext({})


@runtime_checkable
class Chains(Protocol):
    """Optional hook: an event chain observed on the engine (issue 14).

    ``run_chain(producer, consumer, runs, options)`` runs ``producer`` (A, a task of which has
    ``produces=[asset]``) once per entry of ``runs`` (its parameters), one after the other, with
    ``consumer`` (B, ``trigger=up.On(asset, ...)``) deployed where the engine itself starts it;
    after each A run it waits until the B runs that run caused were created and finished, and
    returns A's results and, per A run, the B runs the engine created after it (in the order the
    engine created them). A backend without an event trigger refuses the pipelines at compile
    instead (``UnsupportedFeature``); one without this hook reads as notimpl.
    """

    def run_chain(self, producer: Pipeline, consumer: Pipeline, runs: list[dict[str, Any]],
                  options: RunOptions) -> tuple[list[RunResult], list[list[RunResult]]]: ...
