"""The ``local`` backend: the reference runner behind the common Backend protocol."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar

from unipipe.compiler.backend import CompileOptions, CompileResult, RunOptions
from unipipe.compiler.codegen import write_atomic
from unipipe.compiler.diagnostics import Support
from unipipe.ir.features import Feature
from unipipe.ir.io import dump_ir
from unipipe.ir.models import Pipeline
from unipipe.local.runner import LocalRunner
from unipipe.result import RunResult


class LocalBackend:
    name: ClassVar[str] = "local"
    versions: ClassVar[tuple[str, ...]] = ("1",)
    #: what a harness lane's worker fork server imports once for this backend's runs
    #: (unipipe.harness.workerserver): the modules a run imports besides unipipe's own
    harness_preload: ClassVar[tuple[str, ...]] = (
        "unipipe.local.runner", "unipipe.runtime.alerts", "unipipe.runtime.forking")

    def support(self, version: str | None = None) -> dict[Feature, Support]:
        return {f: Support.native("reference semantics") for f in Feature}

    def compile(self, ir: Pipeline, out_dir: Path, options: CompileOptions) -> CompileResult:
        """The reference runner executes the IR itself; compiling writes the IR document."""
        path = write_atomic(Path(out_dir) / f"{ir.name}.ir.json", dump_ir(ir))
        return CompileResult([path], [])

    def run_chain(self, producer: Pipeline, consumer: Pipeline, runs: list[dict[str, Any]],
                  options: RunOptions) -> tuple[list[RunResult], list[list[RunResult]]]:
        """The reference meaning of an event chain (:mod:`unipipe.local.chain`): A's runs one
        after the other, each followed by the B runs its asset updates start."""
        from dataclasses import replace

        from unipipe.local.chain import run_chain

        def one(ir: Pipeline, params: dict[str, Any]) -> RunResult:
            return self.run(ir, replace(options, params=params, run_id=None))

        return run_chain(producer, consumer, runs, one)

    def run(self, ir: Pipeline, options: RunOptions) -> RunResult:
        isolation = options.extra.get("isolation", "process")
        runner = LocalRunner(isolation=isolation, seed=options.extra.get("seed"))
        # The task modules import from where the other backends' processes would import them
        # (an IR document names modules without files: the folder the user runs us from).
        from unipipe.api import add_to_sys_path

        added = add_to_sys_path(options.search_path)
        try:
            return runner.run(ir, options.params, run_id=options.run_id,
                              logical_date=options.extra.get("logical_date"))
        finally:
            for p in added:
                if p in sys.path:
                    sys.path.remove(p)
