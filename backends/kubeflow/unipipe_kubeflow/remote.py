"""Submit the compiled PipelineSpec to a real KFP API (``unipipe run --backend kubeflow --host URL``).

Kept thin on purpose: there is no cluster here, so it is not exercised against a live KFP API;
``tests/deploy/test_kfp_deploy.py`` checks the exact requests it sends to a recording server.
Authentication is kfp.Client's own (``KF_PIPELINES_*`` environment, ``existing_token``, kube
config). Per-task results are not read back: the RunResult carries the run's final state and the
KFP run id in ``run_id``. Schedules are deployed by ``unipipe deploy --to kubeflow``.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unipipe.ir.models import Pipeline
from unipipe.result import RunResult

_OK = {"SUCCEEDED", "Succeeded"}


@contextlib.contextmanager
def _client_output() -> Iterator[None]:
    """kfp.Client prints its links ("Run details: ...") on stdout, where ``unipipe run --json``
    writes the RunResult: they go to stderr instead. Its FutureWarning about server versions
    says nothing about this run."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def submit(ir: Pipeline, yaml_path: Path, arguments: dict[str, Any], *, run_id: str, host: str,
           params: dict[str, Any], wait: bool = True, timeout: float = 6 * 3600,
           experiment: str | None = None) -> RunResult:
    import kfp

    with _client_output():
        client = kfp.Client(host=host)
        run = client.create_run_from_pipeline_package(
            str(yaml_path), arguments=arguments, run_name=run_id,
            experiment_name=experiment or ir.name)
        kfp_run_id = run.run_id
        state = "success"
        if wait:
            detail = client.wait_for_run_completion(kfp_run_id, timeout=timeout)
            raw = getattr(detail, "state", None) or getattr(getattr(detail, "run", None),
                                                            "status", None)
            state = "success" if raw in _OK else "failed"
    return RunResult(pipeline=ir.name, backend="kubeflow", run_id=kfp_run_id, state=state,
                     params=params)

