"""The in-task shim stays small: no pydantic, no libcst, no fsspec on import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import unipipe as up
from unipipe.runtime import store
from unipipe.runtime.invoke import invoke


def test_importing_the_runtime_pulls_in_nothing_heavy():
    code = ("import sys, unipipe.runtime; "
            "print([m for m in ('pydantic', 'libcst', 'fsspec', 'typer', 'rich', 'black') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == []


def test_small_values_pass_inline_and_large_ones_through_the_artifact_store():
    assert store.to_transport({"a": 1}, run_id="r", task_id="t") == {"a": 1}
    big = list(range(50_000))
    pointer = store.to_transport(big, run_id="r", task_id="t")
    assert set(pointer) == {store.ARTIFACT_KEY, "format"} and pointer["format"] == "json"
    assert store.from_transport(pointer) == big
    obj = pointer_obj = store.to_transport({1, 2, 3}, run_id="r", task_id="t")
    assert pointer_obj["format"] == "pickle" and store.from_transport(obj) == {1, 2, 3}


def test_key_paths_select_and_explain_failures():
    assert store.select({"a": [1, {"b": 2}]}, ["a", 1, "b"]) == 2
    with pytest.raises(KeyError, match="cannot select 'z'"):
        store.select({"a": 1}, ["z"])


def test_invoke_marks_non_retryable_errors():
    from pipelines import features as f

    ir = f.non_retryable.ir
    from unipipe.compiler.spec import task_spec

    spec = task_spec(ir, ir.task("bad_value"))
    with pytest.raises(ValueError) as info:
        invoke(spec, {}, run_id="r1", attempt=1, backend="test")
    assert info.value.__unipipe_retryable__ is False


def test_current_is_only_available_inside_a_task():
    with pytest.raises(RuntimeError, match="only available while a unipipe task runs"):
        up.current()


def test_task_called_outside_a_pipeline_is_a_plain_function():
    from pipelines import features as f

    assert f.square(7) == 49
    assert f.describe([1, 5], "x") == {"label": "x", "count": 2, "max": 5}
