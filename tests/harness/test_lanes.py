"""How the harness gives cases to lanes: a backend's lanes take them from one queue, longest
expected wait first, each lane the next case when it is free; for the reference runner as for
the engines."""

from __future__ import annotations

import json

import pytest

from unipipe.harness.cases import case_ir, load_case
from unipipe.harness.execute import expected_seconds, run_suite

from .conftest import CASES


def _expected(name: str) -> float:
    case = load_case(CASES / name)
    return expected_seconds(case, case_ir(case))


def test_expected_seconds_counts_the_waits_a_case_declares():
    # a 30 s run timeout the run waits out
    assert _expected("pipeline_timeout_fails") == 30.0
    # a 5 s task timeout hit by each of its 2 tries, plus its first retry delay
    hang = _expected("timeout_hang")
    assert hang > 5.0
    assert _expected("data_flow_fanout") == 0.0  # nothing to wait for
    assert _expected("pipeline_timeout_fails") > hang > _expected("retry_fail_twice")


def test_the_reference_lanes_share_the_cases_longest_first(tmp_path):
    names = ["pipeline_timeout_fails", "data_flow_fanout", "retry_fail_twice", "params_override"]
    cases = [load_case(CASES / n) for n in names]
    suite = run_suite(cases, [], tmp_path, jobs=2, shards=2)
    assert suite.ok, [(o.case, o.reason) for o in suite.failures()]
    assert set(suite.lane_seconds) == {"local-1", "local-2"}
    lane_of = {}
    for name in names:  # the lane a run's worker belonged to: its working folder's lane home
        job = json.loads((tmp_path / "runs" / name / "local" / "run-1.job.json").read_text())
        lane_of[name] = job["workdir"].split("/")[-2]
    # the 30 s case went first and has a lane of its own; the other lane took the three short
    # ones one after another while it ran
    long_lane = lane_of.pop("pipeline_timeout_fails")
    assert set(lane_of.values()) == {"local-1", "local-2"} - {long_lane}


def test_a_lane_started_after_its_backends_queue_ran_dry_starts_nothing(tmp_path):
    """One lane at a time (``jobs=1``) for two lanes: the first takes every case; the second,
    started after it, finds none and starts no services (no lane time, no home)."""
    names = ["data_flow_fanout", "params_override", "map_literal"]
    cases = [load_case(CASES / n) for n in names]
    suite = run_suite(cases, [], tmp_path, jobs=1, shards=2)
    assert suite.ok, [(o.case, o.reason) for o in suite.failures()]
    assert set(suite.lane_seconds) == {"local-1"}
    for name in names:
        job = json.loads((tmp_path / "runs" / name / "local" / "run-1.job.json").read_text())
        assert job["workdir"].split("/")[-2] == "local-1"
    assert not (tmp_path / "homes" / "local-2").exists()


def test_the_default_lanes_give_airflow_four_except_in_an_isolated_suite(monkeypatch):
    from unipipe.harness.cli import (
        DEFAULT_JOBS,
        DEFAULT_SHARDS,
        ISOLATED_JOBS,
        JOBS_ENV,
        SHARDS_ENV,
        lane_settings,
    )

    monkeypatch.delenv(JOBS_ENV, raising=False)
    monkeypatch.delenv(SHARDS_ENV, raising=False)
    assert lane_settings() == (DEFAULT_JOBS, {"*": DEFAULT_SHARDS, "airflow": 4})
    assert lane_settings(isolated=True) == (ISOLATED_JOBS, {"*": DEFAULT_SHARDS})
    monkeypatch.setenv(SHARDS_ENV, "3")
    monkeypatch.setenv(JOBS_ENV, "5")
    assert lane_settings() == lane_settings(isolated=True) == (5, {"*": 3})


def test_lane_counts_per_backend_parse_and_refuse_what_is_not_a_count():
    from unipipe.harness.cli import DEFAULT_SHARDS, parse_shards

    assert parse_shards("3") == {"*": 3}
    assert parse_shards("airflow=4") == {"*": DEFAULT_SHARDS, "airflow": 4}
    assert parse_shards("1, airflow=4,airflow@2.11=2") == {"*": 1, "airflow": 4,
                                                           "airflow@2.11": 2}
    for bad in ("0", "two", "airflow=", "airflow=-1", "airflow=1.5"):
        with pytest.raises(ValueError, match="UNIPIPE_CONFORM_SHARDS.*not a lane count"):
            parse_shards(bad)


def test_a_backend_gets_the_lanes_its_own_count_names(tmp_path):
    names = ["data_flow_fanout", "params_override", "map_literal"]
    cases = [load_case(CASES / n) for n in names]
    suite = run_suite(cases, [], tmp_path, jobs=3, shards={"*": 1, "local": 3})
    assert suite.ok, [(o.case, o.reason) for o in suite.failures()]
    assert set(suite.lane_seconds) == {"local-1", "local-2", "local-3"}


def test_the_suites_lane_unit_names_tests_that_exist_and_nothing_else():
    """tests/conftest.py's LANES (the one xdist work unit of scripts/test.sh): each entry is a
    test function of its file, and only those ids (any parametrization) join the unit."""
    import ast
    import importlib.util

    root = CASES.parents[1]
    spec = importlib.util.spec_from_file_location("suite_conftest", root / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert len(module.LANES) == 7
    for entry in module.LANES:
        path, _, name = entry.partition("::")
        tree = ast.parse((root / path).read_text())
        assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, entry
    scope = module.lane_scope
    assert scope("tests/harness/test_conformance.py::test_backend_conforms[prefect]") == "lanes"
    assert scope("tests/harness/test_conformance.py::test_airflow_real_scheduler_smoke_set") == \
        "lanes"
    other = "tests/harness/test_conformance.py::test_backend_conforms_elsewhere"
    assert scope(other) == other
    assert scope("tests/core/test_zygote.py::test_x[a]") == "tests/core/test_zygote.py::test_x[a]"


def test_lanes_start_first_lanes_slowest_first_then_by_what_one_more_lane_saves():
    """``lane_order``: every backend's first lane, slowest backend first; then the others by
    case seconds over the lane's number, so a third lane of a slow backend comes before a
    second lane of a quick one."""
    from unipipe.harness.execute import lane_order

    def lanes(label, n):
        return [(label, f"{label}-{k + 1}", None) for k in range(n)]

    per_backend = [lanes("local", 2), lanes("airflow", 3), lanes("prefect", 2),
                   lanes("kubeflow", 2)]
    cost = {"local": 2.1, "airflow": 4.9, "prefect": 5.7, "kubeflow": 2.3}
    order = [home for _, home, _ in lane_order(per_backend, cost)]
    assert order == ["prefect-1", "airflow-1", "kubeflow-1", "local-1",   # first lanes
                     "prefect-2", "airflow-2",                            # 2.85, 2.45
                     "airflow-3", "kubeflow-2", "local-2"]                # 1.63, 1.15, 1.05
    # equal costs keep the backends' own order, and a backend with one lane has only its first
    assert [h for _, h, _ in lane_order([lanes("a", 1), lanes("b", 2)], {"a": 1, "b": 1})] == \
        ["a-1", "b-1", "b-2"]


def test_a_backends_case_seconds_come_from_its_class_else_one():
    from unipipe_airflow.backend import Backend as Airflow

    from unipipe.harness.execute import REFERENCE, REFERENCE_CASE_SECONDS, case_seconds

    assert case_seconds(REFERENCE) == REFERENCE_CASE_SECONDS
    assert case_seconds("airflow") == Airflow.harness_case_seconds
    assert case_seconds("airflow@2.11") == Airflow.harness_case_seconds
    assert case_seconds("no-such-backend") == 1.0
