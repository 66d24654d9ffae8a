"""kfp_compile._yaml_speedups: PyYAML's pure-Python emitter (how kfp writes its YAML) doing less
work for the same characters, checked against the emitter left alone."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from unipipe_kubeflow import codegen, kfp_compile
from yaml.emitter import Emitter

from unipipe.ir import models as m

#: characters the emitter treats specially: quotes, escapes, breaks, BOM, non-ASCII, astral
SPECIAL = ' \n\t"\\\'#:-{}[],&*!|>%@`\x00\x07\x1b\x7f\x85\xa0\u2028\u2029\ufeff\ud7ff\ue000é€\U0001f600'
TEXT = st.text(alphabet=st.sampled_from(list(SPECIAL) + list("abcxyz019")), max_size=240)
OPTIONS = [{}, {"allow_unicode": True}, {"width": 20}, {"default_style": '"'},
           {"default_flow_style": True}, {"width": 20, "allow_unicode": True, "default_style": '"'}]


def _dump(docs: list, **options) -> str:
    stream = io.StringIO()
    yaml.dump_all(docs, stream, sort_keys=True, **options)
    return stream.getvalue()


@settings(max_examples=300, deadline=None)
@given(docs=st.lists(st.one_of(st.dictionaries(TEXT, TEXT, max_size=4), st.lists(TEXT, max_size=4),
                               TEXT), min_size=1, max_size=3),
       options=st.sampled_from(OPTIONS))
def test_same_text_as_pyyaml(docs, options):
    plain = _dump(docs, **options)
    with kfp_compile._yaml_speedups():
        fast = _dump(docs, **options)
    assert fast == plain


def test_long_quoted_lines_fold_the_same():
    """A long double-quoted scalar (as kfp writes component sources) folded at every width."""
    source = 'def f(x: int) -> int:\n    """Doc "quoted" \\ back."""\n    return x  ' * 12
    for width in (10, 20, 40, 80, 120):
        plain = _dump([{"src": source, "list": [source, " " + source]}], width=width)
        with kfp_compile._yaml_speedups():
            assert _dump([{"src": source, "list": [source, " " + source]}], width=width) == plain


def test_emitter_restored(tmp_path):
    before = {n: Emitter.__dict__[n] for n in ("analyze_scalar", "write_plain", "write_double_quoted")}
    with pytest.raises(RuntimeError), kfp_compile._yaml_speedups():
        assert Emitter.__dict__["write_double_quoted"] is kfp_compile._write_double_quoted
        raise RuntimeError("kfp failed")
    assert {n: Emitter.__dict__[n] for n in before} == before


def _per_task(n: int) -> m.Pipeline:
    """A chain of n distinct functions (the `per_task` shape of comparisons/perf/synthetic.py)."""
    tasks = [m.Task(id=f"t{i}", fn=f"mod_{n}:f{i}", source_hash=f"{i:064x}", returns="int",
                    inputs={"x": m.ParamInput(name="start") if i == 0 else m.OutputInput(task=f"t{i - 1}")})
             for i in range(n)]
    return m.Pipeline(name=f"per-task-{n}", params=(m.Param(name="start", type="int", default=0),),
                      tasks=tuple(tasks), output=m.OutputInput(task=tasks[-1].id), module=f"mod_{n}",
                      defaults=m.Policies(retry=m.Retry(max_retries=1, delay=1.0)))


@pytest.mark.parametrize("n", [1, 30])
def test_kfp_yaml_byte_identical_per_task(n, tmp_path: Path, monkeypatch):
    """The whole kfp compile of a component-per-task pipeline, speedups on and off."""
    text, _plans, names = codegen.module_text(_per_task(n), target_version="2.16", yaml_name="p.yaml")
    module = tmp_path / "module.py"
    module.write_text(text)
    out = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("UNIPIPE_KFP_SPEEDUPS", flag)
        out[flag] = kfp_compile.compile_yaml(module, names.pipeline, tmp_path / f"p{flag}.yaml").read_bytes()
    assert out["1"] == out["0"]
    assert out["1"].count(b"exec-t") >= n
