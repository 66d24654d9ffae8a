"""Concurrency limits (``task.map(..., max_parallel=N)``, ``@up.pipeline(max_active_runs=N)``):
the IR, the features they tag, and bad input named by file, line and field (exit 2, nothing
written)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pipelines.usermodule import line_of as _line
from pipelines.usermodule import user_module as _module

from unipipe.authoring.loader import load_ir
from unipipe.harness.compare import peak_concurrency
from unipipe.ir import PipelineError
from unipipe.ir.features import Feature, features_used
from unipipe.ir.io import load_ir_file


def test_limits_reach_the_ir_and_tag_their_features():
    ir = load_ir("pipelines.features:limits")
    assert ir.max_active_runs == 1
    assert (ir.task("square").max_parallel, ir.task("shift").max_parallel) == (2, 3)
    assert ir.task("make_numbers").max_parallel is None
    used = features_used(ir)
    assert Feature.MAP_MAX_PARALLEL in used and Feature.MAX_ACTIVE_RUNS in used
    assert Feature.MAP_MAX_PARALLEL not in features_used(load_ir("pipelines.features:fanout"))


def test_pipelines_without_limits_keep_their_ir_hash():
    ir = load_ir("pipelines.features:fanout")
    data = json.loads(ir.to_json())
    assert data["max_active_runs"] is None
    # the hash of a pipeline that sets neither leaves both fields out, as before they existed
    assert ir.ir_hash() == ir.model_copy(update={"max_active_runs": None}).ir_hash()
    assert ir.ir_hash() != ir.model_copy(update={"max_active_runs": 2}).ir_hash()


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "True", "'4'"])
def test_a_bad_max_parallel_names_the_map_line(tmp_path, value):
    path = _module(tmp_path, f"""
        @up.task
        def xs() -> list:
            return [1, 2]

        @up.task
        def double(x: int) -> int:
            return 2 * x

        @up.pipeline(name="p")
        def p():
            return double.map(x=xs(), max_parallel={value})  # the map
        """)
    with pytest.raises(PipelineError) as info:
        load_ir(f"{path}:p")
    probs = info.value.problems
    assert [(pr.file, pr.line, pr.field) for pr in probs] == [
        (str(path), _line(path, "# the map"), "map.max_parallel")]
    assert "max_parallel takes a whole number" in probs[0].message


@pytest.mark.parametrize("value", ["0", "False", "1.0"])
def test_a_bad_max_active_runs_names_the_decorator_line(tmp_path, value):
    path = _module(tmp_path, f"""
        @up.task
        def one() -> int:
            return 1

        @up.pipeline(name="p", max_active_runs={value})
        def p():
            return one()
        """)
    with pytest.raises(PipelineError) as info:
        load_ir(f"{path}:p")
    probs = info.value.problems
    assert [(pr.line, pr.field) for pr in probs] == [(_line(path, "@up.pipeline"), "max_active_runs")]


def test_an_ir_file_with_max_parallel_on_an_unmapped_task_is_refused_with_its_field(tmp_path):
    data = json.loads(load_ir("pipelines.features:fanout").to_json())
    touch = next(t for t in data["tasks"] if t["id"] == "touch")
    touch["max_parallel"] = 2
    file = tmp_path / "pipeline.json"
    file.write_text(json.dumps(data, indent=2))
    with pytest.raises(PipelineError) as info:
        load_ir_file(file)
    text = str(info.value)
    assert str(file) in text and "tasks" in text and "not mapped" in text


def test_cli_compile_of_a_bad_limit_exits_2_and_writes_nothing(tmp_path):
    path = _module(tmp_path, """
        @up.task
        def one() -> int:
            return 1

        @up.pipeline(name="p", max_active_runs=0)
        def p():
            return one()
        """)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "unipipe.cli", "compile", f"{path}:p",
                           "--target", "all", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    flat = proc.stderr.replace("\n", "")
    assert f"{path}:{_line(path, '@up.pipeline')}" in flat and "max_active_runs" in flat
    assert not out.exists()


def _run(*element_spans):
    tasks = {"load": {"attempt_log": []}}
    for i, spans in enumerate(element_spans):
        tasks[f"load[{i}]"] = {"attempt_log": [{"start": s, "end": e} for s, e in spans]}
    tasks["loader"] = {"attempt_log": [{"start": 0.0, "end": 9.0}]}  # not an element of load
    return {"tasks": tasks}


def test_peak_concurrency_counts_overlapping_element_attempts():
    assert peak_concurrency(_run([(0, 1)], [(1, 2)], [(2, 3)]), "load") == 1  # end = start
    assert peak_concurrency(_run([(0, 2)], [(1, 3)], [(1.5, 4)]), "load") == 3
    assert peak_concurrency(_run([(0, 1), (1.2, 2)], [(0.5, 1.1)]), "load") == 2  # a retry
    assert peak_concurrency(_run(), "load") == 0
