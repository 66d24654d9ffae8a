"""Sub-pipelines (a ``@up.pipeline`` called inside another): the groups they trace into, the
reference runner's rule 11, and bad input named by file, line and field (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pipelines.usermodule import line_of as _line
from pipelines.usermodule import user_module as _module

import unipipe as up
from unipipe.authoring.loader import load_ir
from unipipe.ir import PipelineError
from unipipe.ir import models as m
from unipipe.ir.features import Feature, features_used
from unipipe.ir.groups import children, members, upstream_outside, used_outside

NESTED = """
    @up.task
    def load(n: int) -> list:
        return list(range(n))

    @up.task
    def count(rows: list) -> int:
        return len(rows)

    @up.task(retries=3)
    def double(rows: list) -> list:
        return [r * 2 for r in rows]

    @up.task
    def total(a: list, b: int) -> int:
        return sum(a) + b

    @up.pipeline(name="check")
    def check(rows: list):
        return count(rows)

    @up.pipeline(name="prep", retries=1, retry_delay="2s",
                 defaults=up.Defaults(retry=up.Retry(max_retries=1), timeout="30s"),
                 alerts=[up.Alert(on=("failure",), webhook="env:NO_SUCH_HOOK")])
    def prep(rows: list, factor: int = 2):
        '''Doubles and checks.'''
        doubled = double(rows)
        return {"doubled": doubled, "n": check(doubled)}

    @up.pipeline(name="outer")
    def outer(n: int = 3):
        rows = load(n)
        first = prep(rows)
        second = prep(rows, factor=3)
        return total(first["doubled"], second["n"])
"""


def test_a_sub_pipeline_call_becomes_a_group_with_prefixed_task_ids(tmp_path):
    path = _module(tmp_path, NESTED)
    ir = load_ir(f"{path}:outer")
    assert [t.id for t in ir.tasks] == [
        "load", "prep__double", "prep__check__count", "prep_2__double",
        "prep_2__check__count", "total"]
    assert [(g.id, g.pipeline, g.parent) for g in ir.groups] == [
        ("prep", "prep", None), ("prep__check", "check", "prep"),
        ("prep_2", "prep", None), ("prep_2__check", "check", "prep_2")]
    prep = ir.group("prep")
    assert (prep.retries, prep.retry_delay, prep.doc) == (1, 2.0, "Doubles and checks.")
    assert prep.alerts[0].webhook == "env:NO_SUCH_HOOK" and ir.group("prep__check").alerts == ()
    assert prep.location.line == _line(path, "first = prep(rows)")
    assert ir.task("prep__check__count").group == "prep__check"
    assert ir.task("load").group is None and ir.task("prep__double").group == "prep"
    # the sub-pipeline's defaults reach its tasks (inner groups' too); a task's own setting wins
    assert ir.effective("prep__check__count").retry.max_retries == 1
    assert ir.effective("prep__check__count").timeout == 30.0
    assert ir.effective("prep__double").retry.max_retries == 3
    assert ir.effective("load").retry is None and ir.effective("total").timeout is None
    used = features_used(ir)
    assert {Feature.SUBPIPELINE, Feature.SUBPIPELINE_RETRY, Feature.SUBPIPELINE_ALERT} <= set(used)


def test_groups_order_as_one_unit_and_name_their_boundary(tmp_path):
    ir = load_ir(f"{_module(tmp_path, NESTED)}:outer")
    assert [(n.kind, n.id) for n in children(ir)] == [
        ("task", "load"), ("group", "prep"), ("group", "prep_2"), ("task", "total")]
    assert [(n.kind, n.id) for n in children(ir, "prep")] == [
        ("task", "prep__double"), ("group", "prep__check")]
    assert members(ir, "prep") == ["prep__double", "prep__check__count"]
    assert upstream_outside(ir, "prep") == ["load"]
    assert upstream_outside(ir, "prep__check") == ["prep__double"]
    assert used_outside(ir, "prep") == ["prep__double"]  # total reads it; count is unused
    assert used_outside(ir, "prep_2") == ["prep_2__check__count"]


def test_pipelines_without_groups_keep_their_ir_hash(tmp_path):
    ir = load_ir("pipelines.features:fanout")
    assert ir.groups == () and all(t.group is None for t in ir.tasks)
    assert ir.ir_hash() == ir.model_copy(update={"groups": ()}).ir_hash()
    grouped = load_ir(f"{_module(tmp_path, NESTED)}:outer")
    assert grouped.ir_hash() != grouped.model_copy(update={"groups": grouped.groups[:2]}).ir_hash()


def test_a_sub_pipeline_that_calls_itself_is_named_at_the_call(tmp_path):
    path = _module(tmp_path, """
        @up.task
        def one() -> int:
            return 1

        @up.pipeline(name="ping")
        def ping():
            one()
            return pong()  # the call that closes the loop is in pong

        @up.pipeline(name="pong")
        def pong():
            return ping()

        @up.pipeline(name="top")
        def top():
            return ping()
        """)
    with pytest.raises(PipelineError) as info:
        load_ir(f"{path}:top")
    (prob,) = info.value.problems
    assert (prob.file, prob.line, prob.field) == (str(path), _line(path, "return ping()"),
                                                  "pipeline")
    assert "calls itself (ping -> pong -> ping)" in prob.message


def test_cli_validate_of_a_self_calling_sub_pipeline_exits_2(tmp_path):
    path = _module(tmp_path, """
        @up.task
        def one() -> int:
            return 1

        @up.pipeline(name="loop")
        def loop():
            one()
            return loop()
        """)
    proc = subprocess.run([sys.executable, "-m", "unipipe.cli", "validate", f"{path}:loop"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    flat = proc.stderr.replace("\n", "")
    assert f"{path}:{_line(path, 'return loop()')}" in flat and "calls itself" in flat


@pytest.mark.parametrize("body, needle, field, words", [
    ("""
        @up.pipeline(name="sub", timeout="1m")
        def sub(x: int):
            return one(x)

        @up.pipeline(name="top")
        def top():
            return sub(1)
        """, '@up.pipeline(name="sub"', "timeout", "timeout= does not apply"),
    ("""
        @up.pipeline(name="sub")
        def sub(x: int):
            return one(x)

        @up.pipeline(name="top")
        def top():
            return sub(1, 2)
        """, "return sub(1, 2)", "sub", "bad arguments for sub-pipeline 'sub'"),
    ("""
        @up.pipeline(name="sub")
        def sub(x: int):
            return one(x)

        @up.pipeline(name="top")
        def top():
            return sub({1, 2})
        """, "return sub({1, 2})", "sub.x", "not JSON-serialisable"),
    ("""
        @up.pipeline(name="sub")
        def sub(x: list):
            return one(1)

        @up.pipeline(name="top")
        def top():
            return sub([one(2)])
        """, "return sub([one(2)])", "sub.x", "cannot be a sub-pipeline argument"),
])
def test_bad_sub_pipeline_calls_name_the_line_and_field(tmp_path, body, needle, field, words):
    path = _module(tmp_path, """
        @up.task
        def one(x: int) -> int:
            return x
        """ + body)
    with pytest.raises(PipelineError) as info:
        load_ir(f"{path}:top")
    (prob,) = info.value.problems
    assert (prob.file, prob.line, prob.field) == (str(path), _line(path, needle), field)
    assert words in prob.message


def test_a_task_between_the_members_of_a_group_is_refused():
    h = "a" * 64
    ir = m.Pipeline(name="p", groups=(m.Group(id="g", pipeline="sub"),), tasks=(
        m.Task(id="g__a", fn="mod:a", source_hash=h, group="g"),
        m.Task(id="mid", fn="mod:m", source_hash=h, after=("g__a",)),
        m.Task(id="g__b", fn="mod:b", source_hash=h, group="g", after=("mid",)),
    ))
    from unipipe.ir.validate import validate

    with pytest.raises(PipelineError) as info:
        validate(ir)
    (prob,) = info.value.problems
    assert prob.field == "groups" and "runs as one unit" in prob.message


def test_unknown_groups_and_id_clashes_are_refused():
    h = "a" * 64
    ir = m.Pipeline(name="p", groups=(m.Group(id="a", pipeline="s", parent="zz"),), tasks=(
        m.Task(id="a", fn="mod:a", source_hash=h, group="nope"),))
    from unipipe.ir.validate import validate

    with pytest.raises(PipelineError) as info:
        validate(ir)
    assert sorted((p.field, p.message) for p in info.value.problems) == [
        ("groups.a", "parent 'zz' is not a sub-pipeline listed before this one"),
        ("groups.a", "sub-pipeline id 'a' is also a task id"),
        ("tasks.a.group", "names unknown sub-pipeline 'nope'"),
    ]


# ---------------------------------------------------------------- the reference runner, rule 11

RETRIED = """
    import json

    from unipipe.runtime.store import read_bytes, write_bytes

    @up.task(cache=up.Cache())
    def load(n: int) -> int:
        return n * 10

    @up.task
    def flaky(x: int, fail_tries: int) -> int:
        url = f"{up.current().scratch_url()}/tries.json"
        raw = read_bytes(url)
        tries = (json.loads(raw) if raw else 0) + 1
        write_bytes(url, json.dumps(tries).encode())
        if tries <= fail_tries:
            raise ConnectionError(f"try {tries}")
        return x + tries

    @up.task
    def gate(n: int) -> bool:
        return n > 0

    @up.pipeline(name="sub", retries=2,
                 alerts=[up.Alert(on=("failure", "success"), webhook="env:UNIPIPE_NO_HOOK")])
    def sub(n: int, fail_tries: int):
        return flaky(load(n), fail_tries)

    @up.pipeline(name="top")
    def top(n: int = 1, fail_tries: int = 1):
        with up.when(gate(n)):
            out = sub(n, fail_tries)
        return out
"""


def _group_alerts(result):
    return [(a["task"], a["event"]) for a in result.alerts]


@pytest.mark.parametrize("fail_tries, state, attempts, output, alerts", [
    (0, "success", 1, 11, [("group:sub", "success")]),
    (1, "success", 1, 12, [("group:sub", "success")]),      # the group's second try
    (2, "success", 1, 13, [("group:sub", "success")]),      # its third (retries=2)
    (3, "failed", 1, None, [("group:sub", "failure")]),     # exhausted: one alert
])
def test_a_failed_group_is_tried_again_as_a_whole_and_alerts_once(
        tmp_path, monkeypatch, fail_tries, state, attempts, output, alerts):
    monkeypatch.delenv("UNIPIPE_NO_HOOK", raising=False)
    path = _module(tmp_path, RETRIED)
    ir = load_ir(f"{path}:top")
    result = up.run(ir, backend="local", params={"n": 1, "fail_tries": fail_tries})
    assert result.state == state and result.output == output
    flaky = result.tasks["sub__flaky"]
    assert (flaky.state, flaky.attempts) == ("success" if output else "failed", attempts)
    # load ran once, in the first try; every later try of the group hit its cache entry
    assert result.tasks["sub__load"].cache_hit is (fail_tries > 0)
    assert _group_alerts(result) == alerts
    assert result.run_attempts == 1


def test_a_group_that_never_ran_sends_no_alert(tmp_path, monkeypatch):
    monkeypatch.delenv("UNIPIPE_NO_HOOK", raising=False)
    ir = load_ir(f"{_module(tmp_path, RETRIED)}:top")
    result = up.run(ir, backend="local", params={"n": 0, "fail_tries": 0})
    assert result.state == "success" and result.output is None
    assert {t: r.state for t, r in result.tasks.items()} == {
        "gate": "success", "sub__load": "skipped", "sub__flaky": "skipped"}
    assert result.alerts == []


def test_a_pipeline_is_still_not_called_outside_a_pipeline(tmp_path):
    from importlib import import_module

    path = _module(tmp_path, NESTED)
    sys.path.insert(0, str(path.parent))
    try:
        mod = import_module(path.stem)
        with pytest.raises(TypeError, match="inside another @up.pipeline as a sub-pipeline"):
            mod.prep([1])
    finally:
        sys.path.remove(str(path.parent))


# ---------------------------------------------------------------- mapped sub-pipelines, rule 12

MAPPED = """
    @up.task
    def shards(n: int) -> list:
        return [{"id": i} for i in range(n)]

    @up.task
    def load(shard: dict, base: int) -> int:
        if shard["id"] == 1 and base < 0:
            raise ValueError("bad shard")
        return shard["id"] + base

    @up.task
    def double(x: int) -> int:
        return 2 * x

    @up.task
    def total(xs: list) -> int:
        return sum(xs)

    @up.pipeline(name="per-shard")
    def per_shard(shard: dict, base: int):
        return double(load(shard, base))

    @up.pipeline(name="top")
    def top(n: int = 3, base: int = 10):
        return total(per_shard.map(shard=shards(n), base=base, max_parallel=2))
"""


def test_a_mapped_sub_pipeline_reads_its_item_as_an_element_input(tmp_path):
    ir = load_ir(f"{_module(tmp_path, MAPPED)}:top")
    (group,) = ir.groups
    assert (group.id, group.map_over, group.max_parallel) == ("per_shard", "shard", 2)
    assert group.items == m.OutputInput(task="shards")
    load_task = ir.task("per_shard__load")
    assert load_task.inputs["shard"] == m.ElementInput(group="per_shard")
    assert load_task.inputs["base"] == m.ParamInput(name="base")
    assert [(n.kind, n.id) for n in children(ir)] == [
        ("task", "shards"), ("group", "per_shard"), ("task", "total")]
    assert upstream_outside(ir, "per_shard") == ["shards"]
    assert Feature.SUBPIPELINE_MAP in features_used(ir)


@pytest.mark.parametrize("base, state, output, copies", [
    (10, "success", 66, {"per_shard__double[1]": ("success", 22)}),
    (-1, "failed", None, {"per_shard__load[1]": ("failed", None),
                          "per_shard__double[1]": ("upstream_failed", None),
                          "per_shard__double[2]": ("success", 2)}),
])
def test_each_copy_of_a_mapped_group_runs_on_its_own(tmp_path, base, state, output, copies):
    ir = load_ir(f"{_module(tmp_path, MAPPED)}:top")
    result = up.run(ir, backend="local", params={"n": 3, "base": base})
    assert (result.state, result.output) == (state, output)
    for label, (st, out) in copies.items():
        assert (result.tasks[label].state, result.tasks[label].output) == (st, out)
    if state == "success":
        assert result.tasks["per_shard__double"].output == [20, 22, 24]
    else:
        assert result.tasks["per_shard__load"].state == "failed"
        assert result.tasks["per_shard__double"].state == "upstream_failed"
        assert result.tasks["total"].state == "upstream_failed"


@pytest.mark.parametrize("sub, call, needle, field, words", [
    ("""
        @up.pipeline(name="sub", retries=1)
        def sub(x: int):
            return one(x)
        """, "sub.map(x=[1, 2])", "sub.map(", "groups.sub", "no retries= or alerts="),
    ("""
        @up.pipeline(name="sub")
        def sub(x: int):
            with up.when(gate(x)):
                y = one(x)
            return y
        """, "sub.map(x=[1, 2])", "y = one(x)", "tasks.sub__one.when", "up.when()"),
    ("""
        @up.pipeline(name="sub")
        def sub(x: int):
            return one.map(x=x)
        """, "sub.map(x=[1, 2])", "return one.map", "tasks.sub__one.map_over", "nested"),
    ("""
        @up.pipeline(name="sub")
        def sub(x: int):
            return one(x)
        """, "sub.map(x=5)", "sub.map(", "map.x", "fans out over a list"),
    ("""
        @up.pipeline(name="sub")
        def sub(x: int):
            return one(x)
        """, "sub.map(x=[1], max_parallel=0)", "sub.map(", "map.max_parallel", ">= 1"),
])
def test_bad_mapped_sub_pipelines_name_the_line_and_field(tmp_path, sub, call, needle, field,
                                                           words):
    path = _module(tmp_path, """
        @up.task
        def one(x: int) -> int:
            return x

        @up.task
        def gate(x: int) -> bool:
            return x > 0
        """ + sub + f"""
        @up.pipeline(name="top")
        def top():
            return {call}
        """)
    with pytest.raises(PipelineError) as info:
        load_ir(f"{path}:top")
    probs = info.value.problems
    assert [(p.file, p.line, p.field) for p in probs] == [(str(path), _line(path, needle), field)]
    assert words in probs[0].message
