"""Pipelines for features the shared set does not exercise on its own (Prefect backend tests)."""

from __future__ import annotations

import time

import unipipe as up


def shard_key(inputs: dict) -> str:
    """A user cache key: only the shard's length matters."""
    return f"len={len(inputs['shard'])}"


@up.task(cache=up.Cache(key_fn="pipelines_prefect:shard_key", version="2"))
def slow_len(shard: list) -> dict:
    return {"len": len(shard), "at": time.time()}


@up.pipeline(name="cache-key-fn")
def cache_key_fn(shard: list = [1, 2, 3]):  # noqa: B006 - a JSON default, never mutated
    return slow_len(shard)


@up.task(cache=up.Cache(version="1"))
def stamp(x: int) -> dict:
    return {"x": x, "at": time.time()}


@up.pipeline(name="cache-version")
def cache_version(x: int = 1):
    return stamp(x)


@up.task(retry=up.Retry(max_retries=2, delay="1s", jitter=1.0))
def wobbly(fail_times: int) -> int:
    if up.current().attempt <= fail_times:
        raise ConnectionError("again")
    return up.current().attempt


@up.pipeline(name="wide-jitter")
def wide_jitter(fail_times: int = 2):
    return wobbly(fail_times)


@up.task
def double(x: int) -> int:
    return 2 * x


@up.task
def is_small(values: list) -> bool:
    return sum(values) < 10


@up.task(alerts=[up.Alert(on=("success", "failure"), email=("team@example.com",))])
def report(values: list, cfg: dict) -> str:
    return f"{cfg['prefix']}{values}"


@up.pipeline(name="literal-map-negated-gate",
             alerts=[up.Alert(on=("success",), email=("team@example.com",))])
def literal_map(cfg: dict = {"prefix": "big: ", "unused": 1}):  # noqa: B006
    """Fan out over a literal list; a gate with expect=False; a param selected by key."""
    doubled = double.map(x=[1, 2, 3])
    with up.when(is_small(doubled), expect=False):
        text = report(doubled, cfg)
    return {"doubled": doubled, "text": text, "prefix": cfg["prefix"]}


@up.task(retry=up.Retry(max_retries=1, delay="0.1s", backoff=3.0, max_delay="0.2s"))
def needs_two(n: int) -> int:
    if up.current().attempt < 2:
        raise ConnectionError("first attempt fails")
    return n


@up.pipeline(name="nasty-strings")
def nasty(label: str = "\"\"\" ) ; import os; os.system('echo pwned') # {{ x }} \\ \n end"):
    """Docstring with \"\"\" quotes and a backslash \\ ."""
    return {"label": describe_label(label), "n": needs_two(3)}


@up.task
def describe_label(label: str) -> str:
    return label + " \u2713"


@up.task(retry=up.Retry(max_retries=2, delay="0.5s"))
def fragile(rows: int) -> int:
    import os
    import signal

    if up.current().attempt == 1:
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)  # the attempt's process dies without a word
    return rows * 2


@up.pipeline(name="sigkill")
def sigkill(rows: int = 21):
    return fragile(rows)


@up.task(timeout="1s", retries=1)
def slow_element(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@up.pipeline(name="mapped-timeout")
def mapped_timeout(delays: list = [0.1, 30.0]):  # noqa: B006
    """A map element that hangs: Prefect runs elements in threads; the attempt process is killed."""
    return slow_element.map(seconds=delays)
