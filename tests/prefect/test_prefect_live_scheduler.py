"""Prefect's own server-side scheduler, observed live: a deployment made by ``unipipe deploy``
with a Europe/Berlin cron gets its runs from the server's scheduler service, and their dates
are the reference's (unipipe.schedules.fire_times) but on the declared spring-forward day.

Prefect 3.7.7's scheduler fails on the SQLAlchemy 2.1 of unipipe's lock (docs/facts B3), so the
server here runs from an environment of its own with SQLAlchemy 2.0
(unipipe_prefect.server.scheduler_prefect, built with uv on first use); the deploy and the
reads go through this environment's Prefect client, as a user's would."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pipelines_prefect as pp
import pytest

import unipipe as up
from unipipe.schedules import fire_times

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

#: the scheduler service creates every run of the next ~13 months at once (its loop every
#: second; prefect/server/services/scheduler.py ~35-130 picks deployments with fewer than
#: min_runs runs or none min_scheduled_time ahead, and fills up to max_runs / max_scheduled_time)
SETTINGS = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "380",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "400",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": "P380D",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_SCHEDULED_TIME": "P400D",
}


@pytest.fixture(scope="module")
def scheduler_server():
    from unipipe_prefect.server import LocalPrefectServer, scheduler_prefect

    with LocalPrefectServer(executable=scheduler_prefect(), settings=SETTINGS) as server:
        yield server


def _spring_forward(year: int, tz: ZoneInfo) -> datetime:
    """The day whose 02:30 does not exist in ``tz``."""
    day = datetime(year, 3, 1)
    while True:
        local = day.replace(hour=2, minute=30, tzinfo=tz)
        if local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
            return local
        day += timedelta(days=1)


def test_the_servers_scheduler_creates_the_references_runs_but_on_the_spring_forward_day(
        scheduler_server, monkeypatch, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from unipipe.deploy import deploy

    monkeypatch.setenv("PREFECT_API_URL", scheduler_server.api_url)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    pool = f"live-{uuid.uuid4().hex[:8]}"
    opts = [f"code_dir={tmp_path / 'code'}", f"work_pool={pool}",
            f"results_path={tmp_path / 'results'}"]
    ir = up.load(pp.nightly)
    with temporary_settings(updates={PREFECT_API_URL: scheduler_server.api_url,
                                     PREFECT_HOME: str(tmp_path / "home")}):
        deploy(ir, "prefect", opts)
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("p14-nightly/p14-nightly")
            (schedule,) = dep.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 2 * * *",
                                                                             "Europe/Berlin")
            deadline = time.monotonic() + 120
            while True:
                runs = []
                while len(runs) % 200 == 0:
                    page = client.read_flow_runs(
                        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                        sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=200, offset=len(runs))
                    runs += page
                    if not page:
                        break
                if len(runs) >= 380 or time.monotonic() > deadline:
                    break
                time.sleep(1)
    assert len(runs) >= 380, f"the scheduler made {len(runs)} runs in 120 s"
    assert {r.state.type.value for r in runs} == {"SCHEDULED"}
    assert all(r.auto_scheduled for r in runs)
    prefect = [datetime.fromtimestamp(r.expected_start_time.timestamp(), UTC) for r in runs]
    assert prefect == sorted(set(prefect))
    reference = [t.astimezone(UTC) for t in fire_times(ir.schedule, prefect[0], prefect[-1])]
    berlin = ZoneInfo("Europe/Berlin")
    springs = [d for d in (_spring_forward(y, berlin) for y in range(prefect[0].year,
                                                                     prefect[-1].year + 1))
               if prefect[0] <= d <= prefect[-1]]
    assert springs  # 380 days hold at least one
    # the reference moves the missing 02:30 forward by the gap (03:30 CEST, 01:30 UTC);
    # Prefect fires it an hour early (01:30 CET, 00:30 UTC), as its CronSchedule.get_dates does
    # (declared: unipipe_prefect backend support, schedule.cron); the fall-back day's repeated
    # 02:30 fires once, at the first, on both
    assert sorted(set(prefect) - set(reference)) == [
        datetime(d.year, d.month, d.day, 0, 30, tzinfo=UTC) for d in springs]
    assert sorted(set(reference) - set(prefect)) == [
        datetime(d.year, d.month, d.day, 1, 30, tzinfo=UTC) for d in springs]
    assert len(prefect) == len(reference)
