"""File artifacts, metrics, reports and per-task packages: authoring, validation and the runtime
on the reference runner (each engine's own record is tested in its backend's folder)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

# the helpers every validation test uses: a module written to tmp_path, its problems, a line
from test_validation import line_of, problems_of, write_module

import unipipe as up
from unipipe.authoring.loader import load_ir
from unipipe.compiler.spec import task_spec
from unipipe.ir import PipelineError
from unipipe.ir.features import Feature
from unipipe.runtime import artifacts

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ml_artifacts.py"


def _load(tmp_path: Path, body: str, attr: str = "p"):
    path = write_module(tmp_path, body)
    return path, load_ir(f"{path}:{attr}")


# ---------------------------------------------------------------- authoring into the IR


def test_the_example_traces_artifacts_logs_and_packages():
    ir = load_ir(f"{EXAMPLE}:training")
    download, train, evaluate = (ir.task(t) for t in ("download", "train", "evaluate"))
    assert {k: (s.direction, s.type) for k, s in download.artifacts.items()} == {
        "data": ("output", "Dataset")}
    assert "data" not in download.inputs and set(download.inputs) == {"day", "rows"}
    assert {k: (s.direction, s.type, s.task, s.output) for k, s in train.artifacts.items()} == {
        "data": ("input", "Dataset", "download", "data"),
        "model": ("output", "Model", None, None),
        "metrics": ("output", "Metrics", None, None)}
    assert train.packages == ("packaging>=21",)
    assert train.logs == () and evaluate.logs == ("metrics", "report")
    assert evaluate.upstream() == ["train", "download"]
    assert set(up.features_used(ir)) >= {Feature.ARTIFACTS, Feature.METRICS, Feature.REPORT,
                                         Feature.PACKAGES}
    spec = task_spec(ir, train)
    assert spec["artifacts"] == {"in": {"data": {"type": "Dataset", "task": "download",
                                                 "name": "data"}},
                                 "out": {"model": "Model", "metrics": "Metrics"}}
    assert spec["packages"] == ["packaging>=21"]
    assert task_spec(ir, evaluate)["logs"] == ["metrics", "report"]


def test_pipelines_without_artifacts_keep_their_spec_and_hash(tmp_path):
    _, ir = _load(tmp_path, """
        @up.task
        def one(x: int) -> int:
            return x

        @up.pipeline(name="plain")
        def p(x: int = 1):
            return one(x)
        """)
    spec = task_spec(ir, ir.task("one"))
    assert not {"artifacts", "logs", "packages"} & set(spec)
    data = json.loads(ir.to_json())
    for key in ("artifacts", "logs", "packages"):
        del data["tasks"][0][key]
    from unipipe.ir import load_ir_data

    assert load_ir_data(data).ir_hash() == ir.ir_hash()


def test_an_input_artifact_may_come_from_a_uri(tmp_path):
    _, ir = _load(tmp_path, """
        @up.task
        def count(data: up.Input[up.Dataset]) -> int:
            return len(open(data.path).read().splitlines())

        @up.pipeline(name="from-uri")
        def p():
            return count(data="s3://bucket/raw/day.csv")
        """)
    slot = ir.task("count").artifacts["data"]
    assert (slot.direction, slot.uri, slot.task) == ("input", "s3://bucket/raw/day.csv", None)


# ---------------------------------------------------------------- bad input: file, line, field


@pytest.mark.parametrize("packages, needle", [
    ('["scikit-learn==1.5.2; rm -rf /"]', "not a requirement string"),
    ('["pkg @ https://evil.example/x.whl"]', "not a requirement string"),
    ('["ok==1", "$(touch /tmp/x)"]', "not a requirement string"),
    ('"scikit-learn"', "takes a list"),
    ('[3]', "not a requirement string"),
])
def test_a_package_that_is_not_a_requirement_string_is_refused(tmp_path, packages, needle):
    path, problems = problems_of(tmp_path, f"""
        @up.task(packages={packages})
        def fit(x: int) -> int:
            return x

        @up.pipeline(name="pk")
        def p():
            return fit(1)
        """)
    (prob,) = problems
    assert prob.field == "packages" and needle in prob.message
    assert (prob.file, prob.line) == (str(path), line_of(path, "@up.task(packages="))


def test_artifact_wiring_errors_name_the_call(tmp_path):
    body = """
        @up.task
        def make(model: up.Output[up.Model]) -> None:
            open(model.path, "w").write("m")

        @up.task
        def use_data(data: up.Input[up.Dataset]) -> int:
            return 1

        @up.task
        def use_value(x: str) -> str:
            return x

        @up.pipeline(name="bad1")
        def wrong_type():
            return use_data(data=make().outputs["model"])

        @up.pipeline(name="bad2")
        def as_value():
            return use_value(make().outputs["model"])

        @up.pipeline(name="bad3")
        def unknown_output():
            return use_data(data=make().outputs["weights"])

        @up.pipeline(name="bad4")
        def plain_value():
            return use_data(data="just a string")

        @up.pipeline(name="bad5")
        def output_passed():
            return make(model="/tmp/m")
        """
    path = write_module(tmp_path, body)
    want = {
        "wrong_type": ("use_data.data", "is a Model; this parameter takes up.Input[up.Dataset]",
                       'use_data(data=make().outputs["model"])'),
        "as_value": ("use_value.x", "it goes to a parameter annotated up.Input",
                     'use_value(make().outputs["model"])'),
        "unknown_output": ("make.outputs", "has no output artifact 'weights'",
                           'outputs["weights"]'),
        "plain_value": ("use_data.data", "takes another task's output artifact",
                        'use_data(data="just a string")'),
        "output_passed": ("make.model", "is an output artifact of task 'make'",
                          'make(model="/tmp/m")'),
    }
    for attr, (field, text, line) in want.items():
        with pytest.raises(PipelineError) as info:
            load_ir(f"{path}:{attr}")
        (prob,) = info.value.problems
        assert (prob.field, prob.file, prob.line) == (field, str(path), line_of(path, line)), attr
        assert text in prob.message, (attr, prob.message)


def test_output_artifacts_of_a_mapped_task_are_refused(tmp_path):
    path, problems = problems_of(tmp_path, """
        @up.task
        def shard(i: int, part: up.Output[up.Dataset]) -> int:
            return i

        @up.task
        def use(data: up.Input[up.Dataset]) -> int:
            return 1

        @up.pipeline(name="mapped")
        def p():
            parts = shard.map(i=[1, 2])
            return use(data=parts.outputs["part"])
        """)
    (prob,) = problems
    assert prob.field == "shard.outputs" and "is mapped" in prob.message
    assert prob.line == line_of(path, 'use(data=parts.outputs["part"])')


def test_cli_exits_2_and_writes_nothing_for_a_bad_package(tmp_path):
    bad = write_module(tmp_path, """
        @up.task(packages=["numpy; os_name == 'posix'"])
        def t() -> int:
            return 1

        @up.pipeline(name="cli-bad")
        def p():
            return t()
        """)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "unipipe.cli", "compile", f"{bad}:p",
                           "--target", "local", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"{bad}:{line_of(bad, '@up.task(packages=')}" in proc.stderr.replace("\n", "")
    assert "packages" in proc.stderr and not out.exists()


# ---------------------------------------------------------------- the runtime, on the reference


def test_the_example_moves_bytes_and_records_metrics_and_the_report():
    result = up.run(up.load(f"{EXAMPLE}:training"))
    assert result.ok, result.error
    model = result.artifacts["train"]["model"]
    with open(model["uri"], "rb") as fh:
        raw = fh.read()
    # the bytes evaluate read are the bytes train wrote, as stored
    assert hashlib.sha256(raw).hexdigest() == model["sha256"] == result.output["model_sha256"]
    assert json.loads(raw) == {"alpha": 0.01, "intercept": 1.069575, "slope": 2.963455}
    assert model["type"] == "Model" and model["size"] == len(raw)
    assert result.metrics == {"train": {"rows": 40, "slope": 2.963455},
                              "evaluate": {"r2": 0.9988}}
    assert result.reports["evaluate"].startswith("# Evaluation\n\n| metric | value |")
    data = result.artifacts["download"]["data"]
    assert data["type"] == "Dataset" and data["size"] == 452
    # a second run hits train's cache; its artifacts and metrics come back with the value
    again = up.run(up.load(f"{EXAMPLE}:training"))
    assert again.tasks["train"].cache_hit and again.output == result.output
    assert again.metrics == result.metrics and again.artifacts == result.artifacts


def test_an_unwritten_output_fails_at_once_naming_the_task(tmp_path):
    _, ir = _load(tmp_path, """
        @up.task(retries=3)
        def train(model: up.Output[up.Model]) -> int:
            return 1

        @up.pipeline(name="unwritten")
        def p():
            return train()
        """)
    result = up.run(ir)
    task = result.tasks["train"]
    assert (result.state, task.state, task.attempts, task.error_type) == (
        "failed", "failed", 1, "ArtifactMissing")
    assert "task 'train' never wrote its output 'model'" in task.error


def test_folders_and_uri_inputs_round_trip(tmp_path):
    seed = tmp_path / "seed.csv"
    seed.write_text("a,b\n1,2\n")
    path = write_module(tmp_path, f"""
        import os

        @up.task
        def shards(seed: up.Input[up.Dataset], out: up.Output[up.Dataset]) -> int:
            os.makedirs(os.path.join(out.path, "part"), exist_ok=True)
            text = open(seed.path).read()
            for i in range(3):
                with open(os.path.join(out.path, "part", f"{{i}}.csv"), "w") as fh:
                    fh.write(text * (i + 1))
            return 3

        @up.task
        def total(parts: up.Input[up.Dataset]) -> int:
            folder = os.path.join(parts.path, "part")
            return sum(len(open(os.path.join(folder, f)).read()) for f in sorted(os.listdir(folder)))

        @up.pipeline(name="folders")
        def p():
            return total(parts=shards(seed={seed.as_uri()!r}).outputs["out"])
        """)
    result = up.run(up.load(f"{path}:p"))
    assert result.ok, result.error
    assert result.output == 8 * 6
    assert result.artifacts["shards"]["out"]["size"] == 48


def test_metrics_are_checked_and_only_recorded_inside_a_task():
    with pytest.raises(RuntimeError, match="only available while a unipipe task runs"):
        up.log_metric("x", 1.0)
    rec = artifacts.begin()
    try:
        with pytest.raises(ValueError, match="finite number"):
            up.log_metric("x", float("nan"))
        with pytest.raises(ValueError, match="finite number"):
            up.log_metric("x", True)
        up.log_metric("loss", 0.25)
        up.report("a")
        up.report("b")
        assert (rec.metrics, rec.report) == ({"loss": 0.25}, "a\n\nb")
    finally:
        artifacts.end()


def test_the_local_runner_says_which_packages_are_not_installed(tmp_path, capfd):
    _, ir = _load(tmp_path, """
        @up.task(packages=["unipipe-no-such-package==1.0", "packaging>=20"])
        def t() -> int:
            return 7

        @up.pipeline(name="pk-local")
        def p():
            return t()
        """)
    result = up.run(ir)
    assert result.ok and result.output == 7  # the local runner refuses nothing
    err = capfd.readouterr().err
    assert "unipipe-no-such-package==1.0 (not installed)" in err and "packaging>=20" not in err


def test_a_worker_without_the_package_fails_the_task_at_once(tmp_path):
    from unipipe.runtime.invoke import run_attempt

    spec = {"pipeline": "p", "id": "fit", "fn": "builtins:len", "source_hash": "0" * 64,
            "packages": ["unipipe-no-such-package==1.0", "packaging<1"]}
    with pytest.raises(artifacts.PackagesMissing) as info:
        run_attempt(spec, {}, run_id="r1", attempt=1, backend="airflow")
    assert "task 'fit' needs unipipe-no-such-package==1.0 (not installed), packaging<1 " \
           "(installed: " in str(info.value)
    assert info.value.__unipipe_retryable__ is False
