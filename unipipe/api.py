"""``up.run`` and ``up.load``: the programmatic entry points."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from unipipe.compiler.backend import RunOptions
from unipipe.ir.models import Pipeline
from unipipe.result import RunResult


def load(pipeline: Any) -> Pipeline:
    """IR for a ``@up.pipeline``, an IR Pipeline, or a spec string (``file.py:name``, ``.json``)."""
    from unipipe.authoring.loader import load_ir

    return load_ir(pipeline)


def search_path(ir: Pipeline) -> list[str]:
    """Folders another process needs on sys.path to import the pipeline's task modules."""
    from unipipe.authoring.modules import module_name_for_file

    roots: list[str] = []
    modules = {ir.module} | {t.fn.partition(":")[0] for t in ir.tasks if t.command is None}
    for name in sorted(m for m in modules if m):
        mod = sys.modules.get(name)
        file = getattr(mod, "__file__", None)
        if not file:
            continue
        dotted, root = module_name_for_file(file)
        if dotted == name and str(root) not in roots:
            roots.append(str(root))
    # An IR document names modules without files: they import from where the user runs us.
    cwd = os.getcwd()
    if cwd not in roots:
        roots.append(cwd)
    return roots


def add_to_sys_path(folders: Iterable[str]) -> list[str]:
    """Append the folders not yet on ``sys.path`` (in order, each once); returns those added."""
    added = [f for f in dict.fromkeys(folders) if f and f not in sys.path]
    sys.path.extend(added)
    return added


def run(pipeline: Any, backend: str = "local", params: dict[str, Any] | None = None, *,
        run_id: str | None = None, workdir: str | Path | None = None, store: str | None = None,
        **extra: Any) -> RunResult:
    """Run ``pipeline`` on ``backend`` and return what happened, task by task.

    ``backend`` may carry a version or a mode (``"airflow@2.11"``, ``"airflow@scheduler"``).
    ``store`` (an fsspec URL) is compiled into what runs: every task reads and writes there.
    """
    from unipipe.compiler.registry import get_backend_for
    from unipipe.store import with_store

    engine, selected = get_backend_for(backend)
    ir = with_store(load(pipeline), store)
    options = RunOptions(params=dict(params or {}), run_id=run_id,
                         workdir=Path(workdir) if workdir else None,
                         search_path=search_path(ir), extra={**selected, **extra})
    return engine.run(ir, options)
