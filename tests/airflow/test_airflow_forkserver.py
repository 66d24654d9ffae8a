"""The harness lane's prepared Airflow (:mod:`unipipe_airflow.forkserver`): each run is a
process of its own, forked from one that has imported Airflow and built its Execution API once,
with the run's own environment, home and DB; a run whose client goes away is killed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import unipipe as up

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lane(tmp_path_factory):
    """A lane service as the harness enters it for ``airflow`` (installed Airflow, dags test)."""
    from unipipe.compiler.backend import lane_service
    from unipipe.compiler.registry import get_backend

    folder = tmp_path_factory.mktemp("lane")
    with lane_service(get_backend("airflow"), folder, {}) as env:
        assert Path(env["UNIPIPE_AIRFLOW_FORKSERVER"]).is_socket()
        yield env
    assert not Path(env["UNIPIPE_AIRFLOW_FORKSERVER"]).exists()  # stopped with the lane


def test_a_suites_lanes_share_one_prepared_airflow(lane, tmp_path_factory):
    """A second lane of the suite (a sibling folder) gets the first lane's server instead of
    warming up its own; it leaving does not stop the server the first lane still uses."""
    from unipipe.compiler.backend import lane_service
    from unipipe.compiler.registry import get_backend

    sibling = tmp_path_factory.mktemp("lane")
    with lane_service(get_backend("airflow"), sibling, {}) as env:
        assert env["UNIPIPE_AIRFLOW_FORKSERVER"] == lane["UNIPIPE_AIRFLOW_FORKSERVER"]
    assert Path(lane["UNIPIPE_AIRFLOW_FORKSERVER"]).is_socket()


def _descendants(pid: int) -> list[int]:
    from unipipe_airflow.server import group_members

    return group_members(pid)


def test_runs_through_the_fork_server_get_their_own_environment_and_state(lane, monkeypatch,
                                                                          tmp_path):
    import pipelines_airflow as p

    monkeypatch.setenv("UNIPIPE_AIRFLOW_FORKSERVER", lane["UNIPIPE_AIRFLOW_FORKSERVER"])
    monkeypatch.setenv("UNIPIPE_AIRFLOW_CACHE", lane["UNIPIPE_AIRFLOW_CACHE"])
    short = up.run(p.naps, backend="airflow", params={"seconds": 0.1}, workdir=tmp_path / "nap")
    assert short.state == "success" and short.output == 0.1
    outputs = []
    for label in ("first", "second"):
        monkeypatch.setenv("UNIPIPE_TEST_MARK", f"mark-{label}")
        result = up.run(p.who_runs, backend="airflow", params={"label": label},
                        workdir=tmp_path / label)
        assert result.state == "success", result.tasks
        outputs.append(result.output)
        # the run went through the server: its log is the forked child's, not a subprocess's
        assert (tmp_path / label / "airflow" / "dags_test.log").read_text().count(
            "DagRun Finished") == 1
    assert outputs == [
        {"label": "first", "mark": "mark-first", "home": str(tmp_path / "first" / "airflow"),
         "imported_before": False},
        {"label": "second", "mark": "mark-second", "home": str(tmp_path / "second" / "airflow"),
         "imported_before": False}]


def test_a_run_whose_client_gives_up_is_killed_with_its_processes(lane, monkeypatch, tmp_path):
    import pipelines_airflow as p
    from unipipe_airflow import engine

    from unipipe import forkserver
    from unipipe.api import search_path
    from unipipe.compiler.backend import RunOptions

    monkeypatch.setenv("UNIPIPE_AIRFLOW_CACHE", lane["UNIPIPE_AIRFLOW_CACHE"])
    ir = up.load(p.naps)
    home = engine.prepare(ir, RunOptions(workdir=tmp_path, search_path=search_path(ir)))
    pids: list[int] = []
    with pytest.raises(subprocess.TimeoutExpired):
        forkserver.run(lane["UNIPIPE_AIRFLOW_FORKSERVER"], ["dags", "test", home.dag_id],
                       home.env, home.root, home.root / "dags_test.log", timeout=25,
                       on_start=pids.append)
    assert len(pids) == 1
    deadline = time.monotonic() + 10
    while _descendants(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _descendants(pids[0]) == []  # the run, its task and the shim's child: all gone
    log = (home.root / "dags_test.log").read_text()
    assert "nap" in log and "DagRun Finished" not in log  # it had started, it did not finish


def test_a_lane_migrates_its_template_db_in_the_fork_server(lane, monkeypatch, tmp_path):
    """The lane's first run makes the migrated DB every run copies: ``airflow db migrate`` in a
    child of the server (no Airflow start-up of its own), its write-ahead log folded into the
    one file that is kept."""
    import sqlite3

    from unipipe_airflow import engine

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"the migration started a process of its own: {args}")

    monkeypatch.setenv("UNIPIPE_AIRFLOW_FORKSERVER", lane["UNIPIPE_AIRFLOW_FORKSERVER"])
    monkeypatch.setenv("UNIPIPE_AIRFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(engine.subprocess, "run", no_subprocess)
    db = engine.template_db()
    assert db == tmp_path / "cache" / engine.airflow_version() / "airflow.db"
    assert sorted(p.name for p in db.parent.iterdir()) == [".lock", "airflow.db"]
    con = sqlite3.connect(db)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        heads = [r[0] for r in con.execute("SELECT version_num FROM alembic_version")]
    finally:
        con.close()
    assert {"dag", "dag_run", "task_instance", "xcom", "dag_bundle"} <= tables
    assert len(heads) == 1 and heads[0]


def test_the_fork_server_is_only_for_lanes_of_the_installed_airflow_in_dags_test_mode(
        tmp_path, monkeypatch):
    from unipipe_airflow.isolated import LANE_ENV

    from unipipe.compiler.backend import lane_service
    from unipipe.compiler.registry import get_backend

    # an isolated lane's own service (a long-lived control plane) is tested in
    # tests/airflow/test_airflow_isolated.py; turned off here, it must not fall back to a fork
    # server either
    monkeypatch.setenv(LANE_ENV, "0")
    airflow = get_backend("airflow")
    for extra in ({"version": "2.11"}, {"mode": "scheduler"}, {"isolated": True}):
        with lane_service(airflow, tmp_path / "lane", extra) as env:
            # the suite's lanes (the lane folder's siblings) share the template DB
            assert env == {"UNIPIPE_AIRFLOW_CACHE": str(tmp_path / "airflow-cache")}


def test_a_chain_in_a_lane_runs_its_components_forked_and_stops_them(lane, monkeypatch,
                                                                     tmp_path):
    """The event chain's scheduler, dag-processor and API server are children of the lane's
    fork server (no ``airflow standalone``): Airflow still starts the consumer once per
    successful producer run, and nothing of the chain runs after it returned."""
    import os

    from unipipe.authoring.loader import load_ir
    from unipipe.compiler.backend import RunOptions
    from unipipe.compiler.registry import get_backend

    case = Path(__file__).resolve().parents[2] / "comparisons" / "cases" / "asset_chain_any"
    monkeypatch.syspath_prepend(str(case))
    monkeypatch.setenv("UNIPIPE_AIRFLOW_FORKSERVER", lane["UNIPIPE_AIRFLOW_FORKSERVER"])
    monkeypatch.setenv("UNIPIPE_AIRFLOW_CACHE", lane["UNIPIPE_AIRFLOW_CACHE"])
    monkeypatch.setenv("UNIPIPE_TRACE_DIR", str(tmp_path / "trace"))
    producer = load_ir(f"{case / 'case_asset_chain_any.py'}:producer")
    consumer = load_ir(f"{case / 'case_asset_chain_any.py'}:consumer")
    produced, started = get_backend("airflow").run_chain(
        producer, consumer, [{"fail": True}, {"fail": False}],
        RunOptions(workdir=tmp_path / "work", search_path=[str(case)],
                   extra={"timeout": 300}))
    assert [r.state for r in produced] == ["failed", "success"]
    assert [[(r.state, r.output) for r in rs] for rs in started] == [
        [], [("success", {"logical_date_present": True})]]
    [home] = [p / "airflow" for p in (tmp_path / "work").glob("chain-*")]
    assert sorted(p.name for p in home.glob("*.log")) == [
        "api-server.log", "dag-processor.log", "scheduler.log"]  # forked, not standalone
    # every component stopped: no process works in the chain's home any more
    left = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and os.readlink(f"/proc/{entry.name}/cwd") == str(home):
                left.append(entry.name)
        except OSError:
            pass
    assert left == []
