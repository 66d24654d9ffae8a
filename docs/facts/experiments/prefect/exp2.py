"""Prefect 3.7 experiment 2: event trigger with payload templating, burst, compound re-arm, runtime scheduled time."""
import asyncio, os, time
from datetime import datetime, timedelta, timezone
from prefect import flow

OUT = "/tmp/facts/prefect/runtime.txt"

@flow
def consumer2(trigger_event: str = "", payload_x: str = ""):
    from prefect.runtime import flow_run
    with open(OUT, "a") as f:
        f.write("name=%s scheduled_start_time=%s trigger_event=%s payload_x=%s\n"
                % (flow_run.name, flow_run.scheduled_start_time, trigger_event, payload_x))


async def main():
    from prefect import get_client
    from prefect.runner import Runner
    from prefect.events import emit_event, DeploymentEventTrigger, DeploymentCompoundTrigger, EventTrigger
    from prefect.events.worker import EventsWorker
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.states import Scheduled
    T0 = time.monotonic()
    def log(*a): print("[%6.2fs]" % (time.monotonic() - T0), *a, flush=True)

    d_any = await consumer2.to_deployment(name="on-x2", triggers=[DeploymentEventTrigger(
        expect={"unipipe.asset.updated"}, match={"prefect.resource.id": "unipipe.asset.s3://b/x"},
        parameters={"trigger_event": "{{ event.event }}", "payload_x": "{{ event.payload.x }}"})])
    d_all = await consumer2.to_deployment(name="on-a-and-b2", triggers=[DeploymentCompoundTrigger(
        require="all", within=timedelta(seconds=60), triggers=[
            EventTrigger(expect={"unipipe.asset.updated"}, match={"prefect.resource.id": "unipipe.asset.a"}),
            EventTrigger(expect={"unipipe.asset.updated"}, match={"prefect.resource.id": "unipipe.asset.b"})])])
    d_plain = await consumer2.to_deployment(name="manual2")
    runner = Runner(query_seconds=2, limit=1)
    ids = {d.name: await runner.aadd_deployment(d) for d in (d_any, d_all, d_plain)}
    task = asyncio.create_task(runner.start())
    async with get_client() as client:
        async def runs_of(name):
            return await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[ids[name]])))
        async def wait_count(name, n, timeout=40):
            t = time.monotonic()
            while time.monotonic() - t < timeout:
                rs = await runs_of(name)
                if len(rs) >= n: return rs, time.monotonic() - t
                await asyncio.sleep(0.2)
            return await runs_of(name), None
        def emit(rid, **payload):
            return emit_event(event="unipipe.asset.updated", resource={"prefect.resource.id": rid}, payload=payload)
        await asyncio.sleep(3)
        emit("unipipe.asset.s3://b/x", x="42"); await EventsWorker.drain_all()
        rs, dt_ = await wait_count("on-x2", 1)
        log("on-x2: %d run(s), created %.2fs after emit" % (len(rs), dt_ or -1))
        for i in range(2): emit("unipipe.asset.s3://b/x", x="burst%d" % i)
        await EventsWorker.drain_all()
        rs, dt_ = await wait_count("on-x2", 3); await asyncio.sleep(3)
        rs = await runs_of("on-x2")
        log("on-x2 after 2-event burst: %d runs; params=%s" % (len(rs), sorted(str(r.parameters) for r in rs)))
        # compound: a, b -> fire; then b alone; then a
        emit("unipipe.asset.a"); await EventsWorker.drain_all(); await asyncio.sleep(2)
        emit("unipipe.asset.b"); await EventsWorker.drain_all()
        rs, dt_ = await wait_count("on-a-and-b2", 1); log("compound after a,b: %d (%.2fs after b)" % (len(rs), dt_ or -1))
        emit("unipipe.asset.b"); await EventsWorker.drain_all(); await asyncio.sleep(6)
        log("compound after a,b,b: %d" % len(await runs_of("on-a-and-b2")))
        emit("unipipe.asset.a"); await EventsWorker.drain_all(); await asyncio.sleep(6)
        log("compound after a,b,b,a: %d" % len(await runs_of("on-a-and-b2")))
        # past scheduled run created client-side
        fr = await client.create_flow_run_from_deployment(ids["manual2"], state=Scheduled(
            scheduled_time=datetime(2024, 3, 31, 1, 30, tzinfo=timezone.utc)), parameters={"payload_x": "backfill"})
        log("created past run", fr.name, fr.expected_start_time)
        fr2 = await client.create_flow_run_from_deployment(ids["manual2"], parameters={"payload_x": "now"})
        log("created now run", fr2.name, fr2.expected_start_time)
        t = time.monotonic()
        while time.monotonic() - t < 120:
            rs = await client.read_flow_runs()
            if all(r.state_type.value in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in rs
                   if r.deployment_id in ids.values()):
                break
            await asyncio.sleep(2)
        log("final states:", sorted((r.name, r.state_name) for r in rs if r.deployment_id in ids.values()))
    await runner.astop(); task.cancel()
    try: await task
    except BaseException: pass
    log("done")

if __name__ == "__main__":
    asyncio.run(main())
