"""Prefect 3.7 experiment: event triggers, compound 'all', cron schedules, backfill, artifacts."""
import asyncio, json, os, sys, time
from datetime import datetime, timedelta, timezone
from prefect import flow


@flow(log_prints=True)
def consumer(trigger_event: str = "", payload_x: str = ""):
    from prefect.runtime import flow_run
    from prefect.artifacts import create_markdown_artifact, create_table_artifact, create_link_artifact
    print("RUNTIME scheduled_start_time=%s trigger_event=%s payload_x=%s"
          % (flow_run.scheduled_start_time, trigger_event, payload_x))
    create_markdown_artifact("# Report\naccuracy 0.9", key="report-md", description="md")
    create_table_artifact([{"metric": "accuracy", "value": 0.9}], key="metrics-table")
    create_link_artifact("file:///tmp/model.bin", link_text="model", key="model-link")
    return "ok"


async def main():
    import httpx
    from prefect import get_client
    from prefect.runner import Runner
    from prefect.events import emit_event, DeploymentEventTrigger, DeploymentCompoundTrigger, EventTrigger
    from prefect.events.worker import EventsWorker
    from prefect.schedules import Cron
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.states import Scheduled

    api = os.environ["PREFECT_API_URL"]
    T0 = time.monotonic()
    def log(*a):
        print("[%6.2fs]" % (time.monotonic() - T0), *a, flush=True)

    any_trigger = DeploymentEventTrigger(
        expect={"unipipe.asset.updated"},
        match={"prefect.resource.id": "unipipe.asset.s3://b/x"},
        parameters={"trigger_event": "{{ event.id }}", "payload_x": "{{ event.payload.x }}"},
    )
    all_trigger = DeploymentCompoundTrigger(
        require="all",
        within=timedelta(seconds=60),
        triggers=[
            EventTrigger(expect={"unipipe.asset.updated"}, match={"prefect.resource.id": "unipipe.asset.a"}),
            EventTrigger(expect={"unipipe.asset.updated"}, match={"prefect.resource.id": "unipipe.asset.b"}),
        ],
    )
    d_any = await consumer.to_deployment(name="on-x", triggers=[any_trigger])
    d_all = await consumer.to_deployment(name="on-a-and-b", triggers=[all_trigger])
    d_cron = await consumer.to_deployment(name="nightly", schedules=[Cron("30 2 * * *", timezone="Europe/Berlin")])
    runner = Runner(query_seconds=2, limit=1)
    ids = {}
    for d in (d_any, d_all, d_cron):
        ids[d.name] = await runner.aadd_deployment(d)
    log("deployments", ids)
    task = asyncio.create_task(runner.start())

    async with get_client() as client:
        autos = await client.read_automations()
        log("automations:", [(a.name, a.trigger.type, [x.model_dump(mode='json') for x in a.actions][0]['type']) for a in autos])

        async def runs_of(name):
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[ids[name]])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC)

        async def wait_count(name, n, timeout=60):
            t = time.monotonic()
            while time.monotonic() - t < timeout:
                rs = await runs_of(name)
                if len(rs) >= n:
                    return rs, time.monotonic() - t
                await asyncio.sleep(0.25)
            return await runs_of(name), None

        await asyncio.sleep(3)  # let automations load into the triggers service

        # 1) any-trigger, event via emit_event (websocket /events/in)
        t = time.monotonic()
        ev = emit_event(event="unipipe.asset.updated", resource={"prefect.resource.id": "unipipe.asset.s3://b/x"}, payload={"x": "42"})
        await EventsWorker.drain_all()  # flush the websocket client
        log("emitted via emit_event", ev.id if ev else None)
        rs, dt_ = await wait_count("on-x", 1)
        log("on-x runs after 1 event: %d, run created %.2fs after emit" % (len(rs), dt_ or -1))

        # 2) any-trigger, event via REST POST /api/events (no websocket)
        evt = {"id": "0195f0aa-0000-7000-8000-000000000001", "occurred": datetime.now(timezone.utc).isoformat(),
               "event": "unipipe.asset.updated", "resource": {"prefect.resource.id": "unipipe.asset.s3://b/x"},
               "payload": {"x": "rest"}, "related": []}
        r = httpx.post(api + "/events", json=[evt])
        log("REST POST /api/events ->", r.status_code)
        rs, dt_ = await wait_count("on-x", 2)
        log("on-x runs after REST event: %d (%.2fs)" % (len(rs), dt_ or -1))

        # 3) two events back to back -> how many runs?
        for i in range(2):
            emit_event(event="unipipe.asset.updated", resource={"prefect.resource.id": "unipipe.asset.s3://b/x"}, payload={"x": "burst%d" % i})
        await EventsWorker.drain_all()
        rs, dt_ = await wait_count("on-x", 4, timeout=30)
        log("on-x runs after 2-event burst: %d" % len(rs))
        log("on-x params:", [r_.parameters for r_ in rs])

        # 4) compound all: a, a, then b
        emit_event(event="unipipe.asset.updated", resource={"prefect.resource.id": "unipipe.asset.a"})
        await EventsWorker.drain_all(); await asyncio.sleep(5)
        log("on-a-and-b after a: %d" % len(await runs_of("on-a-and-b")))
        emit_event(event="unipipe.asset.updated", resource={"prefect.resource.id": "unipipe.asset.a"})
        await EventsWorker.drain_all(); await asyncio.sleep(5)
        log("on-a-and-b after a,a: %d" % len(await runs_of("on-a-and-b")))
        emit_event(event="unipipe.asset.updated", resource={"prefect.resource.id": "unipipe.asset.b"})
        await EventsWorker.drain_all()
        rs, dt_ = await wait_count("on-a-and-b", 1, timeout=20)
        await asyncio.sleep(5)
        log("on-a-and-b after a,a,b: %d (first after %.2fs)" % (len(await runs_of("on-a-and-b")), dt_ or -1))

        # 5) cron: what did the server scheduler create?
        rs = await runs_of("nightly")
        log("nightly auto-scheduled runs:", [(str(x.expected_start_time), x.state_name, x.auto_scheduled) for x in rs])

        # 6) backfill via POST /deployments/{id}/schedule with a past window (DST spring forward)
        r = httpx.post(api + "/deployments/%s/schedule" % ids["nightly"], json={
            "start_time": "2024-03-30T00:00:00+01:00", "end_time": "2024-04-01T03:00:00+02:00"})
        log("POST /deployments/{id}/schedule ->", r.status_code)
        r = httpx.post(api + "/deployments/%s/schedule" % ids["nightly"], json={
            "start_time": "2024-10-26T00:00:00+02:00", "end_time": "2024-10-28T03:00:00+01:00"})
        log("POST /deployments/{id}/schedule (fall back) ->", r.status_code)
        rs = await runs_of("nightly")
        log("nightly runs now:", [(str(x.expected_start_time), x.name, x.state_name) for x in rs])

        # 7) manual past run via create_flow_run_from_deployment(state=Scheduled(past))
        fr = await client.create_flow_run_from_deployment(
            ids["nightly"], state=Scheduled(scheduled_time=datetime(2024, 1, 1, 1, 30, tzinfo=timezone.utc)))
        log("manual past run", fr.id, fr.expected_start_time, fr.state_name)

        # wait for the past runs to be executed by the runner (limit=1)
        t = time.monotonic()
        while time.monotonic() - t < 150:
            rs = await client.read_flow_runs(flow_run_filter=None)
            pending = [x for x in rs if x.state_type.value in ("SCHEDULED", "PENDING", "RUNNING") and x.expected_start_time < datetime.now(timezone.utc)]
            if not pending:
                break
            await asyncio.sleep(2)
        rs = await client.read_flow_runs()
        log("all runs:", [(x.name, x.state_name, str(x.expected_start_time)) for x in rs])

        # 8) artifacts read back
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
        done = [x for x in rs if x.state_name == "Completed"]
        fr0 = done[0]
        arts = await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr0.id])))
        log("artifacts of run", fr0.name, [(a.key, a.type, a.data if a.type != "table" else a.data[:80], a.task_run_id, str(a.flow_run_id)==str(fr0.id)) for a in arts])
        r = httpx.post(api + "/artifacts/filter", json={"flow_runs": {"id": {"any_": [str(fr0.id)]}}})
        log("REST /api/artifacts/filter ->", r.status_code, [(a["key"], a["type"]) for a in r.json()])
        r = httpx.post(api + "/artifacts/latest/filter", json={"artifacts": {"key": {"any_": ["report-md"]}}})
        log("REST /api/artifacts/latest/filter ->", r.status_code, [(a["key"], a["latest_id"]) for a in r.json()])
        # scheduled_start_time seen inside runs: read logs
        logs = await client.read_logs()
        log("RUNTIME lines:", sorted({l.message for l in logs if l.message.startswith("RUNTIME")}))

    await runner.astop()
    task.cancel()
    try:
        await task
    except BaseException:
        pass
    log("done")

if __name__ == "__main__":
    asyncio.run(main())
