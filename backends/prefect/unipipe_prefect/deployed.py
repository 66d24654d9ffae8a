"""Run a flow as a deployment that process workers pick up, and report what Prefect recorded
(isolated runs, :mod:`unipipe_prefect.isolated`).

``python -m unipipe_prefect.deployed SPEC_JSON REPORT_PICKLE``

SPEC_JSON holds the flow name, the entrypoint inside the pulled code tree, the code tree's URL,
the work pool, the parameters and the store. This process saves the store's result-storage
block, makes the work pool, creates the deployment (its pull step copies the code tree into the
flow run's working folder) and one flow run, waits until the flow run and its task runs are final
and writes the same report as :mod:`unipipe_prefect.driver`. The flow runs in a worker's process,
not here: states, run counts and the flow's result come from the API (the flow's result is
persisted on the store's result storage); the task runs' values from the file the flow process
leaves under ``values_url`` (``runtime._publish_values``), since Prefect persists the results of
cached tasks only (an uncached task's transaction has no key: prefect/task_engine.py
``transaction(key=self.compute_transaction_key(), ...)``), as the driver takes them from the
flow process's own final states.
"""

from __future__ import annotations

import json
import pickle
import sys
import time
import traceback
from typing import Any

#: Prefect state types after which a run changes no more
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def pull_steps(code_url: str) -> list[dict[str, Any]]:
    """The deployment's pull step: ``pull_from_remote_storage(url, **settings)``
    (prefect/deployments/steps/pull.py) copies ``url`` with fsspec into
    ``<cwd>/<bucket>/<path>`` and returns it as ``directory``, which
    ``prefect/flows.py::load_flow_from_flow_run`` makes the working folder before it loads the
    entrypoint. ``prefect/utilities/importtools.py::load_script_as_module`` puts the flow file's
    folder (the code tree: unipipe, the backend, the user's modules) first on sys.path, where the
    forked task attempts find it too. No credentials: the worker's environment has them."""
    return [{"prefect.deployments.steps.pull_from_remote_storage": {"url": code_url}}]


def ensure_deployment(client: Any, spec: dict[str, Any], pull: list[dict[str, Any]],
                      **extra: Any) -> Any:
    """The id of a new deployment of ``spec["flow_name"]`` on the process work pool
    ``spec["pool"]`` (created if missing), running ``spec["entrypoint"]`` after ``pull``."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    try:
        client.create_work_pool(WorkPoolCreate(name=spec["pool"], type="process"))
    except ObjectAlreadyExists:
        pass
    flow_id = client.create_flow_from_name(spec["flow_name"])
    return client.create_deployment(
        flow_id=flow_id, name=spec["deployment"], work_pool_name=spec["pool"],
        entrypoint=spec["entrypoint"], pull_steps=pull, enforce_parameter_schema=False, **extra)


def _wait_flow_run(client: Any, flow_run_id: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        fr = client.read_flow_run(flow_run_id)
        if fr.state is not None and fr.state.type.value in FINAL:
            return fr
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run {flow_run_id} not final after {timeout:g}s "
                               f"(state {fr.state.name if fr.state else None}); no worker ran it?")
        time.sleep(0.2)


def _settled_task_runs(client: Any, flow_run_ids: list[Any], timeout: float = 60.0) -> list[Any]:
    """The task runs of the flow run and its subflow runs once every one is final and two
    reads agree (task-run states reach the API as events, recorded asynchronously: see
    driver._task_runs)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC)
        seen = [(str(tr.id), tr.state.id if tr.state else None, tr.run_count) for tr in runs]
        final = all(tr.state is not None and tr.state.type.value in FINAL for tr in runs)
        if (final and seen == last) or time.monotonic() > deadline:
            return runs
        last = seen if final else None
        time.sleep(0.2)


def _values(url: str, flow_run_id: Any) -> dict[str, Any]:
    """The completed task runs' values the flow process left on the store
    (``runtime._publish_values``); none if it ended before its tasks did."""
    import fsspec

    path = f"{url.rstrip('/')}/{flow_run_id}.pickle"
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.exists(root):
        return {}
    return pickle.loads(fs.cat_file(root))


def main(argv: list[str]) -> int:
    spec_path, report_path = argv
    spec = json.loads(open(spec_path).read())
    report: dict[str, Any] = {"ok": False}
    try:
        from prefect import get_client

        from unipipe_prefect.driver import (
            flow_artifacts,
            flow_run_tree,
            flow_run_tries,
            task_record,
        )
        from unipipe_prefect.storage import save_block

        save_block(spec["store"])
        with get_client(sync_client=True) as client:
            deployment_id = ensure_deployment(
                client, spec, pull_steps(spec["code_url"]),
                # the sandbox's python3 (first on the worker's PATH, started with -S), not the
                # worker's sys.executable, which the process worker would use otherwise
                # (prefect/workers/process.py::ProcessJobConfiguration.prepare_for_flow_run)
                job_variables={"command": "python3 -m prefect.engine"})
            flow_run = client.create_flow_run_from_deployment(
                deployment_id, parameters=spec["params"])
            fr = _wait_flow_run(client, flow_run.id, spec.get("timeout", 1800))
            state = fr.state
            report.update(flow_run_id=str(fr.id), state_type=state.type.value,
                          state_name=state.name, message=state.message)
            report.update(flow_run_tries(client, fr.id))
            if state.is_completed():
                report["output"] = state.result()
            report["flow_runs"] = flow_run_tree(client, fr.id)
            tracking = {f["parent_task_run_id"] for f in report["flow_runs"]}
            runs = _settled_task_runs(client, [f["id"] for f in report["flow_runs"]])
            values = _values(spec["values_url"], fr.id)
            report["task_runs"] = [
                task_record(tr, (values[str(tr.id)],) if str(tr.id) in values else ())
                for tr in runs if str(tr.id) not in tracking]  # not a subflow's stand-in
            report["artifacts"] = flow_artifacts(client, [f["id"] for f in report["flow_runs"]])
        report["ok"] = True
    except BaseException:  # noqa: BLE001 - reported to the parent
        report["error"] = traceback.format_exc()
    with open(report_path, "wb") as fh:
        pickle.dump(report, fh)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
