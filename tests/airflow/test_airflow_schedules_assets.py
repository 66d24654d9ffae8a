"""Issue 14 on real Airflows: logical dates, the DAG's own timetable across DST, backfill, and
asset-triggered runs started by a real scheduler.

Engine facts: docs/facts/events-schedules-artifacts.md (A1, A2, B1, B2).
"""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pipelines_assets as pa
import pytest
from unipipe_airflow.engine import engine_for

import unipipe as up
from unipipe.authoring.loader import load_ir
from unipipe.backfill import backfill, plan
from unipipe.schedules import fire_times

VERSIONS = ["3.3", "2.11"]


def _engine(version: str):
    return engine_for(None if version == "3.3" else version)


# ---------------------------------------------------------------- the timetable across DST


@pytest.mark.parametrize("version", VERSIONS)
def test_the_dags_timetable_fires_as_the_reference_across_2024_dst_except_fall_back(
        version, tmp_path, request):
    """Airflow's own timetable (read from the generated DAG: CronTriggerTimetable with the
    schedule's timezone) over all of 2024 in Europe/Berlin equals unipipe.schedules.fire_times,
    except the declared fall-back difference: on 2024-10-27 Airflow fires 02:30 at its second
    occurrence (CET, 01:30Z), the reference at its first (CEST, 00:30Z). The spring-forward day
    is equal: 03:30 CEST (01:30Z) on both."""
    if version == "2.11":
        request.getfixturevalue("airflow2_python")
    from unipipe_airflow.timetable import planned_runs

    up.compile(pa.nightly, target="airflow", out_dir=tmp_path, target_version=version)
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 12, 31, 23, 59, tzinfo=UTC)
    airflow = planned_runs(tmp_path, "a14-nightly", start, end, _engine(version))
    reference = fire_times(load_ir(pa.nightly).schedule, start, end)
    assert len(airflow) == len(reference) == 366
    only_airflow = {d.astimezone(UTC) for d in airflow} - {d.astimezone(UTC) for d in reference}
    only_reference = {d.astimezone(UTC) for d in reference} - {d.astimezone(UTC) for d in airflow}
    assert only_airflow == {datetime(2024, 10, 27, 1, 30, tzinfo=UTC)}
    assert only_reference == {datetime(2024, 10, 27, 0, 30, tzinfo=UTC)}
    assert datetime(2024, 3, 31, 1, 30, tzinfo=UTC) in airflow  # 03:30 CEST on both


@pytest.mark.parametrize("version", VERSIONS)
def test_the_window_clips_the_timetable(version, tmp_path, request):
    """start_date/end_date of the generated DAG bound the runs as the schedule's window does."""
    if version == "2.11":
        request.getfixturevalue("airflow2_python")
    from unipipe_airflow.timetable import planned_runs

    up.compile(pa.combined, target="airflow", out_dir=tmp_path, target_version=version)
    start, end = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 30, tzinfo=UTC)
    airflow = planned_runs(tmp_path, "a14-combined", start, end, _engine(version))
    reference = fire_times(load_ir(pa.combined).schedule, start, end)
    assert airflow == [d.astimezone(UTC) for d in reference]
    assert len(airflow) == 7


# ---------------------------------------------------------------- logical dates


@pytest.mark.parametrize("version", VERSIONS)
def test_a_manual_dags_test_run_sees_a_logical_date(version, request):
    if version == "2.11":
        request.getfixturevalue("airflow2_python")
    backend = "airflow" if version == "3.3" else "airflow@2.11"
    before = datetime.now(UTC)
    result = up.run(pa.nightly, backend=backend)
    assert result.ok, result
    when = datetime.fromisoformat(result.output)
    assert when.tzinfo is not None and before.replace(microsecond=0) <= when <= datetime.now(UTC)
    fixed = up.run(pa.nightly, backend=backend, logical_date="2024-03-31T01:30:00+00:00")
    assert datetime.fromisoformat(fixed.output) == datetime(2024, 3, 31, 1, 30, tzinfo=UTC)
    assert fixed.output == "2024-03-31T03:30:00+02:00"  # in the schedule's timezone


@pytest.mark.parametrize("version", VERSIONS)
def test_a_seven_day_backfill_is_airflows_and_gives_seven_runs_with_their_dates(
        version, request):
    """3.3: POST /api/v2/backfills run by a real scheduler; 2.11: `airflow dags backfill`."""
    if version == "2.11":
        request.getfixturevalue("airflow2_python")
    backend = "airflow" if version == "3.3" else "airflow@2.11"
    ir = load_ir(pa.nightly)
    dates = [d.isoformat() for d in plan(ir, "2024-03-27", "2024-04-02")]
    assert len(dates) == 7 and "2024-03-31T03:30:00+02:00" in dates
    seen: list[str] = []
    results = backfill(ir, backend, "2024-03-27", "2024-04-02", max_active=3,
                       progress=lambda when, r: seen.append(when))
    assert [r.state for r in results] == ["success"] * 7
    assert [r.output for r in results] == dates  # each run's up.current().logical_date
    assert sorted(seen) == sorted(dates)
    assert len({r.run_id for r in results}) == 7
    assert {r.backend for r in results} == {backend}


def test_a_backfill_across_the_fall_back_day_is_refused_before_anything_is_created(tmp_path):
    """Airflow's backfill fills the window from the DAG's timetable, which fires 2024-10-27
    02:30 at its second occurrence: the declared difference is refused up front (exit 2 in
    the CLI), not half-run."""
    from unipipe.backfill import BackfillError

    ir = load_ir(pa.nightly)
    with pytest.raises(BackfillError, match="second occurrence") as info:
        backfill(ir, "airflow", "2024-10-26", "2024-10-28")
    assert "2024-10-27T01:30:00+00:00" in str(info.value)
    assert "2024-10-27T00:30:00+00:00" in str(info.value)


# ---------------------------------------------------------------- assets under a scheduler


def _trigger(api, dag_id: str, conf: dict, deadline: float, alive) -> str:
    from unipipe_airflow.server import trigger_and_wait

    return trigger_and_wait(api, dag_id, conf, deadline, alive=alive)


def test_a_producer_run_starts_the_consumer_under_a_real_scheduler(tmp_path):
    """The producer's task updates the asset (outlets) and Airflow's scheduler itself starts
    the consumer (schedule=AssetAll(asset)); a failed producer run starts nothing; two
    successful producer runs in a row give two consumer runs here (the consumer is idle or
    running when the second event arrives: the event waits in the queue, one row per asset
    and consumer, and makes one more run). The consumer's task sees the run's run_after as its
    logical date (an asset-triggered run has none on Airflow 3). Updates while the consumer is
    paused collapse into its next run."""
    from unipipe_airflow import server
    from unipipe_airflow.chain import queued, settle
    from unipipe_airflow.engine import prepare
    from unipipe_airflow.results import build_result, read_records

    from unipipe.api import search_path
    from unipipe.compiler.backend import RunOptions
    from unipipe.compiler.driver import compile_ir

    producer, consumer = load_ir(pa.producer), load_ir(pa.consumer)
    home = prepare(producer, RunOptions(workdir=tmp_path, search_path=search_path(producer)))
    compile_ir(consumer, "airflow", home.dags, kubernetes=False)
    port = server.free_port()
    proc = server.start(home, port)
    api = server.Api(f"http://127.0.0.1:{port}/api/v2")
    deadline = time.monotonic() + 900
    alive = lambda: proc.poll() is None  # noqa: E731
    try:
        server.wait_ready(proc, api, deadline)
        server.wait_for_dag(api, "a14-producer", deadline, alive=alive)
        server.wait_for_dag(api, "a14-consumer", deadline, alive=alive)
        # a paused consumer is not queued for (assets/manager.py ~354): unpause it first
        api.call("PATCH", server.dag_path("a14-consumer"), {"is_paused": False})

        # a failed producer: no asset event, no consumer run
        failed = _trigger(api, "a14-producer", {"fail": True}, deadline, alive)
        assert api.call("GET", f"{server.dag_path('a14-producer')}/dagRuns/"
                        f"{urllib.request.quote(failed, safe='')}")["state"] == "failed"
        assert settle(api, "a14-consumer", deadline, alive, quiet=15) == []
        events = api.call("GET", "/assets/events?source_dag_id=a14-producer")
        assert events["total_entries"] == 0

        # two successful producer runs in a row
        first = _trigger(api, "a14-producer", {"fail": False}, deadline, alive)
        second = _trigger(api, "a14-producer", {"fail": False}, deadline, alive)
        runs = settle(api, "a14-consumer", deadline, alive, quiet=10)
        events = api.call("GET", "/assets/events?source_dag_id=a14-producer")
        assert events["total_entries"] == 2
        assert {e["source_run_id"] for e in events["asset_events"]} == {first, second}
        assert len(runs) == 2, runs
        assert all(r["run_type"] == "asset_triggered" for r in runs)
        assert all(r["state"] == "success" for r in runs)
        for run in runs:
            result = build_result(consumer, read_records(home.db, "a14-consumer", run["dag_run_id"]),
                                  home.trace_dir, {"pause": 8.0})
            assert result.ok
            seen = datetime.fromisoformat(result.output["logical_date"])
            assert run["logical_date"] is None
            assert seen == datetime.fromisoformat(run["run_after"].replace("Z", "+00:00"))

        # the documented collapse: Airflow queues no run for a paused consumer (only unpaused
        # DAGs get an AssetDagRunQueue row, assets/manager.py ~354), so three producer runs
        # while it is paused, then unpausing it, make no run; the next update makes ONE run that
        # consumes all four events since the previous asset-triggered run
        # (jobs/scheduler_job_runner.py ~2600-2640). The reference (unipipe.local.chain) has no
        # pause; the chain cases (comparisons/cases/asset_chain_*) cover the rest.
        api.call("PATCH", server.dag_path("a14-consumer"), {"is_paused": True})
        for _ in range(3):
            _trigger(api, "a14-producer", {"fail": False}, deadline, alive)
        assert queued(api, "a14-consumer") == 0
        api.call("PATCH", server.dag_path("a14-consumer"), {"is_paused": False})
        assert len(settle(api, "a14-consumer", deadline, alive, quiet=8)) == 2
        _trigger(api, "a14-producer", {"fail": False}, deadline, alive)
        runs = settle(api, "a14-consumer", deadline, alive)
        assert len(runs) == 3 and {r["state"] for r in runs} == {"success"}
        newest = max(runs, key=lambda r: r["run_after"])
        events = api.call("GET", f"{server.dag_path('a14-consumer')}/dagRuns/"
                          f"{urllib.request.quote(newest['dag_run_id'], safe='')}/upstreamAssetEvents")
        assert events["total_entries"] == 4
    finally:
        server.stop(proc)
    assert Path(home.db).exists()


def test_a_run_by_hand_after_the_window_stands_for_its_end(tmp_path):
    """Airflow runs no task whose logical date is after the DAG's end_date
    (ti_deps/deps/runnable_exec_date_dep.py ~47-60), so a run by hand of a pipeline whose
    window has ended gets the window's end as its logical date (declared), in `dags test` and
    in the batch (`DAG.test`)."""
    from unipipe_airflow.engine import Planned, run_batch

    one = up.run(pa.combined, backend="airflow")
    assert one.ok and one.output == 42
    (batch,) = run_batch([Planned(load_ir(pa.combined))], workdir=tmp_path,
                         search_path=[str(Path(pa.__file__).parent)])
    assert not isinstance(batch, Exception) and batch.ok and batch.output == 42
