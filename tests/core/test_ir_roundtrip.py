"""Every IR field survives a JSON (and YAML) round trip."""

from __future__ import annotations

import json

import pytest

from unipipe.ir import dump_ir, json_schema, load_ir_data
from unipipe.ir import models as m

H = "a" * 64


def full_pipeline(interval: bool = False) -> m.Pipeline:
    """A pipeline that sets every field of every model to a non-default value."""
    retry = m.Retry(max_retries=3, delay=2.0, backoff=2.0, max_delay=60.0, jitter=0.1,
                    retry_on=("builtins:ConnectionError",), fail_on=("builtins:ValueError",))
    alert = m.Alert(on=("failure", "retry", "success"), webhook="env:HOOK",
                    email=("ops@example.com",), callback="mod.alerts:notify")
    pol = m.Policies(retry=retry, cache=m.Cache(version="2", expire=3600.0, key_fn="mod:key"),
                     timeout=600.0, resources=m.Resources(cpu="2", memory="4Gi", gpu=1, gpu_type="nvidia-tesla-t4"),
                     image="python:3.11-slim", alerts=(alert,))
    loc = m.SourceLocation(file="/src/p.py", line=12)
    t1 = m.Task(id="a", fn=m.COMMAND_FN, source_hash=H, inputs={
        "x": m.LiteralInput(value={"k": [1, 2.5, None, True, "s"]}),
        "p": m.ParamInput(name="n", path=("inner", 0)),
    }, returns="dict", policies=pol, doc="first", location=loc,
        command=("python3", "-c", "print({x})", "--p={p}"), env={"MODE": "fast"})
    t2 = m.Task(id="b", fn="mod:b", source_hash=H, inputs={"v": m.OutputInput(task="a", path=("k", 1))},
                after=("a",), when=(m.Condition(task="a", path=("ok",), expect=False, otherwise=True),),
                map_over="v", returns="list", max_parallel=3)
    t3 = m.Task(id="c", fn="mod:c", source_hash=H, after=("a", "b"), run_if="all_done",
                group="inner")
    outer = m.Group(id="outer", pipeline="prep", retries=2, retry_delay=5.0,
                    alerts=(alert,), doc="a sub-pipeline", location=loc, parent=None)
    inner = m.Group(id="inner", pipeline="check", parent="outer")
    fan = m.Group(id="fan", pipeline="per-item", map_over="item",
                  items=m.LiteralInput(value=[{"k": 1}, {"k": 2}]), max_parallel=2)
    t4 = m.Task(id="d", fn="mod:d", source_hash=H, group="fan",
                inputs={"item": m.ElementInput(group="fan", path=("k",))})
    t5 = m.Task(id="e", fn="mod:e", source_hash=H, logs=("metrics", "report"),
                packages=("scikit-learn==1.5.2", "pandas[parquet]>=2,<3"), artifacts={
                    "model": m.ArtifactSlot(direction="output", type="Model"),
                    "seed": m.ArtifactSlot(direction="input", type="Dataset",
                                           uri="s3://bucket/seed.csv")})
    t6 = m.Task(id="f", fn="mod:f", source_hash=H, produces=("s3://lake/features",),
                artifacts={
        "model": m.ArtifactSlot(direction="input", type="Artifact", task="e", output="model")})
    return m.Pipeline(
        name="every-field", description="desc", module="mod", location=loc,
        params=(m.Param(name="n", type="dict", default={"inner": [1]}, required=False, description="d"),
                m.Param(name="r", type="int", required=True)),
        tasks=(t1, t2, t3, t4, t5, t6),
        output=m.DictValue(items={"a": m.OutputInput(task="a"), "l": m.ListValue(items=(
            m.LiteralInput(value=1), m.ParamInput(name="r")))}),
        schedule=(m.Schedule(interval=900.0, timezone="UTC", start="2024-01-01T06:00",
                             end="2024-12-31") if interval
                  else m.Schedule(cron="0 2 * * *", timezone="Europe/Paris",
                                  start="2024-01-01", end="2025-01-01T00:00:00+01:00",
                                  catchup=True)),
        trigger=m.Trigger(assets=("s3://lake/raw", "gs://b/t?a=1"), mode="any"),
        defaults=m.Policies(retry=m.Retry(max_retries=1), timeout=30.0),
        alerts=(m.Alert(on=("failure",), email=("a@b.c",)),),
        tags=("ml", "x"), store="s3://bucket/unipipe", max_active_runs=2,
        retries=2, retry_delay=30.0, timeout=3600.0, groups=(outer, inner, fan),
    )


def _all_set(model: object, path: str = "") -> list[str]:
    """Fields still at their default somewhere in the tree (the test wants none)."""
    unset = []
    if isinstance(model, m._Model):
        for name in type(model).model_fields:
            value = getattr(model, name)
            if name not in model.model_fields_set and name not in ("schema_version", "kind"):
                unset.append(f"{path}.{name}")
            unset += _all_set(value, f"{path}.{name}")
    elif isinstance(model, (list, tuple)):
        for i, v in enumerate(model):
            unset += _all_set(v, f"{path}[{i}]")
    elif isinstance(model, dict):
        for k, v in model.items():
            unset += _all_set(v, f"{path}.{k}")
    return unset


def test_fixture_sets_every_field():
    covered = set()

    def walk(node):
        if isinstance(node, m._Model):
            covered.update(f"{type(node).__name__}.{f}" for f in node.model_fields_set)
            for f in type(node).model_fields:
                walk(getattr(node, f))
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)

    walk(full_pipeline())
    walk(full_pipeline(interval=True))
    expected = {f"{cls.__name__}.{f}" for cls in (m.Retry, m.Cache, m.Resources, m.Alert, m.Schedule,
                                                   m.Policies, m.Param, m.Condition, m.Task, m.Pipeline,
                                                   m.SourceLocation, m.Group, m.ArtifactSlot, m.Trigger)
                for f in cls.model_fields} - {"Pipeline.schema_version"}
    assert expected - covered == set()



@pytest.mark.parametrize("interval", [False, True])
def test_json_round_trip_keeps_every_field(interval):
    ir = full_pipeline(interval)
    text = dump_ir(ir, "json")
    back = load_ir_data(json.loads(text))
    assert back == ir
    assert back.ir_hash() == ir.ir_hash()
    assert dump_ir(back, "json") == text


def test_yaml_round_trip_keeps_every_field():
    import yaml

    ir = full_pipeline()
    back = load_ir_data(yaml.safe_load(dump_ir(ir, "yaml")))
    assert back == ir


def test_ir_hash_ignores_locations_but_not_content():
    ir = full_pipeline()
    moved = ir.model_copy(update={"location": m.SourceLocation(file="/else.py", line=99)})
    assert moved.ir_hash() == ir.ir_hash()
    renamed = ir.model_copy(update={"description": "other"})
    assert renamed.ir_hash() != ir.ir_hash()


def test_models_are_frozen():
    ir = full_pipeline()
    try:
        ir.name = "x"  # type: ignore[misc]
    except Exception as exc:  # pydantic raises ValidationError for frozen instances
        assert "frozen" in str(exc)
    else:
        raise AssertionError("Pipeline must be frozen")


def test_json_schema_describes_the_pipeline():
    schema = json_schema()
    assert schema["title"] == "unipipe pipeline IR"
    assert {"name", "tasks", "params", "schema_version"} <= set(schema["properties"])
    assert "Retry" in schema["$defs"] and "max_retries" in schema["$defs"]["Retry"]["properties"]


def test_task_lookup_follows_model_copy():
    """Pipeline.task indexes the tasks once; a copy with other tasks must not see the old index."""
    p = m.Pipeline(name="p", tasks=(m.Task(id="a", fn="mod:a", source_hash="0" * 64),
                                    m.Task(id="b", fn="mod:b", source_hash="0" * 64)))
    assert p.task("b").fn == "mod:b"
    q = p.model_copy(update={"tasks": (m.Task(id="b", fn="mod:other", source_hash="0" * 64),)})
    assert q.task("b").fn == "mod:other"
    assert p.task("b").fn == "mod:b"
    with pytest.raises(KeyError, match="'a'"):
        q.task("a")
    assert p.model_dump() == m.Pipeline.model_validate_json(p.model_dump_json()).model_dump()


def test_run_if_values_match_the_ir_literal():
    """Authoring checks run_if against a tuple that loads no pydantic; it must list the IR's."""
    import typing

    from unipipe.result import RUN_IF_VALUES

    assert typing.get_args(m.RunIf) == RUN_IF_VALUES
