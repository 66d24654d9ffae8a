"""Run a generated flow in this process and report what Prefect recorded (used by ``Backend.run``).

``python -m unipipe_prefect.driver FLOW_FILE FLOW_FUNCTION PARAMS_JSON REPORT_PICKLE [STORE]``

The flow runs against ``PREFECT_API_URL``; afterwards its task runs are read back through the
Prefect client (``read_task_runs`` filtered on the flow run) with their states, run counts and
persisted results, and written, with the flow's final state and return value, to REPORT_PICKLE.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import sys
import time
import traceback
from typing import Any


def _load_flow(path: str, function: str) -> Any:
    spec = importlib.util.spec_from_file_location("unipipe_generated_flow", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return getattr(module, function)


def _task_runs(flow_run_id: Any, settle_timeout: float = 60.0
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    from unipipe_prefect.runtime import FINAL_STATES

    out = []
    with get_client(sync_client=True) as client:
        flow_runs = flow_run_tree(client, flow_run_id)
        tracking = {fr["parent_task_run_id"] for fr in flow_runs if fr["parent_task_run_id"]}
        # Prefect 3 reports task-run states as events that the server records asynchronously:
        # wait until the API holds the very final state the flow process saw for every task run.
        deadline = time.monotonic() + settle_timeout
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
                    any_=[fr["id"] for fr in flow_runs])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC)
            # (the task run's state_id can be written before the state row it points to)
            recorded = {str(tr.id): tr.state.id if tr.state is not None else None for tr in runs}
            settled = all(recorded.get(run_id) == final.id for run_id, final in FINAL_STATES.items())
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for tr in runs:
            if str(tr.id) in tracking:
                continue  # the task run standing for a subflow run in its parent
            # the value from the flow process's own final state (results of uncached tasks
            # are not persisted, so the API's copy of the state cannot give them)
            final = FINAL_STATES.get(str(tr.id))
            done = final is not None and final.is_completed()
            out.append(task_record(tr, (final.result(),) if done else ()))
    return out, flow_runs


def flow_run_tree(client: Any, flow_run_id: Any) -> list[dict[str, Any]]:
    """The flow run and, below it, the subflow runs of its groups (any depth): id, name (a
    subflow run is named after its group), parent flow run, run count and last start.

    A subflow call records a task run in its parent that stands for it, and the subflow run
    names it as ``parent_task_run_id`` (prefect/flow_engine.py ~961 ``create_flow_run``); the
    API finds a flow run's subflow runs through it (``FlowRunFilter.parent_flow_run_id``). A
    retried subflow runs its body again in the same flow run, with new task runs (as the
    pipeline's own flow retries do); a group whose parent is tried again keeps its flow run if
    it completed (its body runs again there) and gets a new one if it failed
    (``load_subflow_run`` ~902)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    out: list[dict[str, Any]] = []
    level: list[tuple[Any, str | None]] = [(flow_run_id, None)]
    while level:
        below: list[tuple[Any, str | None]] = []
        for fid, parent in level:
            fr = client.read_flow_run(fid)
            out.append({"id": str(fr.id), "name": fr.name, "parent": parent,
                        "parent_task_run_id": (str(fr.parent_task_run_id)
                                               if fr.parent_task_run_id else None),
                        **flow_run_tries(client, fr.id)})
            kids = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[fr.id])))
            below += [(k.id, str(fr.id)) for k in kids]
        level = below
    return out


def flow_run_tries(client: Any, flow_run_id: Any) -> dict[str, Any]:
    """How many times the flow run's body ran (1 + the flow retries it used) and when the last
    try began: the flow run's last transition to Running, from its state history."""
    run_count = int(client.read_flow_run(flow_run_id).run_count or 1)
    running = [st.timestamp.timestamp() for st in client.read_flow_run_states(flow_run_id)
               if st.type.value == "RUNNING" and st.timestamp is not None]
    return {"run_count": run_count, "run_started": max(running) if running else None}


def flow_artifacts(client: Any, flow_run_ids: list[str]) -> list[dict[str, Any]]:
    """The Prefect artifacts of the flow run and its subflow runs, as the API holds them
    (``read_artifacts`` filtered on the flow runs: POST /api/artifacts/filter), oldest first
    (the API sorts newest first: client/schemas/sorting.py ``ArtifactSort``):
    what results.py turns into RunResult.metrics / .artifacts / .reports. Each carries the task
    run it was created in (runtime.publish_record runs inside the task run)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import ArtifactSort

    out: list[dict[str, Any]] = []
    page = 200
    while True:
        batch = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)),
            sort=ArtifactSort.CREATED_DESC, limit=page, offset=len(out))
        out += [{"id": str(a.id), "key": a.key, "type": a.type, "data": a.data,
                 "description": a.description,
                 "task_run_id": str(a.task_run_id) if a.task_run_id else None,
                 "flow_run_id": str(a.flow_run_id) if a.flow_run_id else None}
                for a in batch]
        if len(batch) < page:
            return out[::-1]


def task_record(tr: Any, value: tuple[Any, ...] = ()) -> dict[str, Any]:
    """What results.build_result reads of one task run (``tr`` as the API holds it); its value,
    ``(value,)``, when the flow process saw it complete."""
    state = tr.state
    record: dict[str, Any] = {
        "id": str(tr.id), "name": tr.name, "task_key": tr.task_key,
        "run_count": tr.run_count, "state_type": state.type.value if state else None,
        "state_name": state.name if state else None,
        "message": state.message if state else None, "has_result": False,
        # which try of the whole flow run it belongs to (@flow(retries=N) runs the body again in
        # the same flow run, with new task runs: client/schemas/objects.py TaskRun)
        "flow_run_run_count": tr.flow_run_run_count or 1,
        "flow_run_id": str(tr.flow_run_id) if tr.flow_run_id else None,
    }
    if value:
        record["result"] = value[0]
        record["has_result"] = True
    return record


def main(argv: list[str]) -> int:
    flow_file, function, params_json, report_path, *store = argv
    report: dict[str, Any] = {"ok": False}
    try:
        if os.environ.get("UNIPIPE_PREFECT_ISOLATION", "process") != "inline":
            # the attempts' zygote, forked now while this process has one thread (Prefect
            # starts its threads below); a process that already has threads spawns one
            from unipipe.runtime import zygote
            from unipipe_prefect.runtime import ZYGOTE_PRELOAD

            zygote.start(ZYGOTE_PRELOAD)
        if store:  # the flow's result storage names this block: it must exist on the server
            from unipipe_prefect.storage import save_block

            save_block(store[0])
        flow_fn = _load_flow(flow_file, function)
        params = json.loads(params_json)
        state = flow_fn(**params, return_state=True)
        flow_run_id = state.state_details.flow_run_id
        report.update(flow_run_id=str(flow_run_id), state_type=state.type.value,
                      state_name=state.name, message=state.message)
        if state.is_completed():
            report["output"] = state.result()
        report["task_runs"], report["flow_runs"] = _task_runs(flow_run_id)
        from prefect import get_client

        with get_client(sync_client=True) as client:
            report.update(flow_run_tries(client, flow_run_id))
            report["artifacts"] = flow_artifacts(client, [f["id"] for f in report["flow_runs"]])
        report["ok"] = True
    except BaseException:  # noqa: BLE001 - reported to the parent
        report["error"] = traceback.format_exc()
    with open(report_path, "wb") as fh:
        pickle.dump(report, fh)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
