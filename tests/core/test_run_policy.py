"""Pipeline-level retries and timeout (``@up.pipeline(retries=N, retry_delay=, timeout=)``): the
IR, the features they tag, the reference runner's rule 10, the backends that refuse them, and bad
input named by file, line and field (exit 2, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pipelines.usermodule import line_of as _line
from pipelines.usermodule import user_module as _module

import unipipe as up
from unipipe.authoring.loader import load_ir
from unipipe.compiler.diagnostics import UnsupportedFeature
from unipipe.ir import PipelineError
from unipipe.ir.features import Feature, features_used


def test_run_policy_reaches_the_ir_and_tags_its_features():
    ir = load_ir("pipelines.features:run_retries")
    assert (ir.retries, ir.retry_delay, ir.timeout) == (2, 60.0, 7200.0)
    used = features_used(ir)
    assert Feature.PIPELINE_RETRY in used and Feature.PIPELINE_TIMEOUT in used
    only_timeout = features_used(load_ir("pipelines.features:run_timeout"))
    assert Feature.PIPELINE_TIMEOUT in only_timeout and Feature.PIPELINE_RETRY not in only_timeout
    plain = features_used(load_ir("pipelines.features:fanout"))
    assert Feature.PIPELINE_RETRY not in plain and Feature.PIPELINE_TIMEOUT not in plain


def test_pipelines_without_a_run_policy_keep_their_ir_hash():
    ir = load_ir("pipelines.features:fanout")
    data = json.loads(ir.to_json())
    assert (data["retries"], data["retry_delay"], data["timeout"]) == (0, 0.0, None)
    before = ir.ir_hash()
    assert before == ir.model_copy(update={"retries": 0, "timeout": None}).ir_hash()
    assert before != ir.model_copy(update={"retries": 1}).ir_hash()
    assert before != ir.model_copy(update={"timeout": 60.0}).ir_hash()


@pytest.mark.parametrize("decoration, field, words", [
    ("retries=-1", "retries", "whole number of run retries"),
    ("retries=1.5", "retries", "whole number of run retries"),
    ("retries=True", "retries", "whole number of run retries"),
    ("retries=101", "retries", "from 0 to 100"),
    ('retry_delay="5m"', "retry_delay", "without retries="),
    ('retries=1, retry_delay="soon"', "retry_delay", "soon"),
    ('timeout="0s"', "timeout", "longer than 0s"),
    ('timeout="two hours"', "timeout", "two hours"),
])
def test_a_bad_run_policy_names_the_decorator_line_and_field(tmp_path, decoration, field, words):
    path = _module(tmp_path, f"""
        @up.task
        def one() -> int:
            return 1

        @up.pipeline(name="p", {decoration})
        def p():
            return one()
        """)
    with pytest.raises(PipelineError) as info:
        load_ir(f"{path}:p")
    probs = info.value.problems
    assert [(pr.file, pr.line, pr.field) for pr in probs] == [
        (str(path), _line(path, "@up.pipeline"), field)]
    assert words in probs[0].message


def test_cli_compile_of_a_bad_run_policy_exits_2_and_writes_nothing(tmp_path):
    path = _module(tmp_path, """
        @up.task
        def one() -> int:
            return 1

        @up.pipeline(name="p", retries=-2)
        def p():
            return one()
        """)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "unipipe.cli", "compile", f"{path}:p",
                           "--target", "all", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    flat = proc.stderr.replace("\n", "")
    assert f"{path}:{_line(path, '@up.pipeline')}" in flat and "retries" in flat
    assert not out.exists()


def test_airflow_refuses_run_retries_and_kubeflow_both_before_writing(tmp_path):
    from pipelines import features as F

    with pytest.raises(UnsupportedFeature, match="pipeline.retry"):
        up.compile(F.run_retries, target="airflow", out_dir=tmp_path / "a")
    for pipeline, feature in ((F.run_retries, "pipeline.retry"), (F.run_timeout, "pipeline.timeout")):
        with pytest.raises(UnsupportedFeature, match=feature):
            up.compile(pipeline, target="kubeflow", out_dir=tmp_path / "k")
    assert not (tmp_path / "a").exists() and not (tmp_path / "k").exists()
    # a timeout alone compiles for Airflow: the shim's deadline, dagrun_timeout as a backstop
    paths = up.compile(F.run_timeout, target="airflow", out_dir=tmp_path / "ok")
    text = next(p for p in paths if p.suffix == ".py").read_text()
    assert "dagrun_timeout=timedelta(seconds=2730)" in text and '"run_timeout": 2700.0' in text


def test_cli_compile_for_a_refusing_target_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "unipipe.cli", "compile",
                           "pipelines.features:run_retries", "--target", "all", "--out", str(out)],
                          capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2, proc.stderr
    assert "pipeline.retry" in proc.stderr.replace("\n", " ")
    assert not out.exists() or not any(out.rglob("*"))


# ---------------------------------------------------------------- the reference runner, rule 10

RETRIED = """
    import json

    from unipipe.runtime.store import read_bytes, write_bytes

    @up.task(cache=up.Cache())
    def prepare(n: int) -> int:
        return n * 10

    @up.task
    def flaky(x: int) -> int:
        url = f"{up.current().scratch_url()}/tries.json"
        tries = json.loads(read_bytes(url) or b"0") + 1
        write_bytes(url, json.dumps(tries).encode())
        if tries < FAIL_TRIES + 1:
            raise ConnectionError(f"try {tries}")
        return x + tries

    @up.pipeline(name="p", retries=RETRIES)
    def p(n: int = 2):
        return flaky(prepare(n))
    """


def _retried(tmp_path: Path, fail_tries: int, retries: int):
    path = _module(tmp_path, RETRIED.replace("FAIL_TRIES", str(fail_tries))
                   .replace("RETRIES", str(retries)))
    return load_ir(f"{path}:p")


def test_a_failed_run_is_tried_again_and_cached_tasks_hit(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIPIPE_STORE_URL", f"file://{tmp_path / 'store'}")
    from unipipe.local.runner import LocalRunner

    result = LocalRunner().run(_retried(tmp_path, fail_tries=2, retries=3))
    assert (result.state, result.run_attempts, result.output) == ("success", 3, 23)
    assert (result.tasks["prepare"].cache_hit, result.tasks["prepare"].attempts) == (True, 1)
    assert result.tasks["flaky"].attempts == 1
    assert result.run_started is not None


def test_a_run_whose_tries_all_fail_reports_the_last_try(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIPIPE_STORE_URL", f"file://{tmp_path / 'store'}")
    from unipipe.local.runner import LocalRunner

    result = LocalRunner().run(_retried(tmp_path, fail_tries=5, retries=1))
    assert (result.state, result.run_attempts) == ("failed", 2)
    flaky = result.tasks["flaky"]
    assert (flaky.state, flaky.attempts, flaky.error) == ("failed", 1, "ConnectionError: try 2")


def test_the_timeout_stops_the_running_task_and_nothing_starts_after_it(tmp_path):
    path = _module(tmp_path, """
        import time

        @up.task
        def hang() -> int:
            time.sleep(60)
            return 1

        @up.task
        def after(x: int) -> int:
            return x

        @up.task
        def independent() -> int:
            return 2

        @up.pipeline(name="p", timeout="1s")
        def p():
            after(hang())
            return independent()
        """)
    from unipipe.local.runner import LocalRunner

    result = LocalRunner().run(load_ir(f"{path}:p"))
    assert (result.state, result.run_attempts) == ("failed", 1)
    hang = result.tasks["hang"]
    assert (hang.state, hang.attempts, hang.error_type) == ("failed", 1, "PipelineTimeout")
    assert hang.error == "PipelineTimeout: the run exceeded its timeout of 1s"
    assert (result.tasks["after"].state, result.tasks["after"].attempts) == ("upstream_failed", 0)
    independent = result.tasks["independent"]
    assert (independent.state, independent.attempts, independent.error_type) == (
        "failed", 0, "PipelineTimeout")


def test_prefect_refuses_a_fractional_run_retry_delay_before_writing(tmp_path):
    # the server keeps a flow run's retry delay in whole seconds (FlowRunPolicy.retry_delay)
    path = _module(tmp_path, """
        @up.task
        def one() -> int:
            return 1

        @up.pipeline(name="p", retries=1, retry_delay="1.5s")
        def p():
            return one()
        """)
    out = tmp_path / "out"
    with pytest.raises(UnsupportedFeature, match="whole seconds"):
        up.compile(load_ir(f"{path}:p"), target="prefect", out_dir=out)
    assert not out.exists() or not any(out.iterdir())
