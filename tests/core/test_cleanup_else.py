"""run_if and up.otherwise(): bad input names the file, line and field (exit 2, nothing
written); the reference runner's rules for cleanup tasks, failure paths and else branches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pipelines.usermodule import line_of as _line
from pipelines.usermodule import user_module as _module

import unipipe as up
from unipipe.authoring.loader import load_ir
from unipipe.ir import PipelineError
from unipipe.ir.features import Feature, features_used
from unipipe.local.runner import LocalRunner


def _problems(tmp_path: Path, body: str):
    path = _module(tmp_path, body)
    with pytest.raises(PipelineError) as info:
        load_ir(f"{path}:p")
    return path, info.value.problems


def test_unknown_run_if_value_names_the_decorator_line(tmp_path):
    path, probs = _problems(tmp_path, """
        @up.task(run_if="always")
        def t() -> int:
            return 1
        """)
    assert (probs[0].file, probs[0].line, probs[0].field) == (str(path), _line(path, "always"),
                                                              "run_if")
    assert "'all_done'" in probs[0].message and "'always'" in probs[0].message


def test_run_if_on_a_task_with_no_upstream_is_refused_at_its_call(tmp_path):
    path, probs = _problems(tmp_path, """
        @up.task(run_if="all_done")
        def cleanup() -> str:
            return "x"

        @up.pipeline(name="p")
        def p():
            cleanup()  # the call
        """)
    assert [(pr.line, pr.field) for pr in probs] == [(_line(path, "# the call"),
                                                      "tasks.cleanup.run_if")]
    assert "no upstream" in probs[0].message


def test_run_if_task_taking_an_output_or_inside_when_is_refused(tmp_path):
    path, probs = _problems(tmp_path, """
        @up.task
        def work() -> bool:
            return True

        @up.task(run_if="one_failed")
        def report(ok: bool) -> str:
            return "x"

        @up.pipeline(name="p")
        def p():
            w = work()
            report(w)  # data
            with up.when(w):
                report(True).after(w)  # guarded
        """)
    got = sorted((pr.line, pr.field) for pr in probs)
    assert got == [(_line(path, "# data"), "tasks.report.inputs.ok"),
                   (_line(path, "# guarded"), "tasks.report_2.run_if")]


def test_otherwise_without_a_when_just_before_is_refused(tmp_path):
    path, probs = _problems(tmp_path, """
        @up.task
        def gate() -> bool:
            return True

        @up.task
        def work() -> int:
            return 1

        @up.pipeline(name="p")
        def p():
            g = gate()
            with up.when(g):
                with up.when(g):
                    work()
            with up.otherwise():
                work()
            with up.otherwise():  # second else
                work()
        """)
    assert [(pr.line, pr.field) for pr in probs] == [(_line(path, "# second else"), "otherwise")]
    assert "no `with up.when(...)` block" in probs[0].message


def test_cli_validate_exits_2_naming_file_line_and_field_and_compile_writes_nothing(tmp_path):
    path = _module(tmp_path, """
        @up.task
        def gate() -> bool:
            return True

        @up.pipeline(name="p")
        def p():
            with up.otherwise():
                gate()
        """)
    cmd = [sys.executable, "-m", "unipipe.cli"]
    proc = subprocess.run([*cmd, "validate", f"{path}:p"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    flat = proc.stderr.replace("\n", "")
    assert f"{path}:{_line(path, 'up.otherwise')}" in flat and "otherwise" in flat
    out = tmp_path / "out"
    proc = subprocess.run([*cmd, "compile", f"{path}:p", "--target", "airflow", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and not out.exists()


@up.task
def _gate(flag: bool) -> bool:
    return flag


@up.task
def _yes() -> str:
    return "yes"


@up.task
def _no() -> str:
    return "no"


@up.task
def _boom() -> int:
    raise RuntimeError("boom")


@up.task(run_if="all_done")
def _cleanup() -> str:
    return "cleaned"


@up.task(run_if="one_failed")
def _on_failure() -> str:
    return "paged"


@up.pipeline(name="else-nested")
def _nested(flag: bool = False, inner: bool = True):
    outer_gate = _gate(flag)
    with up.when(outer_gate):
        y = _yes()
    with up.otherwise():
        inner_gate = _gate(inner)
        with up.when(inner_gate):
            n = _no()
        with up.otherwise():
            n2 = _no()
    return {"y": y, "n": n, "n2": n2}


@up.pipeline(name="cleanup-skipped-upstream")
def _after_skip(flag: bool = False):
    g = _gate(flag)
    with up.when(g):
        y = _yes()
    _cleanup().after(y)
    _on_failure().after(y)


def test_otherwise_is_the_negated_test_of_the_when_before_it_at_its_level():
    ir = up.load(_nested)
    conds = {t.id: [(c.task, c.expect, c.otherwise) for c in t.when] for t in ir.tasks}
    assert conds["_yes"] == [("_gate", True, False)]
    assert conds["_no"] == [("_gate", False, True), ("_gate_2", True, False)]
    assert conds["_no_2"] == [("_gate", False, True), ("_gate_2", False, True)]
    assert Feature.OTHERWISE in features_used(ir)
    r = LocalRunner(isolation="inline").run(ir, {"flag": False, "inner": False})
    assert r.state == "success"
    assert {t: r.tasks[t].state for t in ("_yes", "_no", "_no_2")} == {
        "_yes": "skipped", "_no": "skipped", "_no_2": "success"}
    assert r.output == {"y": None, "n": None, "n2": "no"}


def test_all_done_runs_after_a_skipped_upstream_and_one_failed_is_skipped_without_failure():
    r = LocalRunner(isolation="inline").run(up.load(_after_skip), {"flag": False})
    assert r.state == "success"
    assert {t: x.state for t, x in r.tasks.items()} == {
        "_gate": "success", "_yes": "skipped", "_cleanup": "success", "_on_failure": "skipped"}
