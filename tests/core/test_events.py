"""Time- and event-driven runs in the IR and on the reference runner: up.Schedule (timezone,
window, catchup), up.Asset, produces=, trigger=up.On, up.current().logical_date and
``unipipe backfill`` (the engines' forms are issue 14's next part)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

# the helpers every validation test uses: a module written to tmp_path, its problems, a line
from test_validation import line_of, problems_of, write_module

import unipipe as up
from unipipe.authoring.loader import load_ir
from unipipe.backfill import BackfillError, backfill, plan
from unipipe.ir import PipelineError, load_ir_data
from unipipe.ir import models as m
from unipipe.ir.features import Feature
from unipipe.schedules import fire_times, parse_when


def _problem(tmp_path: Path, body: str, attr: str = "p"):
    path, (prob,) = problems_of(tmp_path, body, attr)
    return path, prob


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unipipe.cli", *args], capture_output=True,
                          text=True, timeout=300)


# ---------------------------------------------------------------- schedules


def _utc(schedule: m.Schedule, start: str, end: str) -> list[str]:
    tz = schedule.timezone
    return [d.astimezone(UTC).strftime("%m-%d %H:%M") for d in
            fire_times(schedule, parse_when(start, tz), parse_when(end, tz))]


def test_a_daily_cron_across_both_dst_changes_fires_once_a_day():
    berlin = m.Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    # spring: 02:30 does not exist on 03-31; it fires at 03:30 CEST (01:30Z), as Airflow does
    assert _utc(berlin, "2024-03-30", "2024-04-01T03:00") == [
        "03-30 01:30", "03-31 01:30", "04-01 00:30"]
    # fall: 02:30 happens twice on 10-27; it fires once, at the first (CEST, 00:30Z), as
    # Prefect does (Airflow fires the second: a declared difference)
    assert _utc(berlin, "2024-10-26", "2024-10-28T03:00") == [
        "10-26 00:30", "10-27 00:30", "10-28 01:30"]


def test_the_schedule_window_clips_and_intervals_count_from_start():
    s = m.Schedule(cron="0 6 * * *", start="2024-01-03", end="2024-01-05T06:00")
    assert _utc(s, "2024-01-01", "2024-01-31") == ["01-03 06:00", "01-04 06:00", "01-05 06:00"]
    every6h = m.Schedule(interval=6 * 3600, start="2024-01-01T01:00")
    assert _utc(every6h, "2024-01-01T05:00", "2024-01-02T00:00") == [
        "01-01 07:00", "01-01 13:00", "01-01 19:00"]


@pytest.mark.parametrize("schedule, field, text", [
    ('up.Schedule(cron="0 6 * * *", timezone="Mars/Olympus")', "schedule.timezone",
     "unknown timezone 'Mars/Olympus'"),
    ('up.Schedule(cron="0 6 * * *", start="2024-02-01", end="2024-01-01")', "schedule.end",
     "ends (2024-01-01) before it starts (2024-02-01)"),
    ('up.Schedule(cron="0 6 * * *", start="next tuesday")', "schedule.start",
     "takes an ISO date"),
    ('up.Schedule(cron="0 6 * * *", catchup=True)', "schedule.catchup", "give the schedule a start"),
    ('up.Schedule(cron="0 6 * *")', "schedule.cron", "must have 5 fields"),
    ('up.Schedule(cron="0 6 * * *", interval="1h")', "schedule", "exactly one"),
])
def test_bad_schedules_name_the_line_and_field(tmp_path, schedule, field, text):
    path, prob = _problem(tmp_path, f"""
        @up.task
        def t() -> int:
            return 1

        @up.pipeline(name="sch", schedule={schedule})
        def p():
            return t()
        """)
    assert (prob.field, prob.file, prob.line) == (field, str(path), line_of(path, "up.Schedule("))
    assert text in prob.message


def test_an_ir_document_with_a_bad_timezone_is_refused_by_validation():
    ir = up.load(m.Pipeline(name="x", schedule=m.Schedule(cron="0 6 * * *")))
    data = json.loads(ir.to_json())
    data["schedule"]["timezone"] = "Europe/Nowhere"
    from unipipe.ir.validate import validate

    with pytest.raises(PipelineError, match="unknown timezone 'Europe/Nowhere'"):
        validate(load_ir_data(data))


# ---------------------------------------------------------------- assets and triggers


def test_assets_are_normalised_and_reach_the_ir(tmp_path):
    path = write_module(tmp_path, """
        features = up.Asset("S3://lake/Features/?b=2&a=1#frag")

        @up.task(produces=[features, "gs://other/table/"])
        def build() -> int:
            return 1

        @up.pipeline(name="producer")
        def producer():
            return build()

        @up.task
        def retrain() -> str:
            return "ok"

        @up.pipeline(name="consumer", trigger=up.On(features, up.Asset("gs://other/table"),
                                                    mode="any"))
        def consumer():
            return retrain()
        """)
    prod, cons = load_ir(f"{path}:producer"), load_ir(f"{path}:consumer")
    assert prod.task("build").produces == ("s3://lake/Features?a=1&b=2", "gs://other/table")
    assert cons.trigger == m.Trigger(assets=("s3://lake/Features?a=1&b=2", "gs://other/table"),
                                     mode="any")
    assert set(up.features_used(cons)) >= {Feature.TRIGGER_ASSET, Feature.TRIGGER_ANY}
    assert Feature.ASSET_PRODUCES in up.features_used(prod)
    # every producer is in the module: no warning
    proc = _cli("validate", f"{path}:consumer")
    assert proc.returncode == 0 and "warning" not in proc.stderr


@pytest.mark.parametrize("uri, text", [
    ("features/daily", "has no scheme"),
    ("airflow://x/y", "reserved by Airflow"),
    ("s3://user:secret@bucket/x", "holds credentials"),
    ("s3://bücket/x", "must be ASCII"),
    ("s3:///no-bucket", "names no bucket"),
    ("", "is named by a URI"),
])
def test_an_unusable_asset_uri_names_the_line(tmp_path, uri, text):
    path, prob = _problem(tmp_path, f"""
        bad = up.Asset({uri!r})

        @up.pipeline(name="a")
        def p():
            return None
        """)
    assert (prob.field, prob.line) == ("asset", line_of(path, "up.Asset("))
    assert text in prob.message


def test_trigger_errors(tmp_path):
    path, prob = _problem(tmp_path, """
        @up.task
        def t() -> int:
            return 1

        @up.pipeline(name="a", trigger=up.On(up.Asset("s3://b/x"), mode="some"))
        def p():
            return t()
        """)
    assert (prob.field, prob.line) == ("trigger.mode", line_of(path, "trigger=up.On("))
    path, prob = _problem(tmp_path, """
        loop = up.Asset("s3://b/loop")

        @up.task(produces=[loop])
        def t() -> int:
            return 1

        @up.pipeline(name="self-trigger", trigger=up.On(loop))
        def p():
            return t()
        """)
    assert prob.field == "tasks.t.produces" and "each run would start the next" in prob.message


def test_a_trigger_no_pipeline_produces_is_a_warning_with_file_and_line(tmp_path):
    path = write_module(tmp_path, """
        @up.task
        def t() -> int:
            return 1

        @up.pipeline(name="waits", trigger=up.On(up.Asset("s3://elsewhere/x")))
        def p():
            return t()
        """)
    proc = _cli("validate", f"{path}:p")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stderr.split())
    assert f"warning: {path}:{line_of(path, '@up.pipeline(')}: trigger: no pipeline" in text
    assert "'s3://elsewhere/x'" in text


def test_an_engine_without_assets_refuses_them_at_compile(tmp_path):
    """KFP has no event trigger (backends/kubeflow says where it looked): refused, not dropped."""
    path = write_module(tmp_path, """
        @up.task(produces=[up.Asset("s3://b/x")])
        def t() -> int:
            return 1

        @up.pipeline(name="prod")
        def p():
            return t()
        """)
    out = tmp_path / "out-kubeflow"
    proc = _cli("compile", f"{path}:p", "--target", "kubeflow", "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "asset.produces" in proc.stderr and not out.exists()


# ---------------------------------------------------------------- logical date and backfill


NIGHTLY = """
    @up.task
    def stamp(label: str) -> str:
        return f"{label} {up.current().logical_date.isoformat()}"

    @up.pipeline(name="nightly", schedule=up.Schedule(cron="30 2 * * *",
                 timezone="Europe/Berlin", start="2024-01-01"))
    def p(label: str = "run"):
        return stamp(label)
    """


def test_a_manual_run_has_its_start_as_logical_date(tmp_path):
    ir = load_ir(f"{write_module(tmp_path, NIGHTLY)}:p")
    before = datetime.now(UTC)
    result = up.run(ir)
    when = datetime.fromisoformat(result.output.split(" ", 1)[1])
    assert before <= when <= datetime.now(UTC)
    fixed = up.run(ir, logical_date="2024-03-31T01:30:00+00:00")
    assert fixed.output == "run 2024-03-31T01:30:00+00:00"


def test_a_seven_day_backfill_creates_seven_runs_with_their_dates(tmp_path):
    ir = load_ir(f"{write_module(tmp_path, NIGHTLY)}:p")
    assert [d.isoformat() for d in plan(ir, "2024-03-28", "2024-04-03")] == [
        "2024-03-28T02:30:00+01:00", "2024-03-29T02:30:00+01:00", "2024-03-30T02:30:00+01:00",
        "2024-03-31T03:30:00+02:00", "2024-04-01T02:30:00+02:00", "2024-04-02T02:30:00+02:00",
        "2024-04-03T02:30:00+02:00"]
    seen: list[str] = []
    results = backfill(ir, "local", "2024-03-28", "2024-04-03", max_active=2,
                       progress=lambda when, r: seen.append(when))
    assert [r.output for r in results] == [f"run {d.isoformat()}" for d in
                                           plan(ir, "2024-03-28", "2024-04-03")]
    assert all(r.ok for r in results) and sorted(seen) == sorted(
        d.isoformat() for d in plan(ir, "2024-03-28", "2024-04-03"))
    assert len({r.run_id for r in results}) == 7


def test_backfill_refusals(tmp_path):
    ir = load_ir(f"{write_module(tmp_path, NIGHTLY)}:p")
    with pytest.raises(BackfillError, match="is after --end"):
        plan(ir, "2024-04-03", "2024-03-28")
    with pytest.raises(BackfillError, match="not built yet"):  # a backend with no backfill
        backfill(ir, "dagster", "2024-03-28", "2024-04-03")
    unscheduled = m.Pipeline(name="no-schedule")
    with pytest.raises(BackfillError, match="has no schedule"):
        plan(unscheduled, "2024-01-01", "2024-01-02")
    path = write_module(tmp_path, NIGHTLY)
    proc = _cli("backfill", f"{path}:p", "--start", "2024-03-28", "--end", "yesterday")
    assert proc.returncode == 2 and "is not an ISO date" in proc.stderr
    proc = _cli("backfill", f"{path}:p", "--start", "2024-03-30", "--end", "2024-04-01",
                "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["output"] for r in json.loads(proc.stdout)] == [
        "run 2024-03-30T02:30:00+01:00", "run 2024-03-31T03:30:00+02:00",
        "run 2024-04-01T02:30:00+02:00"]
    assert "[3/3]" in proc.stderr


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Australia/Sydney",
                                "Asia/Kolkata", "Australia/Lord_Howe"])
@pytest.mark.parametrize("cron", ["30 2 * * *", "0 * * * *", "0 1 * * *", "*/20 6-8 * * *",
                                  "15 9 * * 1-5"])
def test_utc_segments_fire_exactly_the_reference_times_or_refuse(tz, cron):
    """Each UTC cron, fired strictly after its first time minus a second up to its last time,
    gives the reference's fire times from March to November 2024 (both daylight-saving
    changes of each hemisphere) in the zone, in order and nothing else; where
    no UTC cron can (an hour that moves to another day with day fields set, or minutes that
    move into different hours), a ScheduleError names the fire time."""
    from croniter import croniter

    from unipipe.ir.models import Schedule
    from unipipe.schedules import ScheduleError, fire_times, utc_segments

    sched = Schedule(cron=cron, timezone=tz)
    window = (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 11, 30, tzinfo=UTC))
    reference = [t.astimezone(UTC) for t in fire_times(sched, *window)]
    try:
        segments = utc_segments(sched, *window)
    except ScheduleError as exc:
        assert (tz, cron) in {("Australia/Sydney", "15 9 * * 1-5"),
                              ("Asia/Kolkata", "*/20 6-8 * * *"),
                              ("Australia/Lord_Howe", "15 9 * * 1-5"),
                              ("Australia/Lord_Howe", "*/20 6-8 * * *")}, exc
        assert f"{cron!r} in {tz} fires at 2024-0" in str(exc)
        return
    fired = []
    for seg in segments:
        it = croniter(seg.cron, seg.first - timedelta(seconds=1))
        while (t := it.get_next(datetime)) <= seg.last:
            fired.append(t)
    assert fired == reference
    assert len(segments) == (1 if tz == "Asia/Kolkata" else 2 if cron == "0 * * * *"
                             and tz != "Australia/Lord_Howe" else 3)
