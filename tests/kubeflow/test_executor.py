"""The executor's KFP/Argo semantics, pinned with hand-written kfp.dsl pipelines."""

from __future__ import annotations

from pathlib import Path

import native_specs as ns
import pytest
from kfp import compiler
from unipipe_kubeflow.executor import SpecError, SpecExecutor, evaluate_condition, fingerprint

HERE = Path(__file__).resolve().parent


class FakeTime:
    """sleep() advances clock(): retry budgets are checked without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def run(pipeline, tmp_path, args=None, fake=None, root=None):
    yaml_path = tmp_path / f"{pipeline.name}.yaml"
    if not yaml_path.exists():
        compiler.Compiler().compile(pipeline, str(yaml_path))
    kw = {"sleep": fake.sleep, "clock": fake.clock} if fake else {}
    import os

    env = dict(os.environ, PYTHONPATH=str(HERE))
    ex = SpecExecutor(yaml_path, pipeline_root=root or tmp_path / "root", env=env, **kw)
    return ex.run(args or {})


def by_display(record):
    out = {}
    for e in record.executions:
        out.setdefault(e.display, []).append(e)
    return out


def test_retry_k_waits_duration_times_factor_power(tmp_path):
    fake = FakeTime()
    record = run(ns.retry_formula, tmp_path, fake=fake)
    exe = by_display(record)["fail-until"][0]
    assert record.state == "SUCCEEDED"
    assert [lc.attempt for lc in exe.launches] == [1, 2, 3]
    assert fake.slept == [2.0, 6.0]  # 2 * 3**0, 2 * 3**1
    assert exe.outputs == {"Output": 3}


def test_backoff_max_duration_is_a_total_budget(tmp_path):
    fake = FakeTime()
    record = run(ns.retry_budget, tmp_path, fake=fake)
    exe = by_display(record)["fail-until"][0]
    # waits 2 (t=2), 4 (t=6); the next (8 s) would end at 14 > 7: no fourth attempt
    assert fake.slept == [2.0, 4.0]
    assert len(exe.launches) == 3 and exe.state == "FAILED"
    assert "budget" in exe.reason


@pytest.mark.parametrize("flag,inside", [("yes", "SUCCEEDED"), ("no", "SKIPPED")])
def test_if_body_runs_only_when_true_and_exit_task_gets_final_status(tmp_path, flag, inside):
    record = run(ns.exit_and_if, tmp_path, args={"flag": flag})
    tasks = by_display(record)
    echoes = {e.outputs.get("Output", e.state) for e in tasks["echo"] + tasks.get("echo-2", [])}
    assert record.state == "FAILED"  # fail_until never succeeds
    inside_exe = [e for e in tasks.get("echo-2", [])]
    assert inside_exe and inside_exe[0].state == inside
    assert flag in echoes
    final = tasks["final-state"][0]
    assert final.state == "SUCCEEDED" and final.outputs["Output"] == "FAILED|exit-handler-1"


def test_native_cache_hits_on_same_inputs_and_misses_on_new_ones(tmp_path):
    root = tmp_path / "shared-root"
    first = by_display(run(ns.cached_echo, tmp_path, root=root))["echo"][0]
    second = by_display(run(ns.cached_echo, tmp_path, root=root))["echo"][0]
    other = by_display(run(ns.cached_echo, tmp_path, args={"text": "b"}, root=root))["echo"][0]
    assert (first.state, len(first.launches)) == ("SUCCEEDED", 1)
    assert (second.state, len(second.launches), second.outputs) == ("CACHED", 0, {"Output": "a"})
    assert second.fingerprint == first.fingerprint
    assert (other.state, other.outputs) == ("SUCCEEDED", {"Output": "b"})


def test_fingerprint_covers_inputs_command_and_image_or_only_the_cache_key():
    comp = {"outputDefinitions": {"parameters": {"Output": {"parameterType": "STRING"}}}}
    cont = {"image": "python:3.11", "command": ["sh"], "args": ["x"]}
    base = fingerprint("p", "comp-a", comp, cont, {"t": 1}, None)
    assert base != fingerprint("p", "comp-a", comp, cont, {"t": 2}, None)
    assert base != fingerprint("p", "comp-a", comp, dict(cont, args=["y"]), {"t": 1}, None)
    assert base != fingerprint("p", "comp-a", comp, dict(cont, image="python:3.12"), {"t": 1}, None)
    keyed = fingerprint("p", "comp-a", comp, cont, {"t": 1}, "k1")
    assert keyed == fingerprint("p", "comp-a", comp, dict(cont, args=["y"]), {"t": 9}, "k1")
    assert keyed != fingerprint("p", "comp-b", comp, cont, {"t": 1}, "k1")


def test_active_deadline_kills_the_task(tmp_path):
    record = run(ns.deadline, tmp_path)
    exe = by_display(record)["nap"][0]
    assert exe.state == "FAILED" and exe.launches[0].timed_out
    assert exe.launches[0].end - exe.launches[0].start < 30


def test_parallel_for_over_raw_items_runs_each_in_order_then_downstream(tmp_path):
    record = run(ns.loop, tmp_path)
    tasks = by_display(record)
    loop = sorted(tasks["echo"], key=lambda e: e.iterations)
    assert [(e.iterations, e.outputs["Output"]) for e in loop] == [((0,), "x"), ((1,), "y"), ((2,), "z")]
    assert tasks["echo-2"][0].outputs["Output"] == "after"


@pytest.mark.parametrize("expr,values,expected", [
    ("inputs.parameter_values['a'] == true", {"a": True}, True),
    ("inputs.parameter_values['a'] == true", {"a": False}, False),
    ("inputs.parameter_values['a'] == 'yes'", {"a": "yes"}, True),
    ("!(inputs.parameter_values['a'] == 'yes')", {"a": "yes"}, False),
    ("inputs.parameter_values['n'] > 2 && inputs.parameter_values['a'] != 'x'", {"n": 3, "a": "y"}, True),
    ("int(inputs.parameter_values['n']) >= 4 || inputs.parameter_values['b'] == false",
     {"n": 3, "b": False}, True),
])
def test_condition_subset_of_cel(expr, values, expected):
    assert evaluate_condition(expr, values) is expected


def test_condition_rejects_anything_else():
    with pytest.raises(SpecError):
        evaluate_condition("__import__('os').system('true')", {})


def test_consumer_of_a_missing_output_fails_like_the_kfp_driver(tmp_path):
    record = run(ns.missing_output, tmp_path)
    tasks = by_display(record)
    assert tasks["nothing"][0].state == "SUCCEEDED" and tasks["nothing"][0].outputs == {}
    echo = tasks["echo"][0]
    assert (echo.state, echo.launches) == ("FAILED", [])
    assert "produced no output 'Output'" in echo.reason
    assert record.state == "FAILED"
