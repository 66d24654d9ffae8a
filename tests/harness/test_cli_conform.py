"""`unipipe conform` end to end, as a user runs it: exit codes, summary, reports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from .conftest import CASES, ROOT


def _conform(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "unipipe.cli", "conform", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def _statuses(out):
    summary = json.loads((out / "summary.json").read_text())
    return {(cid, b): r["status"] for cid, c in summary["cases"].items()
            for b, r in c["results"].items()}


@pytest.mark.timeout(900)
def test_conform_on_the_reference_and_an_engine_passes(tmp_path):
    cases = [str(CASES / c) for c in ("retry_fail_twice", "bad_param_value", "alerts_retry_success")]
    proc = _conform(*cases, "--backends", "local,kubeflow", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(_statuses(tmp_path).values()) == {"pass"}
    assert len(_statuses(tmp_path)) == 6
    md = (tmp_path / "report.md").read_text()
    assert "| **retry_fail_twice** | ✅ pass | ✅ pass |" in md
    results = json.loads((tmp_path / "results.json").read_text())
    kfp = next(o for o in results["outcomes"]
               if o["case"] == "alerts_retry_success" and o["backend"] == "kubeflow")
    assert kfp["runs"][0]["alerts"] == [
        {"task": "sync", "event": "retry", "channel": "webhook"},
        {"task": "sync", "event": "success", "channel": "webhook"}]
    assert "conformance: 3 case(s)" in proc.stderr
    # every lane's wall time is recorded: a lane runs its cases one after another, so it takes
    # at least as long as its runs together
    lanes = results["lane_seconds"]
    assert {k.partition("-")[0] for k in lanes} == {"local", "kubeflow"}
    for backend in ("local", "kubeflow"):
        worker = sum(r.get("seconds") or 0 for o in results["outcomes"] if o["backend"] == backend
                     for r in o["runs"])
        wall = sum(v for k, v in lanes.items() if k.partition("-")[0] == backend)
        assert wall >= worker - 0.5 * len(lanes)
    assert "Lane wall times" in md


def _copy_case(tmp_path, name, edit):
    dst = tmp_path / "cases" / name
    shutil.copytree(CASES / name, dst)
    text = (dst / "case.yaml").read_text()
    (dst / "case.yaml").write_text(edit(text))
    return dst


def test_a_case_the_reference_contradicts_fails_the_run(tmp_path):
    case = _copy_case(tmp_path, "retry_fail_twice",
                      lambda t: t.replace("attempts: 3", "attempts: 2"))
    proc = _conform(str(case), "--backends", "local", "--out", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert _statuses(tmp_path / "out") == {("retry_fail_twice", "local"): "fail"}
    assert "task flaky.attempts is 3, expected 2" in proc.stderr


def test_a_declared_difference_that_passes_fails_the_run(tmp_path):
    case = _copy_case(tmp_path, "retry_jitter", lambda t: t + (
        "backends:\n  local: {status: notyet, reason: pretend the engine lacks jitter}\n"))
    proc = _conform(str(case), "--backends", "local", "--out", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert _statuses(tmp_path / "out") == {("retry_jitter", "local"): "xpass"}
    assert "remove the declaration" in proc.stderr


def test_a_bare_pipeline_is_compared_with_the_reference(tmp_path):
    proc = _conform("tests/pipelines/features.py:cached", "--backends", "local",
                    "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    (outcome,) = results["outcomes"]
    # cached pipelines get a second run: the hit is part of what is compared
    assert [r["tasks"]["expensive"]["cache_hit"] for r in outcome["runs"]] == [False, True]


def test_invalid_input_exits_2(tmp_path):
    assert _conform(str(CASES / "retry_jitter"), "--backends", "dagster",
                    "--out", str(tmp_path)).returncode == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "case.yaml").write_text("id: bad\ndoc: d\npipeline: x.py:p\nexpect: {}\n")
    proc = _conform(str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "expect.state is required" in proc.stderr


def test_a_lane_count_that_is_not_one_exits_2_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIPIPE_CONFORM_SHARDS", "2,airflow=zero")
    proc = _conform(str(CASES / "retry_jitter"), "--backends", "local", "--out", str(tmp_path))
    assert proc.returncode == 2
    said = " ".join(proc.stderr.split())
    assert "UNIPIPE_CONFORM_SHARDS (airflow=zero): 'zero' is not a lane count (a whole number" in said
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "work").exists()


@pytest.mark.airflow
def test_an_engine_version_the_backend_does_not_run_exits_2(tmp_path):
    pytest.importorskip("unipipe_airflow")
    proc = _conform(str(CASES / "retry_jitter"), "--backends", "airflow@2.9",
                    "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "cannot run version '2.9'" in proc.stdout + proc.stderr
    assert "3.3, 2.11" in proc.stdout + proc.stderr
    assert not (tmp_path / "summary.json").exists()
