"""Hostile input is harmless: literals round-trip exactly, arbitrary IR never crashes validation."""

from __future__ import annotations

import ast
import json

import libcst as cst
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unipipe.compiler import codegen
from unipipe.ir import PipelineError, load_ir_data

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_becomes_a_literal_that_evaluates_to_itself(value):
    mod = cst.Module(body=[cst.SimpleStatementLine([cst.Assign(
        targets=[cst.AssignTarget(cst.Name("VALUE"))], value=codegen.literal(value))])])
    code = codegen.render(mod)
    tree = ast.parse(code)
    assert all(isinstance(n, (ast.Module, ast.Assign, ast.Name, ast.Store, ast.Load, ast.Constant,
                              ast.List, ast.Dict, ast.UnaryOp, ast.USub, ast.Tuple))
               for n in ast.walk(tree)), code
    assert ast.literal_eval(tree.body[0].value) == value


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_becomes_a_docstring_that_stays_a_docstring(text):
    """Docstrings are for people (black re-indents them); exact values go through literal()."""
    mod = codegen.module([], header=["# h"], docstring=text)
    code = codegen.render(mod)
    tree = ast.parse(code)
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)
    doc = ast.get_docstring(tree, clean=False)
    assert doc is not None
    assert "".join(doc.split()) == "".join(text.split())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["name", "tasks", "params", "output", "schedule", "defaults",
                                        "alerts", "tags", "schema_version", "junk"]),
                       json_values, max_size=6))
def test_arbitrary_ir_documents_fail_only_with_pipeline_errors(doc):
    try:
        load_ir_data(doc, file="fuzz.json", text=json.dumps(doc))
    except PipelineError as exc:
        assert exc.problems and all(p.file == "fuzz.json" for p in exc.problems)


task_docs = st.fixed_dictionaries({
    "id": st.text(max_size=12),
    "fn": st.text(max_size=12),
    "source_hash": st.just("0" * 64),
    "inputs": st.dictionaries(st.text(max_size=5), st.fixed_dictionaries(
        {"kind": st.sampled_from(["literal", "param", "output", "bogus"]),
         "name": st.text(max_size=4), "task": st.text(max_size=4), "value": json_values}), max_size=3),
    "after": st.lists(st.text(max_size=4), max_size=3),
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(task_docs, max_size=4), st.text(max_size=20))
def test_arbitrary_task_lists_fail_only_with_pipeline_errors(tasks, name):
    try:
        load_ir_data({"name": name, "tasks": tasks}, file="fuzz.json")
    except PipelineError as exc:
        assert exc.problems
