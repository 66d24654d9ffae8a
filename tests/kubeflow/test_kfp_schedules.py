"""Issue 14 on KFP: the run's logical date in every task of a scheduled pipeline, the recurring
run's window and catchup at deploy, ``unipipe backfill --backend kubeflow``, and assets and
triggers refused with what was looked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kfp_schedules as S
import pytest
from test_compile import all_tasks, compile_

import unipipe as up
from unipipe.compiler.diagnostics import Status, UnsupportedFeature
from unipipe.ir.features import Feature

pytestmark = pytest.mark.kubeflow
HERE = Path(__file__).resolve().parent
PLACEHOLDER = "{{$.pipeline_job_schedule_time_utc}}"


def _ir(pipeline):
    return up.load(pipeline) if isinstance(pipeline, str) else pipeline.ir


def test_support_declares_schedules_native_and_assets_refused_with_what_was_looked_for():
    from unipipe.compiler.registry import get_backend

    table = get_backend("kubeflow").support()
    for f in (Feature.SCHEDULE_CRON, Feature.SCHEDULE_WINDOW, Feature.SCHEDULE_CATCHUP):
        assert table[f].status is Status.NATIVE
    assert "no_catchup" in table[Feature.SCHEDULE_CATCHUP].note
    assert "one UTC recurring run per daylight-saving stretch" in table[Feature.SCHEDULE_CRON].note
    for f in (Feature.ASSET_PRODUCES, Feature.TRIGGER_ASSET, Feature.TRIGGER_ANY):
        assert table[f].status is Status.UNSUPPORTED
        assert "v2beta1_trigger.py" in table[f].note and "issue 14" not in table[f].note


def test_a_scheduled_pipelines_components_take_the_logical_date(tmp_path):
    module, spec, _ = compile_(S.daily, tmp_path)
    root = spec["root"]["inputDefinitions"]["parameters"]
    assert root["unipipe_logical_date"] == {"defaultValue": "", "isOptional": True,
                                            "parameterType": "STRING"}
    for name in ("stamp", "cached_stamp"):
        inputs = all_tasks(spec)[name]["inputs"]["parameters"]
        assert inputs["unipipe_logical_date"] == {"componentInputParameter": "unipipe_logical_date"}
        assert inputs["unipipe_schedule_time"] == {"runtimeValue": {"constant": PLACEHOLDER}}
    assert "logical_date=unipipe_logical_date or unipipe_schedule_time" in module
    # the date is a per-run input, so KFP's key would never hit: the shim caches
    cached = all_tasks(spec)["cached_stamp"]
    assert not cached.get("cachingOptions", {}).get("enableCache")
    assert 'emulate=["cache"]' in module


def test_a_sub_pipeline_passes_the_logical_date_on(tmp_path):
    _, spec, _ = compile_(S.hourly_groups, tmp_path)
    group = all_tasks(spec)["inner"]
    assert group["inputs"]["parameters"]["unipipe_logical_date"] == {
        "componentInputParameter": "unipipe_logical_date"}
    inner = all_tasks(spec)["inner__stamp"]["inputs"]["parameters"]
    assert inner["unipipe_logical_date"] == {"componentInputParameter": "unipipe_logical_date"}
    assert inner["unipipe_schedule_time"] == {"runtimeValue": {"constant": PLACEHOLDER}}


def test_a_pipeline_without_a_schedule_compiles_as_before(tmp_path):
    module, spec, _ = compile_(S.unscheduled, tmp_path)
    assert "unipipe_logical_date" not in module and PLACEHOLDER not in json.dumps(spec)


def test_the_hidden_parameter_name_is_refused_before_writing(tmp_path):
    with pytest.raises(UnsupportedFeature, match=r"kfp_schedules.py:\d+: \[params.unipipe_logical_date\]"):
        up.compile(S.reserved, target="kubeflow", out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------ the executor fills the placeholder


def test_pipeline_job_times_are_rfc3339_utc_whole_seconds():
    from unipipe_kubeflow.executor import pipeline_job_times

    now = datetime(2026, 1, 9, 13, 0, 0, 420000, tzinfo=UTC).timestamp()
    assert pipeline_job_times(None, now) == ("2026-01-09T13:00:00Z", "2026-01-09T13:00:00Z")
    assert pipeline_job_times("2024-03-31T03:30:00+02:00", now) == (
        "2026-01-09T13:00:00Z", "2024-03-31T01:30:00Z")


def _date(result, task="stamp"):
    return datetime.fromisoformat(result.tasks[task].output["logical_date"])


def test_a_run_by_hand_sees_its_creation_time():
    before = datetime.now(UTC).replace(microsecond=0)
    result = up.run(S.daily, backend="kubeflow")
    assert result.state == "success", result
    seen = _date(result)
    assert seen.tzinfo is not None and before <= seen <= datetime.now(UTC) + timedelta(seconds=1)


def test_a_recurring_run_sees_its_fire_time_and_a_backfilled_run_its_parameter():
    result = up.run(S.daily, backend="kubeflow", schedule_time="2024-05-01T06:00:00Z")
    assert _date(result) == datetime(2024, 5, 1, 6, tzinfo=UTC)
    result = up.run(S.berlin, backend="kubeflow", logical_date="2024-03-31T03:30:00+02:00")
    assert result.tasks["stamp"].output["logical_date"] == "2024-03-31T03:30:00+02:00"


def test_a_pipeline_without_a_schedule_sees_the_date_locally():
    result = up.run(S.unscheduled, backend="kubeflow", logical_date="2024-01-02T00:00:00+00:00")
    assert result.tasks["stamp"].output["logical_date"] == "2024-01-02T00:00:00+00:00"


# ------------------------------------------------------------ backfill


def test_backfill_of_a_7_day_window_creates_7_runs_with_their_dates():
    from unipipe.backfill import backfill, plan

    ir = _ir(S.daily)
    seen = []
    results = backfill(ir, "kubeflow", "2024-02-01", "2024-02-07", max_active=2,
                       progress=lambda when, r: seen.append(when))
    want = [datetime(2024, 2, d, 6, tzinfo=UTC) for d in range(1, 8)]
    assert plan(ir, "2024-02-01", "2024-02-07") == want
    assert len(results) == 7 and sorted(seen) == [w.isoformat() for w in want]
    assert all(r.backend == "kubeflow" and r.state == "success" for r in results)
    assert [_date(r) for r in results] == want
    assert len({r.run_id for r in results}) == 7


def test_backfill_follows_the_schedules_timezone_across_dst():
    from unipipe.backfill import backfill

    results = backfill(_ir(S.berlin), "kubeflow", "2024-03-30", "2024-04-01")
    assert [r.tasks["stamp"].output["logical_date"] for r in results] == [
        "2024-03-30T02:30:00+01:00", "2024-03-31T03:30:00+02:00", "2024-04-01T02:30:00+02:00"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "unipipe.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--start", "2024-01-07", "--end", "2024-01-01"], "is after --end"),
    (["--start", "yesterday", "--end", "2024-01-01"], "not an ISO date"),
    (["--start", "2024-01-01", "--end", "2024-01-02", "--max-active", "0"], "--max-active"),
])
def test_backfill_cli_bad_input_exits_2_before_creating_runs(args, message, kfp_pipeline_root):
    proc = _cli("backfill", f"{HERE / 'kfp_schedules.py'}:daily", "--backend", "kubeflow", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not kfp_pipeline_root.exists() or not any(kfp_pipeline_root.iterdir())


def test_backfill_cli_reports_progress():
    proc = _cli("backfill", f"{HERE / 'kfp_schedules.py'}:daily", "--backend", "kubeflow",
                "--start", "2024-02-01", "--end", "2024-02-02", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "[2/2]" in proc.stderr and "2 of 2 run(s) succeeded" in proc.stderr
    runs = json.loads(proc.stdout)
    assert [r["tasks"]["stamp"]["output"]["logical_date"] for r in runs] == [
        "2024-02-01T06:00:00+00:00", "2024-02-02T06:00:00+00:00"]


# ------------------------------------------------------------ deploy


def test_deploy_trigger_has_the_window_and_catchup():
    from unipipe.deploy.to_kfp import _kfp_triggers

    # KFP fires strictly after start_time (a cron) or first at start_time + interval: the
    # reference fires at start itself
    assert _kfp_triggers(_ir(S.daily), _opts()) == [{
        "cron_expression": "0 0 6 * * *", "start_time": "2023-12-31T23:59:59Z",
        "end_time": "2024-12-31T00:00:00Z", "no_catchup": False}]
    assert _kfp_triggers(_ir(S.hourly_groups), _opts()) == [{
        "interval_second": 3600, "start_time": "2023-12-31T23:00:00Z", "no_catchup": True}]


def _opts(*pairs: str):
    from unipipe.deploy.options import Options
    from unipipe.deploy.to_kfp import KFP_OPTIONS

    return Options.parse(pairs, target="kubeflow", known=KFP_OPTIONS)


def _controller_fires(trigger: dict) -> list[datetime]:
    """What KFP's scheduled-workflow controller fires for a cron trigger: robfig cron times
    strictly after start_time, up to end_time inclusive, in UTC (the controller's zone)."""
    from croniter import croniter

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    seconds, *fields = trigger["cron_expression"].split()
    assert seconds == "0"
    it, end, out = croniter(" ".join(fields), at(trigger["start_time"])), at(trigger["end_time"]), []
    while (t := it.get_next(datetime)) <= end:
        out.append(t)
    return out


def test_a_berlin_cron_is_one_utc_recurring_run_per_daylight_saving_stretch():
    from unipipe.deploy.to_kfp import _kfp_triggers
    from unipipe.schedules import fire_times

    ir = _ir(S.berlin_2024)
    triggers = _kfp_triggers(ir, _opts())
    assert triggers == [
        {"cron_expression": "0 30 1 * * *", "start_time": "2024-01-01T01:29:59Z",
         "end_time": "2024-03-31T01:30:00Z", "no_catchup": True},   # CET, and the spring gap's 03:30 CEST
        {"cron_expression": "0 30 0 * * *", "start_time": "2024-04-01T00:29:59Z",
         "end_time": "2024-10-27T00:30:00Z", "no_catchup": True},   # CEST, and the first 02:30 of fall-back
        {"cron_expression": "0 30 1 * * *", "start_time": "2024-10-28T01:29:59Z",
         "end_time": "2024-12-30T01:30:00Z", "no_catchup": True}]  # end: 2024-12-31 00:00 CET
    fired = [t for trigger in triggers for t in _controller_fires(trigger)]
    window = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    assert fired == [t.astimezone(UTC) for t in fire_times(ir.schedule, *window)]
    assert len(fired) == 365


def test_without_an_end_the_stretches_reach_schedule_days():
    from unipipe.deploy.to_kfp import _kfp_triggers

    ir = _ir(S.berlin_2024)
    ir = ir.model_copy(update={"schedule": ir.schedule.model_copy(update={"end": None})})
    triggers = _kfp_triggers(ir, _opts("schedule_days=800"))
    assert len(triggers) == 5 and triggers[-1]["end_time"] == "2026-03-10T01:30:00Z"


def test_deploy_refuses_a_cron_no_utc_cron_can_give():
    from unipipe.deploy.options import InvalidDeploy
    from unipipe.deploy.to_kfp import _kfp_triggers

    # 00:00 on the 1st in Berlin is 23:00 UTC on the last day of the month before
    with pytest.raises(InvalidDeploy, match=r"kfp_schedules.py:\d+: schedule.timezone: .*"
                                            r"'0 0 1 \* \*' in Europe/Berlin fires at 2024-01-01"):
        _kfp_triggers(_ir(S.berlin_monthly), _opts())
    with pytest.raises(InvalidDeploy, match="schedule_days"):
        _kfp_triggers(_ir(S.berlin_2024), _opts("schedule_days=0"))


class _FakeClient:
    """kfp.Client as plan_kfp uses it, recording the recurring run it is asked for."""

    made: list[dict] = []

    def __init__(self, **kw):
        from types import SimpleNamespace as NS

        self._pipelines_api = NS(pipeline_service_create_pipeline=lambda pipeline: NS(pipeline_id="p-1"))
        self.NS = NS

    def upload_pipeline_version(self, path, **kw):
        return self.NS(pipeline_version_id="v-1")

    def create_experiment(self, name):
        return self.NS(experiment_id="e-1")

    def create_recurring_run(self, **kw):
        _FakeClient.made.append(kw)
        return self.NS(recurring_run_id="r-1")


def test_deploy_creates_the_recurring_run_with_window_and_catchup(monkeypatch):
    import kfp

    from unipipe.deploy import plan

    monkeypatch.setattr(kfp, "Client", _FakeClient)
    _FakeClient.made.clear()
    p = plan(_ir(S.daily), "kubeflow", {"host": "http://127.0.0.1:9"}, inspect=False,
             store_local=True)
    p.apply()
    (made,) = _FakeClient.made
    assert {k: made[k] for k in ("cron_expression", "start_time", "end_time", "no_catchup",
                                 "max_concurrency", "version_id")} == {
        "cron_expression": "0 0 6 * * *", "start_time": "2023-12-31T23:59:59Z",
        "end_time": "2024-12-31T00:00:00Z", "no_catchup": False, "max_concurrency": 1,
        "version_id": "v-1"}


def test_deploy_cli_refuses_a_berlin_monthly_schedule_with_exit_2(kfp_pipeline_root):
    proc = _cli("deploy", f"{HERE / 'kfp_schedules.py'}:berlin_monthly", "--to", "kubeflow",
                "--set", "host=http://127.0.0.1:9", "--store", "local")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "kfp_schedules.py:" in out and "schedule.timezone:" in out
