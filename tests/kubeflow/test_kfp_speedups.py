"""kfp_compile.kfp_speedups: kfp's compiler made linear where it is quadratic, with the same bytes."""

from __future__ import annotations

from pathlib import Path

import kfp_cases
import ml_training
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kfp.dsl import utils
from pipelines import features as F
from unipipe_kubeflow import codegen, kfp_compile

import unipipe as up


@up.task
def bump(x: int) -> int:
    return x + 1


@up.pipeline(name="Many.Repeats")
def many_repeats(start: int = 0):
    """One component called 40 times, so kfp names its tasks bump, bump-2, ... bump-40."""
    value = bump(start)
    for _ in range(39):
        value = bump(value)
    return value


def _yaml(pipeline, out: Path, monkeypatch, speedups: str) -> bytes:
    ir = up.load(pipeline)
    text, _plans, names = codegen.module_text(ir, target_version="2.16", yaml_name="p.yaml")
    module = out / f"module_{speedups}.py"
    module.write_text(text)
    monkeypatch.setenv("UNIPIPE_KFP_SPEEDUPS", speedups)
    return kfp_compile.compile_yaml(module, names.pipeline, out / f"p_{speedups}.yaml").read_bytes()


@pytest.mark.parametrize("pipeline", [many_repeats, F.fanout, F.quality_gate, ml_training.training,
                                      kfp_cases.shapes, kfp_cases.placement],
                         ids=lambda p: p.name)
def test_same_bytes_with_and_without_speedups(pipeline, tmp_path, monkeypatch):
    fast = _yaml(pipeline, tmp_path, monkeypatch, "1")
    plain = _yaml(pipeline, tmp_path, monkeypatch, "0")
    assert fast == plain
    if pipeline is many_repeats:
        assert b"bump-40" in fast and b"bump-41" not in fast


def test_kfp_is_restored_after_a_compile(tmp_path, monkeypatch):
    before = (utils.maybe_rename_for_k8s, utils.sanitize_task_name,
              utils.make_name_unique_by_adding_index)
    _yaml(many_repeats, tmp_path, monkeypatch, "1")
    assert (utils.maybe_rename_for_k8s, utils.sanitize_task_name,
            utils.make_name_unique_by_adding_index) == before


def test_restored_after_a_failing_compile(monkeypatch):
    before = utils.make_name_unique_by_adding_index
    with pytest.raises(RuntimeError), kfp_compile.kfp_speedups():
        assert utils.make_name_unique_by_adding_index is kfp_compile._unique_name
        raise RuntimeError("kfp failed")
    assert utils.make_name_unique_by_adding_index is before


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["t", "task", "t-2", "a-b"]),
       taken=st.lists(st.sampled_from(["t", "t-2", "t-3", "t-5", "task", "task-2", "t-2-2", "a-b",
                                       "a-b-3", "x"]), max_size=8),
       delimiter=st.sampled_from(["-", "_"]))
def test_unique_name_equals_kfps(name, taken, delimiter):
    assert kfp_compile._unique_name(name, taken, delimiter) == \
        utils.make_name_unique_by_adding_index(name, taken, delimiter)
