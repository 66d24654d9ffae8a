"""File artifacts, metrics, reports and per-task packages on Airflow (issue 15).

Airflow moves no files between tasks: the shim moves them through the unipipe store, and each
successful try pushes its record as XComs (``unipipe_artifacts``, ``unipipe_metrics``,
``unipipe_report``), which is where Airflow keeps them and where RunResult reads them from.
A task's ``packages`` are the environment's requirements.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import ml_artifacts
import pipelines_airflow as pa
import pytest
from unipipe_airflow.backend import Backend, package_conflicts, task_packages
from unipipe_airflow.runtime import XCOM_ARTIFACTS, XCOM_METRICS, XCOM_REPORT, record_xcoms

import unipipe as up
from unipipe.compiler.diagnostics import Status, UnsupportedFeature
from unipipe.ir.features import Feature

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"day": "2024-01-01", "rows": 40, "alpha": 0.01}
#: what the reference runner gives for examples/ml_artifacts.py with PARAMS (the case
#: comparisons/cases/artifacts_model_flow expects the same values)
MODEL_SHA256 = "c976bea846752f787732a0bff97e54b833a18547c32c201407ba1c54bb26cfdd"
DATA_SHA256 = "02ebcb6e63afaa110184cda71c1066bd91e1b639a3ac1cbf8196581e6699cef2"
METRICS = {"train": {"rows": 40, "slope": 2.963455}, "evaluate": {"r2": 0.9988}}
REPORT = ("# Evaluation\n\n| metric | value |\n|---|---|\n| R2 | 0.9988 |\n"
          "| slope | 2.963455 |\n")


def _dag(pipeline, out: Path, version: str = "3.3") -> str:
    paths = up.compile(pipeline, target="airflow", out_dir=out, target_version=version)
    return next(p for p in paths if p.suffix == ".py").read_text()


# ---------------------------------------------------------------- compile


def test_support_declares_the_four_features_emulated_on_every_dialect():
    for version in Backend.versions:
        table = Backend().support(version)
        for feature in (Feature.ARTIFACTS, Feature.METRICS, Feature.REPORT, Feature.PACKAGES):
            assert table[feature].status is Status.EMULATED, (version, feature)
        assert "unipipe_artifacts" in table[Feature.ARTIFACTS].note
        assert "requirements" in table[Feature.PACKAGES].note


@pytest.mark.parametrize("version", ["3.3", "2.11"])
def test_a_consumer_of_artifacts_runs_after_their_producers(version, tmp_path):
    """train reads download's Dataset, evaluate train's Model and download's Dataset: no XCom
    passes between them, so the DAG orders them with >> (and passes no artifact argument)."""
    text = _dag(ml_artifacts.training, tmp_path, version)
    assert "    download_result >> train_result\n" in text
    assert "    [train_result, download_result] >> evaluate_result\n" in text
    assert "    train_result = train()\n" in text and "evaluate_result = evaluate()\n" in text


def test_consumers_in_a_mapped_group_and_under_a_gate_get_only_the_edges_they_lack(tmp_path):
    """A member of a group mapped over the producer's value already waits for it (no second
    edge); a gated consumer waits for its gate and for the producer."""
    text = _dag(pa.mapped_and_gated, tmp_path)
    edges = [line.strip() for line in text.splitlines() if ">>" in line]
    assert edges == ["[when_gate_result, make_result] >> use_result"], text


def test_the_requirements_file_holds_every_tasks_packages(tmp_path):
    paths = up.compile(ml_artifacts.training, target="airflow", out_dir=tmp_path)
    req = next(p for p in paths if p.name.endswith(".requirements.txt"))
    assert req.read_text().splitlines() == ["unipipe", "unipipe-airflow", "packaging>=21"]


@up.task(packages=["NumPy[extra]>=1.26", "rich"])
def _wants_numpy() -> int:
    return 1


@up.task(packages=["numpy<3", "packaging==24.0"])
def _wants_old_numpy(x: int) -> int:
    return x


@up.task(packages=["packaging>=25"])
def _wants_new_packaging(x: int) -> int:
    return x


@up.pipeline(name="joined-packages")
def _joined():
    return _wants_old_numpy(_wants_numpy())


@up.pipeline(name="clashing-packages")
def _clashing():
    return _wants_new_packaging(_wants_old_numpy(_wants_numpy()))


def test_packages_of_several_tasks_join_into_one_line_per_distribution():
    assert task_packages(up.load(_joined)) == ["NumPy[extra]<3,>=1.26", "packaging==24.0", "rich"]
    assert package_conflicts(up.load(_joined)) == []


def test_a_pin_another_task_excludes_is_refused_naming_file_line_and_field(tmp_path):
    with pytest.raises(UnsupportedFeature) as err:
        up.compile(_clashing, target="airflow", out_dir=tmp_path)
    text = str(err.value)
    assert f"{Path(__file__)}:" in text
    assert "[tasks._wants_old_numpy.packages]" in text
    assert "packaging==24.0" in text and "_wants_new_packaging: packaging>=25" in text
    assert list(tmp_path.iterdir()) == []
    source = tmp_path / "clash.py"
    source.write_text(CLASH)
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "unipipe"), "compile", f"{source}:pipe", "--target",
         "airflow", "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 2, cli.stderr
    assert f"{source}:15: [tasks.fit.packages] task 'fit' pins pandas==2.1.4" in \
        " ".join(cli.stderr.split()), cli.stderr
    assert not (tmp_path / "out").exists()


CLASH = """import unipipe as up


@up.task(packages=["pandas>=2.2"])
def load() -> int:
    return 1


@up.task(packages=["pandas==2.1.4"])
def fit(x: int) -> int:
    return x

@up.pipeline(name="clash")
def pipe():
    return fit(load())
"""


def test_the_xcoms_of_a_record_hold_only_what_the_try_recorded():
    record = {"artifacts": {"model": {"type": "Model", "uri": "s3://b/files/ab/model",
                                      "sha256": "ab", "size": 3, "folder": False,
                                      "metadata": {"framework": "x"}}},
              "metrics": {"r2": 0.5}, "report": "# hi"}
    assert record_xcoms(record) == {
        XCOM_ARTIFACTS: {"model": {"type": "Model", "uri": "s3://b/files/ab/model",
                                   "sha256": "ab", "size": 3}},
        XCOM_METRICS: {"r2": 0.5}, XCOM_REPORT: "# hi"}
    assert record_xcoms({"artifacts": {}, "metrics": {}}) == {}


# ---------------------------------------------------------------- runs


def _xcom_rows(db: Path, dag_id: str) -> dict[tuple[str, str], object]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT task_id, key, value FROM xcom WHERE dag_id = ? AND "
                           "key LIKE 'unipipe_%'", (dag_id,)).fetchall()
    return {(t, k): json.loads(v) for t, k, v in rows}


def test_dags_test_keeps_metrics_artifacts_and_report_as_xcoms(tmp_path):
    """Under ``airflow dags test`` the try runs in a forked child of the run's process
    (runtime._own_process); its record comes back with the value and the parent pushes it."""
    result = up.run(ml_artifacts.training, backend="airflow", params=PARAMS,
                    workdir=tmp_path / "work", store=str(tmp_path / "store"))
    assert result.state == "success", result.tasks
    assert result.output == {"r2": 0.9988, "model_sha256": MODEL_SHA256}
    assert result.metrics == METRICS
    assert result.reports == {"evaluate": REPORT}
    assert result.artifacts["train"]["model"]["sha256"] == MODEL_SHA256
    assert result.artifacts["download"]["data"]["sha256"] == DATA_SHA256
    assert result.artifacts["download"]["data"]["type"] == "Dataset"
    # the bytes behind the URI Airflow keeps are the model evaluate read
    uri = result.artifacts["train"]["model"]["uri"]
    assert hashlib.sha256(Path(uri).read_bytes()).hexdigest() == MODEL_SHA256
    rows = _xcom_rows(tmp_path / "work" / "airflow" / "airflow.db", "ml-artifacts")
    assert rows[("train", "unipipe_metrics")] == {"rows": 40, "slope": 2.963455}
    assert rows[("evaluate", "unipipe_report")] == REPORT
    assert ("download", "unipipe_metrics") not in rows  # download logs nothing
    assert ("evaluate", "unipipe_artifacts") not in rows  # evaluate writes no artifact


def test_the_2_11_dialect_runs_the_example_and_pushes_the_same_xcoms(tmp_path, airflow2_python):
    result = up.run(ml_artifacts.training, backend="airflow@2.11", params=PARAMS,
                    workdir=tmp_path / "work", store=str(tmp_path / "store"))
    assert result.state == "success", result.tasks
    assert result.backend == "airflow@2.11"
    assert result.metrics == METRICS
    assert result.reports == {"evaluate": REPORT}
    assert result.artifacts["train"]["model"]["sha256"] == MODEL_SHA256


def test_mapped_and_gated_consumers_read_the_producers_bytes(tmp_path):
    result = up.run(pa.mapped_and_gated, backend="airflow", workdir=tmp_path / "work",
                    store=str(tmp_path / "store"))
    assert result.state == "success", result.tasks
    assert result.output == {"out": [2, 3], "gated": 2}
    assert result.artifacts["make"]["model"]["sha256"] == hashlib.sha256(b"m").hexdigest()


def test_a_failed_try_pushes_no_metrics(tmp_path):
    """metrics_and_report: score logs a metric on its failed first try, then two on its second;
    only the successful try's reach Airflow (the reference keeps only those too)."""
    pipe = ROOT / "comparisons" / "cases" / "metrics_and_report" / "case_metrics_and_report.py"
    result = up.run(f"{pipe}:pipe", backend="airflow", params={"rows": 40},
                    workdir=tmp_path / "work", store=str(tmp_path / "store"))
    assert result.state == "success", result.tasks
    assert result.tasks["score"].attempts == 2
    assert result.metrics == {"score": {"accuracy": 0.7, "rows": 40},
                              "summarise": {"passed": 1, "margin": 0.1}}


@pytest.mark.slow
def test_the_rest_api_serves_the_records_under_a_real_scheduler(tmp_path):
    """A real ``airflow standalone`` runs the example; the values are read back through the
    REST API, ``GET /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/xcomEntries/{key}``
    (api_fastapi/core_api/routes/public/xcom.py ~62-139), and equal what RunResult holds."""
    from unipipe_airflow.engine import prepare
    from unipipe_airflow.results import build_result, read_records
    from unipipe_airflow.server import (
        Api,
        dag_path,
        free_port,
        start,
        stop,
        trigger_and_wait,
        wait_for_dag,
        wait_ready,
    )

    from unipipe.api import search_path
    from unipipe.compiler.backend import RunOptions
    from unipipe.store import with_store

    ir = with_store(up.load(ml_artifacts.training), str(tmp_path / "store"))
    home = prepare(ir, RunOptions(params=PARAMS, workdir=tmp_path / "work",
                                  search_path=search_path(ir)))
    port = free_port()
    proc = start(home, port)
    api = Api(f"http://127.0.0.1:{port}/api/v2")
    deadline = time.monotonic() + 600
    try:
        wait_ready(proc, api, deadline)
        wait_for_dag(api, home.dag_id, deadline, alive=lambda: proc.poll() is None)
        run_id = trigger_and_wait(api, home.dag_id, PARAMS, deadline,
                                  alive=lambda: proc.poll() is None)
        run = f"{dag_path(home.dag_id)}/dagRuns/{urllib.request.quote(run_id, safe='')}"

        def entry(task: str, key: str) -> object:
            return api.call("GET", f"{run}/taskInstances/{task}/xcomEntries/{key}")["value"]

        served = {
            "train": {"metrics": entry("train", XCOM_METRICS),
                      "artifacts": entry("train", XCOM_ARTIFACTS)},
            "download": {"artifacts": entry("download", XCOM_ARTIFACTS)},
            "evaluate": {"metrics": entry("evaluate", XCOM_METRICS),
                         "report": entry("evaluate", XCOM_REPORT)},
        }
        keys = sorted(e["key"] for e in api.call(
            "GET", f"{run}/taskInstances/evaluate/xcomEntries")["xcom_entries"])
    finally:
        stop(proc)
    assert served["train"]["metrics"] == METRICS["train"]
    assert served["evaluate"]["metrics"] == METRICS["evaluate"]
    assert served["evaluate"]["report"] == REPORT
    assert served["train"]["artifacts"]["model"]["sha256"] == MODEL_SHA256
    assert served["train"]["artifacts"]["model"]["type"] == "Model"
    assert served["download"]["artifacts"]["data"]["sha256"] == DATA_SHA256
    assert keys == ["return_value", XCOM_METRICS, XCOM_REPORT]
    # RunResult reads the same rows from the metadata DB
    result = build_result(ir, read_records(home.db, home.dag_id, run_id), home.trace_dir, PARAMS)
    assert result.state == "success"
    assert result.metrics == METRICS
    assert result.reports == {"evaluate": REPORT}
    assert result.artifacts["train"] == served["train"]["artifacts"]
    assert result.artifacts["download"] == served["download"]["artifacts"]
