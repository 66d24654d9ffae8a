"""The fresh process that runs one case once on one backend: ``python -m unipipe.harness.worker JOB``,
or a child forked with ``JOB`` from the lane's worker server (:mod:`unipipe.harness.workerserver`).

``JOB`` is a JSON file: ``{"mode": "run"|"compile"|"chain", "pipeline", "backend", "params",
"run_id", "workdir", "search_path", "out"}``; a chain (``mode: chain``) also names ``consumer``
and ``runs`` (the producer's parameters, per run) and calls the backend's ``run_chain`` hook;
compiling a chain compiles both pipelines. The worker writes ``out`` (JSON) with ``status``:

- ``ok``: the run finished (successfully or not); ``result`` is the RunResult as a dict (for a
  chain: ``producer``, A's RunResults, and ``consumer``, per A run the B runs it started);
- ``refused``: rejected before running (invalid parameters, unsupported feature); exit-2 errors;
- ``compiled``: (compile mode) the backend wrote its files;
- ``notimpl``: the backend raised NotImplementedError;
- ``error``: anything else, with the traceback.

It never imports an orchestrator itself; the backend does, inside this process.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _run(job: dict[str, Any]) -> dict[str, Any]:
    from unipipe.authoring.loader import load_ir
    from unipipe.compiler.backend import RunOptions
    from unipipe.compiler.diagnostics import UnsupportedFeature
    from unipipe.compiler.registry import get_backend
    from unipipe.ir.errors import PipelineError

    for folder in reversed(job.get("search_path") or []):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    start = time.time()
    try:
        from unipipe.store import with_store

        ir = with_store(load_ir(job["pipeline"]), job.get("store"))
        backend = get_backend(job["backend"])
        if job["mode"] == "compile":
            from unipipe.compiler.driver import compile_ir

            version = (job.get("extra") or {}).get("version")  # airflow@2.11: its dialect
            if version not in getattr(backend, "versions", ()):
                version = None
            res = compile_ir(ir, job["backend"], Path(job["workdir"]) / "compiled",
                             target_version=version)
            if job.get("consumer"):  # a chain: the consumer (its trigger) compiles as well
                consumer = with_store(load_ir(job["consumer"]), job.get("store"))
                more = compile_ir(consumer, job["backend"], Path(job["workdir"]) / "compiled",
                                  target_version=version)
                res.paths += more.paths
                res.diagnostics += more.diagnostics
            return {"status": "compiled", "paths": [str(p) for p in res.paths],
                    "diagnostics": [str(d) for d in res.diagnostics]}
        if not callable(getattr(backend, "run", None)):
            return {"status": "notimpl", "error": f"backend {job['backend']!r} has no run()"}
        from unipipe.api import search_path

        folders = list(dict.fromkeys([*(job.get("search_path") or []), *search_path(ir)]))
        options = RunOptions(params=dict(job.get("params") or {}), run_id=job.get("run_id"),
                             workdir=Path(job["workdir"]) if job.get("workdir") else None,
                             search_path=folders, extra=dict(job.get("extra") or {}))
        if job["mode"] == "chain":
            if not callable(getattr(backend, "run_chain", None)):
                return {"status": "notimpl", "error": f"backend {job['backend']!r} has no "
                        f"run_chain() (an event chain observed on the engine)"}
            consumer = with_store(load_ir(job["consumer"]), job.get("store"))
            produced, started = backend.run_chain(ir, consumer, list(job["runs"]), options)
            data = json.loads(json.dumps({
                "producer": [r.to_dict() for r in produced],
                "consumer": [[r.to_dict() for r in rs] for rs in started]}, default=repr))
            return {"status": "ok", **data, "start": start, "end": time.time()}
        result = backend.run(ir, options)
    except (PipelineError, UnsupportedFeature) as exc:
        return {"status": "refused", "error": f"{type(exc).__name__}: {exc}", "start": start,
                "end": time.time()}
    except NotImplementedError as exc:
        return {"status": "notimpl", "error": f"NotImplementedError: {exc}", "start": start,
                "end": time.time()}
    except BaseException as exc:  # noqa: BLE001 - reported to the harness
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "start": start, "end": time.time()}
    data = json.loads(json.dumps(result.to_dict(), default=repr))
    return {"status": "ok", "result": data, "start": start, "end": time.time()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text())
    report = _run(job)
    out = Path(job["out"])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=repr))
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
