"""Issue 14 on Prefect, on the session's real server: the run's logical date in every task, the
backfill as scheduled flow runs run by a real worker, and asset events starting deployments
through the server's own triggers."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pipelines_prefect as pp
import pytest

import unipipe as up
from unipipe.backfill import backfill, plan

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefect_api(prefect_env, monkeypatch, tmp_path):
    """PREFECT_API_URL at the session's server for this process and its subprocesses."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    home = tmp_path / "prefect-home"
    monkeypatch.setenv("PREFECT_API_URL", prefect_env.api_url)
    monkeypatch.setenv("PREFECT_HOME", str(home))
    with temporary_settings(updates={PREFECT_API_URL: prefect_env.api_url, PREFECT_HOME: str(home)}):
        yield prefect_env


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_manual_run_gives_each_task_the_flow_runs_scheduled_start_time(prefect_env):
    before = datetime.now(UTC)
    result = up.run(pp.nightly, backend="prefect", params={"label": "manual"})
    after = datetime.now(UTC)
    assert result.state == "success", result.error
    out = result.tasks["when_am_i_slowly"].output
    when = _instant(out["logical_date"])
    # a manual flow run's expected_start_time is its creation time
    # (prefect/runtime/flow_run.py get_scheduled_start_time)
    assert when.tzinfo is not None
    assert before.timestamp() - 5 <= when.timestamp() <= after.timestamp()


def test_a_7_day_backfill_creates_7_scheduled_flow_runs_with_the_plans_dates(prefect_api):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from unipipe_prefect.backfill import run_id_for

    ir = up.load(pp.nightly)
    # the window holds the spring-forward day: 02:30 does not exist on 2024-03-31 in Berlin
    # and fires at 03:30 CEST (the reference: unipipe/schedules.py)
    dates = [d.isoformat() for d in plan(ir, "2024-03-28", "2024-04-03")]
    assert len(dates) == 7
    assert dates[3] == "2024-03-31T03:30:00+02:00"
    seen: list[str] = []
    results = backfill(ir, "prefect", "2024-03-28", "2024-04-03", max_active=2,
                       params={"label": "bf", "seconds": 1.5},
                       progress=lambda when, result: seen.append(when))
    assert sorted(seen) == dates
    assert [r.state for r in results] == ["success"] * 7
    for date, result in zip(dates, results, strict=True):
        assert result.run_id == run_id_for(date)
        out = result.tasks["when_am_i_slowly"].output
        assert out["label"] == "bf"
        assert result.output == out  # the flow's return value, rebuilt from the task values
        assert _instant(out["logical_date"]) == _instant(date)
    # at most --max-active runs at once (the worker's --limit): no instant inside three tasks
    spans = [r.tasks["when_am_i_slowly"].attempt_times[-1] for r in results]
    assert max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans) <= 2
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[run_id_for(d) for d in dates])))
    assert len(runs) == 7
    assert sorted(r.expected_start_time for r in runs) == [_instant(d) for d in dates]
    assert all(r.state.is_completed() for r in runs)


def test_backfill_of_a_pipeline_without_a_schedule_is_refused_before_anything_is_created():
    from unipipe.backfill import BackfillError

    with pytest.raises(BackfillError, match="has no schedule"):
        backfill(up.load(pp.producer), "prefect", "2024-01-01", "2024-01-07")


# ---------------------------------------------------------------- assets and triggers


def test_an_asset_update_starts_the_triggered_deployment_on_the_server(prefect_api, tmp_path):
    """A's task produces the asset; the server (its ReactiveTriggers and Actions services)
    starts B; a failed A starts nothing; two successful A runs start two B runs (Prefect runs
    once per event: no collapsing, unlike Airflow's queue). Deployment, worker and waiting are
    the conformance chain's (unipipe_prefect/chain.py)."""
    from prefect import get_client
    from prefect.events import Event
    from unipipe_prefect.chain import deployed, runs_of, wait_final

    from unipipe.api import search_path

    a, b, both = up.load(pp.producer), up.load(pp.consumer), up.load(pp.consumer_all)
    deadline = time.monotonic() + 300
    with deployed([a, b, both], tmp_path, search_path(a)) as d, \
            get_client(sync_client=True) as client:
        dep_a = d.deployments["p14-producer"]
        dep_b = d.deployments["p14-consumer"]
        dep_all = d.deployments["p14-consumer-all"]
        autos = client.read_resource_related_automations(f"prefect.deployment.{dep_b.id}")
        assert len(autos) == 1
        assert autos[0].trigger.match.model_dump()["prefect.resource.id"] == [
            "unipipe.asset.s3://p14-lake/features", "unipipe.asset.s3://p14-lake/other"]
        assert runs_of(client, dep_b.id) == []

        # 1. A succeeds: its task's event makes the server create one B run
        run_a = client.create_flow_run_from_deployment(dep_a.id, parameters={"fail": False})
        assert wait_final(client, run_a.id, deadline).state.is_completed()
        assert len(d.asset_events(run_a.id)) == 1
        runs_b = d.settle(client, dep_b.id, deadline, d.asset_events(run_a.id))
        assert len(runs_b) == 1
        assert runs_b[0].state.is_completed(), runs_b[0].state
        assert runs_b[0].created >= client.read_flow_run(run_a.id).start_time
        b1 = d.result(client, b, runs_b[0], {"label": "triggered"})
        assert b1.state == "success" and b1.tasks["when_am_i"].output["label"] == "triggered"
        assert b1.tasks["when_am_i"].output["logical_date"] is not None

        # 2. A fails: its task emitted nothing, no B run
        failed = client.create_flow_run_from_deployment(dep_a.id, parameters={"fail": True})
        assert wait_final(client, failed.id, deadline).state.is_failed()
        assert d.asset_events(failed.id) == []
        assert len(d.settle(client, dep_b.id, deadline)) == 1

        # 3. two A runs in a row (both created before either ends): two events, two B runs
        twice = [client.create_flow_run_from_deployment(dep_a.id, parameters={"fail": False})
                 for _ in range(2)]
        for r in twice:
            assert wait_final(client, r.id, deadline).state.is_completed()
        runs_b = d.settle(client, dep_b.id, deadline, d.asset_events(*(r.id for r in twice)))
        assert len(runs_b) == 3
        assert all(r.state.is_completed() for r in runs_b)

        # 4. mode="all": three updates of one asset start nothing; the other asset's update
        # (an event from outside, as any producer's) completes the compound trigger: one run
        assert runs_of(client, dep_all.id) == []
        other = Event(event="unipipe.asset.updated",
                      resource={"prefect.resource.id": "unipipe.asset.s3://p14-lake/other"})
        client.request("POST", "/events", json=[other.model_dump(mode="json")])
        runs_all = d.settle(client, dep_all.id, deadline, [str(other.id)])
        assert len(runs_all) == 1
        assert runs_all[0].state.is_completed()


def test_deploy_creates_the_missed_runs_of_a_catchup_schedule_and_ends_its_window(prefect_api,
                                                                                  tmp_path):
    """catchup=True: Prefect schedules from now, so the deploy creates the runs since start
    (clipped to end) itself, Scheduled at the reference's dates; a schedule whose end has passed
    is inactive."""
    from prefect import get_client
    from unipipe_prefect.chain import runs_of

    from unipipe.deploy import deploy

    ir = up.load(pp.windowed)
    pool = f"p14-{uuid.uuid4().hex[:8]}"
    plan_ = deploy(ir, "prefect", [f"code_dir={tmp_path / 'code'}", f"work_pool={pool}"])
    # the reference's dates (unipipe/schedules.py fire_times): end="2024-04-03" is that day's
    # midnight, so 03-28 .. 04-02
    dates = plan(ir, "2024-03-01", "2024-04-30")
    assert len(dates) == 6
    assert f"{len(dates)} catchup run(s)" in str([s.result for s in plan_.steps])
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("p14-windowed/p14-windowed")
        assert [s.active for s in dep.schedules] == [False]  # 2024-04-03 has passed
        runs = runs_of(client, dep.id)
    assert sorted(r.expected_start_time for r in runs) == dates
    assert all(r.state.is_scheduled() for r in runs)


def test_a_sub_pipelines_tasks_get_the_runs_logical_date(prefect_env):
    """A group runs as a subflow, a flow run of its own created later: its tasks still get the
    pipeline's (root flow run's) logical date, as the reference gives one date per run."""
    result = up.run(pp.dated_outer, backend="prefect")
    assert result.state == "success", result.error
    outer = result.output["outer"]["logical_date"]
    assert outer is not None
    assert result.output["inner"]["logical_date"] == outer


def test_the_chains_probe_comes_back_only_after_the_server_reacted_to_the_events_it_follows(
        prefect_api):
    """A probe that follows an event (one whose automation runs a deployment, as a consumer's
    trigger does) is not answered while that event has not reached the server, even when it
    was sent first: the server holds it (Prefect's causal ordering). Once the event arrives,
    its run exists when the probe comes back, at the latest within the calm window ``settle``
    waits after it. Each round trip waits for its own run (by its nonce) and deletes it; the
    probe's deployment has no work pool, so nothing runs its runs; deleting the probe leaves
    nothing of it on the server."""
    import contextvars
    import threading

    from prefect import get_client
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from unipipe_prefect.chain import PROBED_QUIET, Probe, runs_of

    name = uuid.uuid4().hex[:8]
    leader = str(uuid.uuid4())
    with get_client(sync_client=True) as client:
        flow = client.create_flow_from_name(f"p14-target-{name}")
        target = client.create_deployment(flow_id=flow, name="target")
        starter = client.create_automation(AutomationCore(
            name=f"starter {name}", trigger=EventTrigger(
                expect={"p14.before-probe"}, match={"prefect.resource.id": f"p14.{name}"},
                posture=Posture.Reactive, threshold=1),
            actions=[RunDeployment(source="selected", deployment_id=target)]))
        probe = Probe.create(client, name)
        try:
            deadline = time.monotonic() + 120
            lags = [probe.round_trip(client, deadline)]  # follows nothing: answered
            assert runs_of(client, target) == []

            def follow() -> None:
                with get_client(sync_client=True) as own:
                    lags.append(probe.round_trip(own, deadline, [leader]))

            # the thread's client talks to this server too (the settings are context variables)
            waiting = threading.Thread(target=contextvars.copy_context().run, args=(follow,))
            waiting.start()
            waiting.join(3)
            assert waiting.is_alive(), "the probe came back before the event it follows"
            assert len(lags) == 1
            client.request("POST", "/events", json=[{
                "id": leader, "occurred": datetime.now(UTC).isoformat(),
                "event": "p14.before-probe",
                "resource": {"prefect.resource.id": f"p14.{name}"}}]).raise_for_status()
            waiting.join(120)
            assert not waiting.is_alive() and len(lags) == 2
            back = time.monotonic()
            calm = max(PROBED_QUIET, 2 * lags[-1])
            while not runs_of(client, target) and time.monotonic() - back < calm:
                time.sleep(0.05)
            assert len(runs_of(client, target)) == 1
            assert all(0 < lag < 120 for lag in lags), lags
            probe_runs = runs_of(client, probe.deployment_id)
            assert probe_runs == [], [(r.parameters, r.state_name) for r in probe_runs]
        finally:
            probe.delete(client)
            client.delete_automation(starter)
            client.delete_deployment(target)
            client.delete_flow(flow)
        assert client.read_automations_by_name(f"unipipe chain probe {name}") == []
        assert f"unipipe-chain-probe-{name}" not in {f.name for f in client.read_flows()}
