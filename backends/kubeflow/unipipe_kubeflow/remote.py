"""Submit the compiled PipelineSpec to a real KFP API (``unipipe run --backend kubeflow --host URL``).

Kept thin on purpose: there is no cluster here, so it is not exercised against a live KFP API;
``tests/deploy/test_kfp_deploy.py`` checks the exact requests it sends to a recording server. Authentication is kfp.Client's own
(``KF_PIPELINES_*`` environment, ``existing_token``, kube config). Per-task results are not read
back: the RunResult carries the run's final state and the KFP run id in ``run_id``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unipipe.ir.models import Pipeline
from unipipe.result import RunResult

_OK = {"SUCCEEDED", "Succeeded"}


def kfp_cron(cron: str) -> str:
    """KFP recurring runs take a 6-field cron (seconds first); the IR's is the 5-field form."""
    fields = cron.split()
    return cron if len(fields) == 6 else "0 " + cron


def submit(ir: Pipeline, yaml_path: Path, arguments: dict[str, Any], *, run_id: str, host: str,
           params: dict[str, Any], wait: bool = True, timeout: float = 6 * 3600,
           experiment: str | None = None) -> RunResult:
    import kfp

    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_package(
        str(yaml_path), arguments=arguments, run_name=run_id,
        experiment_name=experiment or ir.name)
    kfp_run_id = run.run_id
    state = "success"
    if wait:
        detail = client.wait_for_run_completion(kfp_run_id, timeout=timeout)
        raw = getattr(detail, "state", None) or getattr(getattr(detail, "run", None), "status", None)
        state = "success" if raw in _OK else "failed"
    return RunResult(pipeline=ir.name, backend="kubeflow", run_id=kfp_run_id, state=state,
                     params=params)


def schedule(ir: Pipeline, yaml_path: Path, *, host: str, arguments: dict[str, Any],
             experiment: str | None = None) -> str:
    """Create the recurring run for the pipeline's schedule; returns the KFP recurring run id."""
    import kfp

    if ir.schedule is None:
        raise ValueError(f"pipeline {ir.name} has no schedule")
    client = kfp.Client(host=host)
    exp = client.create_experiment(experiment or ir.name)
    kwargs: dict[str, Any] = {"cron_expression": kfp_cron(ir.schedule.cron)} if ir.schedule.cron \
        else {"interval_second": int(ir.schedule.interval or 0)}
    job = client.create_recurring_run(experiment_id=exp.experiment_id, job_name=f"{ir.name}-schedule",
                                      pipeline_package_path=str(yaml_path), params=arguments,
                                      **kwargs)
    return job.recurring_run_id
