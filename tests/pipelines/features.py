"""Small pipelines, one feature each, shared by the core and every backend's tests.

Faults are injected through ``up.current().attempt`` so they behave the same on every engine.
"""

from __future__ import annotations

import time

import unipipe as up

# ---------------------------------------------------------------- data flow


@up.task
def make_numbers(n: int) -> list:
    return list(range(1, n + 1))


@up.task
def square(x: int) -> int:
    return x * x


@up.task
def total(values: list) -> int:
    return sum(values)


@up.task
def describe(values: list, label: str) -> dict:
    return {"label": label, "count": len(values), "max": max(values) if values else None}


@up.task
def touch(tag: str) -> str:
    return tag


@up.pipeline(name="fanout")
def fanout(n: int = 4, label: str = "squares {{ ds }}"):
    """Map over an upstream list, reduce, select a key from a dict output, order with after()."""
    nums = make_numbers(n)
    squares = square.map(x=nums)
    summary = describe(squares, label)
    last = touch("done").after(summary)
    return {"squares": squares, "total": total(squares), "label": summary["label"], "last": last}


# ---------------------------------------------------------------- retries


@up.task(retry=up.Retry(max_retries=3, delay="1s", backoff=2.0, max_delay="3s",
                        retry_on=(ConnectionError,)))
def flaky(fail_times: int) -> str:
    attempt = up.current().attempt
    if attempt <= fail_times:
        raise ConnectionError(f"attempt {attempt} failed on purpose")
    return f"ok after {attempt}"


@up.pipeline(name="retry-then-succeed")
def retry_then_succeed(fail_times: int = 2):
    return flaky(fail_times)


@up.task(retries=2, alerts=[up.Alert(on=("retry", "failure"), webhook="env:UNIPIPE_TEST_WEBHOOK")])
def always_fails() -> None:
    raise RuntimeError("this task always fails")


@up.task
def never_runs(x: object) -> str:
    return "unreachable"


@up.task
def independent() -> str:
    return "still ran"


@up.pipeline(name="retries-exhausted",
             alerts=[up.Alert(on=("failure",), email=("oncall@example.com",))],
             defaults=up.Defaults(retry=up.Retry(max_retries=2, delay="0.2s")))
def retries_exhausted():
    bad = always_fails()
    never_runs(bad)
    return independent()


@up.task(retry=up.Retry(max_retries=3, delay="0.2s", fail_on=(ValueError,)))
def bad_value() -> None:
    raise ValueError("not retryable")


@up.pipeline(name="non-retryable")
def non_retryable():
    return bad_value()


@up.task(retry=up.Retry(max_retries=2, delay="0.5s", jitter=0.5))
def jittery(fail_times: int) -> int:
    if up.current().attempt <= fail_times:
        raise ConnectionError("again")
    return up.current().attempt


@up.pipeline(name="jitter")
def jitter(fail_times: int = 2):
    return jittery(fail_times)


# ---------------------------------------------------------------- cache


@up.task(cache=up.Cache(expire="1h", version="1"))
def expensive(x: int) -> dict:
    return {"x": x, "at": time.time()}


@up.pipeline(name="cached")
def cached(x: int = 3):
    return expensive(x)


# ---------------------------------------------------------------- timeout


@up.task(timeout="2s", retries=1)
def hangs(seconds: float) -> str:
    time.sleep(seconds)
    return "woke up"


@up.pipeline(name="timeout")
def timeout(seconds: float = 30.0):
    return hangs(seconds)


# ---------------------------------------------------------------- conditions


@up.task
def score(value: float) -> dict:
    return {"value": value}


@up.task
def passes(metrics: dict, threshold: float) -> bool:
    return metrics["value"] >= threshold


@up.task
def register(metrics: dict) -> str:
    return f"registered {metrics['value']}"


@up.task
def after_register(name: str) -> str:
    return name.upper()


@up.pipeline(name="quality-gate")
def quality_gate(value: float = 0.9, threshold: float = 0.8):
    metrics = score(value)
    with up.when(passes(metrics, threshold)):
        name = register(metrics)
        shout = after_register(name)
    return {"metrics": metrics, "registered": name, "shout": shout}


# ---------------------------------------------------------------- if/else and cleanup


@up.task
def train_big(metrics: dict) -> str:
    return f"big model at {metrics['value']}"


@up.task
def train_small(metrics: dict) -> str:
    return f"small model at {metrics['value']}"


@up.task(run_if="all_done")
def clean_scratch(where: str) -> str:
    return f"cleaned {where}"


@up.task(run_if="one_failed")
def page_oncall(where: str) -> str:
    return f"paged about {where}"


@up.pipeline(name="cleanup-else")
def cleanup_else(value: float = 0.9, threshold: float = 0.8, where: str = "scratch/"):
    """An if/else on a gate, then a cleanup that runs whatever the branches ended as."""
    metrics = score(value)
    gate = passes(metrics, threshold)
    with up.when(gate):
        big = train_big(metrics)
    with up.otherwise():
        small = train_small(metrics)
    clean_scratch(where).after(metrics, gate)
    return {"big": big, "small": small}


@up.pipeline(name="failure-path")
def failure_path(value: float = 0.9, where: str = "scratch/"):
    """A cleanup (all_done) and a failure path (one_failed) after the same task."""
    metrics = score(value)
    clean_scratch(where).after(metrics)
    page_oncall(where).after(metrics)
    return metrics


# ---------------------------------------------------------------- alerts on success


@up.task(alerts=[up.Alert(on=("success",), webhook="env:UNIPIPE_TEST_WEBHOOK")])
def announce(text: str) -> str:
    return text


@up.pipeline(name="success-alert",
             alerts=[up.Alert(on=("success",), webhook="env:UNIPIPE_TEST_WEBHOOK")])
def success_alert(text: str = "hello"):
    return announce(text)


# ---------------------------------------------------------------- command tasks


count_words = up.command(
    "count_words",
    command=["python3", "-c", "import json, sys; print(json.dumps(len(sys.argv[1].split())))",
             "{text}"],
    env={"LC_ALL": "C.UTF-8"}, retries=2, timeout="30s")
tag_image = up.command("tag_image", command=["python3", "-c", "import sys; print(sys.argv[1])",
                                             "--words={words}"],
                       image="python:3.12-slim")


@up.task
def report(words: int, tagged: str) -> str:
    return f"{words} words, {tagged}"


@up.pipeline(name="command-tasks")
def command_tasks(text: str = "one two three"):
    words = count_words(text=text)
    tagged = tag_image(words=words)
    return report(words, tagged)


@up.task
def shift(x: int, by: int) -> int:
    return x + by


@up.pipeline(name="limits", max_active_runs=1)
def limits(n: int = 4, offset: int = 1):
    """At most two squares at once, and one run of the pipeline at a time."""
    numbers = make_numbers(n)
    squares = square.map(x=numbers, max_parallel=2)
    shifted = shift.map(x=numbers, by=offset, max_parallel=3)
    return [total(squares), total(shifted)]


@up.pipeline(name="run-retries", retries=2, retry_delay="1m", timeout="2h")
def run_retries(n: int = 4, offset: int = 1):
    """The whole run is tried up to three times, a minute apart; each try may take two hours."""
    return shift(total(square.map(x=make_numbers(n))), offset)


@up.pipeline(name="run-timeout", timeout="45m")
def run_timeout(n: int = 4, offset: int = 1):
    """A run past 45 minutes fails, its running task stopped."""
    return shift(total(square.map(x=make_numbers(n))), offset)


@up.task
def add_one(x: int) -> int:
    return x + 1


@up.pipeline(name="one-callable")
def one_callable(start: int = 0):
    """One function called five times, as a person writes a chain: the generated code defines
    the task function once per distinct definition and calls it once per task."""
    x = add_one(start)
    for _ in range(4):
        x = add_one(x)
    return x
