"""Isolated Prefect runs (``up.run(..., isolated=True)``, ``conform --isolated``): many machines
on one, as a Prefect work pool of process workers on other machines would run a deployment.

- The pipeline's code package (:mod:`unipipe.deploy.package`: wheels of unipipe, this backend and
  the user's modules) is unpacked, with the compiled flow file at its root, into a code tree
  published once under ``<store>/code/<digest>/prefect-<flow hash>/`` (content-addressed).
- A deployment on the server names that tree in its pull step (``deployed.pull_steps``).
- ``WORKERS`` (one) ``prefect worker start --type process`` processes, each in a sandbox of its
  own (:mod:`unipipe.sandbox`: HOME, TMPDIR, working folder; the interpreter with ``-S``, so the
  workspace's editable install of unipipe is invisible; PATH without the user's tool folders),
  poll a work pool of this run's own. The one that picks the flow run spawns
  ``python3 -m prefect.engine`` (the sandbox's) in a fresh temporary folder under the sandbox's
  TMPDIR; the pull step copies the tree there. The store is
  the only medium the flow run shares with this machine (plus the trace folder, the harness's
  measurement channel, as on the Kubeflow lane).
- The RunResult comes from Prefect's records (``deployed`` + ``results.build_result``).

The workers are started per run (about 4 s to import Prefect's CLI, while the code is packaged
and published; 1 s to stop them) and stopped after it: every run, the second of a cached case included,
meets workers that have never seen the pipeline, so a cache hit is always served across sandboxes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from unipipe.ir.models import Pipeline
from unipipe.result import RunResult

#: process workers started per run, each in a sandbox of its own. One: a flow run is run by a
#: single worker (its retries and subflows in the same flow-run process), so a second one only
#: polled, and lost the race to submit the run ("Aborted submission ... in a PENDING state"),
#: for about 2.5 s of CPU per run (importing Prefect, polling), about 1 s more of the server's,
#: and a slower stop. Every run still meets a worker that has never seen the pipeline.
WORKERS = 1


def code_tree(wheels: dict[str, bytes], compiled: dict[str, bytes]) -> dict[str, bytes]:
    """The files of the code tree: the wheels unpacked (installing a pure-Python wheel is
    unpacking it) and the compiled files (the flow) at the root."""
    files: dict[str, bytes] = {}
    for data in wheels.values():
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    files[info.filename] = zf.read(info)
    files.update(compiled)
    return files


def tree_url(store: str, digest: str, files: dict[str, bytes]) -> str:
    """``<store>/code/<digest>/prefect-<hash of the files>``: content-addressed."""
    from unipipe import sandbox

    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return f"{sandbox.code_url(store, digest)}/prefect-{h.hexdigest()[:12]}"


def upload_tree(url: str, files: dict[str, bytes]) -> bool:
    """Upload the tree to ``url`` unless it is complete there already; whether it uploaded."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    marker = f"{root}.complete"  # written last: a tree without it is (re)uploaded
    if fs.exists(marker):
        return False
    for name, data in files.items():
        fs.pipe_file(f"{root}/{name}", data)
    fs.pipe_file(marker, b"")
    return True


def package_tree(ir: Pipeline, search_path: Any, folder: Path,
                 compiled: dict[str, bytes]) -> tuple[str, dict[str, bytes], Any]:
    """Build the code package (wheels of unipipe, this backend and the user's modules) and the
    code tree with ``compiled`` at its root: (the tree's URL on ``ir.store``, its files, the
    package)."""
    from unipipe.deploy.package import build_code_package

    assert ir.store is not None
    package = build_code_package(ir, search_path, folder, backends=["prefect"])
    files = code_tree({w.name: w.read_bytes() for w in package.wheels}, compiled)
    return tree_url(ir.store, package.digest, files), files, package


def start_workers(boxes: Path, pool: str, env: dict[str, str]) -> list[tuple[Any, Any, Path]]:
    """``WORKERS`` process workers on ``pool``, each in a fresh sandbox under ``boxes``; their logs
    next to ``boxes``."""
    from unipipe import sandbox
    from unipipe_prefect.server import worker_command

    started = []
    for i in range(1, WORKERS + 1):
        box = sandbox.make(boxes / f"worker-{i}", {})
        # the image's PATH, none of the user's tool folders (sandbox.image_path_entries); the
        # flow run inherits it with the rest of the worker's environment
        wenv = box.env(env, image_path=True)
        wenv["PREFECT_HOME"] = str(box.home / ".prefect")
        log = boxes.parent / f"{boxes.name}.worker-{i}.log"
        out = open(log, "wb")
        proc = subprocess.Popen(
            worker_command(str(box.python), pool, f"{pool}-worker-{i}"),
            env=wenv, cwd=str(box.work), stdout=out, stderr=subprocess.STDOUT,
            # in the caller's process group: the harness kills a case past its time limit by
            # its group, and the workers with it
            stdin=subprocess.DEVNULL)
        started.append((proc, out, log))
    return started


def stop_workers(started: list[tuple[Any, Any, Path]]) -> None:
    for proc, _out, _log in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, out, _log in started:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


def run(backend: Any, ir: Pipeline, options: Any, params: dict[str, Any], workdir: Path,
        flow_file: Path, flow_fn: str, run_id: str, env: dict[str, str]) -> RunResult:
    from unipipe import sandbox
    from unipipe_prefect.results import build_result
    from unipipe_prefect.runtime import VALUES_URL_ENV

    if ir.store is None:
        raise ValueError("an isolated run needs a shared store (--store): in a sandbox the "
                         "store is the only medium a task shares with another")
    pool = f"unipipe-{run_id}"
    values_url = f"{ir.store.rstrip('/')}/prefect-values/{run_id}"
    # the flow run inherits the worker's environment (prefect/workers/process.py
    # ProcessJobConfiguration: env = {**os.environ, **env}); nothing of this machine's folders
    wenv = {k: v for k, v in env.items()
            if k not in ("PYTHONPATH", "PREFECT_RESULTS_LOCAL_STORAGE_PATH", "PREFECT_HOME")}
    wenv.update({"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1",
                 "PREFECT_LOGGING_LEVEL": "INFO", VALUES_URL_ENV: values_url})
    # the workers start (about 4 s to import Prefect's CLI) while the code is packaged
    boxes = workdir / "sandboxes" / run_id  # a run's own: the lane's runs share its workdir
    workers = start_workers(boxes, pool, wenv)
    try:
        code_url, files, package = package_tree(ir, options.search_path, workdir / "code",
                                                {flow_file.name: flow_file.read_bytes()})
        sandbox.publish_code(package, ir.store)
        upload_tree(code_url, files)
    except BaseException:
        stop_workers(workers)
        raise
    spec = {"store": ir.store, "pool": pool, "flow_name": ir.name, "deployment": run_id,
            "entrypoint": f"{flow_file.name}:{flow_fn}", "code_url": code_url,
            "params": params, "values_url": values_url, "timeout": options.extra.get("timeout", 1800)}
    spec_path = workdir / f"{run_id}.deployment.json"
    spec_path.write_text(json.dumps(spec))
    report_path = workdir / f"{run_id}.report.pickle"
    log = workdir / f"{run_id}.log"
    denv = dict(env)
    denv["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]),
         *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "unipipe_prefect.deployed",
                                     str(spec_path), str(report_path)], env=denv,
                                    cwd=str(workdir), stdout=out, stderr=subprocess.STDOUT)
            while True:
                try:
                    rc = proc.wait(timeout=1)
                    break
                except subprocess.TimeoutExpired:
                    if all(w[0].poll() is not None for w in workers):  # nobody can run it
                        proc.kill()
                        rc = proc.wait()
                        break
    finally:
        stop_workers(workers)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                      for p in [log, *[w[2] for w in workers]] if p.exists())
    if not report_path.exists():
        raise RuntimeError(f"the Prefect deployment process failed (exit {rc}; workers' exits "
                           f"{[w[0].returncode for w in workers]}):\n{tails}")
    with open(report_path, "rb") as fh:
        report = pickle.load(fh)
    if not report.get("ok"):
        raise RuntimeError(f"the isolated Prefect flow run did not finish:\n"
                           f"{report.get('error')}\n{tails}")
    shutil.rmtree(boxes, ignore_errors=True)  # gone with the "machines" (kept on an error)
    return build_result(ir, report, run_id=run_id, params=params,
                        trace_dir=env["UNIPIPE_TRACE_DIR"])
