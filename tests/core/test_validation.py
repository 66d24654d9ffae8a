"""Every validation error names the user's file, line and field, and nothing runs or is written."""

from __future__ import annotations

import json
import textwrap
import uuid

import pytest

from unipipe.authoring.loader import load_ir
from unipipe.ir import PipelineError, load_ir_file

HEADER = "import unipipe as up\n\n"


def write_module(tmp_path, body: str):
    name = f"userpipe_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def problems_of(tmp_path, body: str, attr: str = "p"):
    path = write_module(tmp_path, body)
    with pytest.raises(PipelineError) as info:
        load_ir(f"{path}:{attr}")
    return path, info.value.problems


def line_of(path, needle: str) -> int:
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


def test_invalid_duration_names_the_line_and_field(tmp_path):
    path, probs = problems_of(tmp_path, """
        @up.task(timeout="ten minutes")
        def t() -> int:
            return 1
        """)
    assert probs[0].file == str(path)
    assert probs[0].line == line_of(path, "ten minutes")
    assert probs[0].field == "timeout"
    assert "not a duration" in probs[0].message


def test_invalid_retry_delay_in_retry_object(tmp_path):
    path, probs = problems_of(tmp_path, """
        R = up.Retry(max_retries=2, delay="5 parsecs")
        """)
    assert (probs[0].line, probs[0].field) == (line_of(path, "parsecs"), "retry.delay")


def test_negative_retries_are_refused(tmp_path):
    path, probs = problems_of(tmp_path, """
        @up.task(retries=-1)
        def t() -> int:
            return 1
        """)
    assert (probs[0].line, probs[0].field) == (line_of(path, "retries=-1"), "retries")
    path, probs = problems_of(tmp_path, """
        R = up.Retry(max_retries=-3)
        """)
    assert probs[0].field == "retry.max_retries" and ">= 0" in probs[0].message


def test_invalid_cron_is_refused_at_the_decorator(tmp_path):
    path, probs = problems_of(tmp_path, """
        @up.pipeline(schedule="61 * * * *")
        def p():
            pass
        """)
    assert (probs[0].line, probs[0].field) == (line_of(path, "61 * * * *"), "schedule")
    assert "not a valid cron" in probs[0].message
    _, probs = problems_of(tmp_path, """
        @up.pipeline(schedule="* * *")
        def p():
            pass
        """)
    assert "5 fields" in probs[0].message


def test_non_json_literal_argument_names_the_call(tmp_path):
    path, probs = problems_of(tmp_path, """
        @up.task
        def t(x) -> int:
            return 1

        @up.pipeline
        def p():
            t(object())
        """)
    assert probs[0].line == line_of(path, "t(object())")
    assert probs[0].field == "t.x"
    assert "JSON-serialisable" in probs[0].message


def test_unserialisable_param_default(tmp_path):
    path, probs = problems_of(tmp_path, """
        import datetime

        @up.pipeline
        def p(when=datetime.datetime(2020, 1, 1)):
            pass
        """)
    assert probs[0].field == "params.when.default"
    assert probs[0].line == line_of(path, "@up.pipeline")


def test_condition_on_non_bool_output(tmp_path):
    path, probs = problems_of(tmp_path, """
        @up.task
        def score() -> float:
            return 0.5

        @up.task
        def go() -> int:
            return 1

        @up.pipeline
        def p():
            with up.when(score()):
                go()
        """)
    assert probs[0].line == line_of(path, "        go()")
    assert probs[0].field == "tasks.go.when[0]"
    assert "not bool" in probs[0].message


def test_cycle_through_after_edges(tmp_path):
    path, probs = problems_of(tmp_path, """
        @up.task
        def a() -> int:
            return 1

        @up.task
        def b(x: int) -> int:
            return x

        @up.pipeline
        def p():
            first = a()
            second = b(first)
            first.after(second)
        """)
    assert "cycle: a -> b -> a" in probs[0].message or "cycle: b -> a -> b" in probs[0].message
    assert probs[0].file == str(path)


def test_invalid_pipeline_name(tmp_path):
    path, probs = problems_of(tmp_path, """
        @up.pipeline(name="bad name; import os")
        def p():
            pass
        """)
    assert probs[0].field == "name"
    assert probs[0].line == line_of(path, "@up.pipeline")


def test_unknown_parameter_at_run_time():
    from pipelines.features import cached

    from unipipe.params import resolve_params

    with pytest.raises(PipelineError) as info:
        resolve_params(cached.ir, {"y": 1, "x": "three"})
    fields = {p.field for p in info.value.problems}
    assert fields == {"params.y", "params.x"}
    assert all(p.file.endswith("features.py") for p in info.value.problems)


# ---------------------------------------------------------------- IR documents


def ir_doc(**changes):
    doc = {
        "name": "doc",
        "params": [{"name": "n", "type": "int", "default": 1}],
        "tasks": [
            {"id": "a", "fn": "m:a", "source_hash": "0" * 64,
             "inputs": {"x": {"kind": "param", "name": "n"}}},
            {"id": "b", "fn": "m:b", "source_hash": "0" * 64,
             "inputs": {"y": {"kind": "output", "task": "a"}}},
        ],
    }
    doc.update(changes)
    return doc


def load_doc(tmp_path, doc) -> list:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(PipelineError) as info:
        load_ir_file(path)
    assert all(p.file == str(path) for p in info.value.problems)
    return info.value.problems


def test_ir_duplicate_task_ids(tmp_path):
    doc = ir_doc()
    doc["tasks"].append(dict(doc["tasks"][0]))
    probs = load_doc(tmp_path, doc)
    assert any(p.field == "tasks.a.id" and "duplicate task id" in p.message for p in probs)


def test_ir_invalid_task_id_names_the_line(tmp_path):
    doc = ir_doc()
    doc["tasks"][1]["id"] = "b; import os"
    probs = load_doc(tmp_path, doc)
    assert probs[0].field == "tasks.1.id"
    text = (tmp_path / "p.json").read_text().splitlines()
    assert '"id"' in text[probs[0].line - 1]


def test_ir_unknown_references(tmp_path):
    doc = ir_doc()
    doc["tasks"][1]["inputs"]["y"]["task"] = "nope"
    doc["tasks"][0]["inputs"]["x"]["name"] = "missing"
    probs = load_doc(tmp_path, doc)
    messages = {p.field: p.message for p in probs}
    assert "unknown task 'nope'" in messages["tasks.b.inputs.y"]
    assert "unknown parameter 'missing'" in messages["tasks.a.inputs.x"]


def test_ir_cycle(tmp_path):
    doc = ir_doc()
    doc["tasks"][0]["after"] = ["b"]
    probs = load_doc(tmp_path, doc)
    assert "cycle" in probs[0].message


def test_ir_negative_retries_and_bad_types(tmp_path):
    doc = ir_doc()
    doc["tasks"][0]["policies"] = {"retry": {"max_retries": -1}}
    doc["params"][0]["default"] = "one"
    probs = load_doc(tmp_path, doc)
    assert any(p.field == "tasks.0.policies.retry.max_retries" for p in probs)


def test_ir_param_default_type_mismatch(tmp_path):
    doc = ir_doc()
    doc["params"][0]["default"] = "one"
    probs = load_doc(tmp_path, doc)
    assert probs[0].field == "params.n.default"


def test_ir_bad_cron(tmp_path):
    probs = load_doc(tmp_path, ir_doc(schedule={"cron": "not a cron at all"}))
    assert probs[0].field == "schedule"


def test_ir_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": "x",\n  "tasks": [\n}\n')
    with pytest.raises(PipelineError) as info:
        load_ir_file(path)
    assert info.value.problems[0].line == 4


def test_literal_secret_webhook_is_refused(tmp_path):
    path, probs = problems_of(tmp_path, """
        A = up.Alert(webhook="https://hooks.slack.com/services/T000/B000/XXXX")
        """)
    assert probs[0].field == "alert.webhook"
    assert "secret reference" in probs[0].message
