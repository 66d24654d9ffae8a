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


# ---------------------------------------------------------------- sub-pipelines (subflows)


@up.task
def rows_of(n: int) -> list:
    return list(range(1, n + 1))


@up.task
def count(rows: list) -> int:
    return len(rows)


@up.task(retries=1)
def scale(rows: list, factor: int) -> list:
    return [r * factor for r in rows]


@up.task
def summed(rows: list) -> int:
    return sum(rows)


@up.task(run_if="one_failed")
def page_someone() -> str:
    return "paged"


@up.pipeline(name="check-rows")
def check_rows(rows: list):
    """Counts the rows."""
    return count(rows)


@up.pipeline(name="prepare-rows")
def prepare_rows(rows: list, factor: int):
    """Scales the rows and checks them (a sub-pipeline calling another)."""
    scaled = scale(rows, factor)
    check_rows(scaled)
    return summed(scaled)


@up.pipeline(name="publish-total", retries=2, retry_delay="5s",
             alerts=[up.Alert(on=("failure", "success"), webhook="env:UNIPIPE_TEST_WEBHOOK")])
def publish_total(total: int, label: str):
    """Publishes the total, tried again as a whole up to twice."""
    return describe_label(label).after(count(rows_of(total)))


@up.pipeline(name="subpipelines")
def subpipelines(n: int = 3, factor: int = 10, label: str = "total"):
    """Nested and repeated sub-pipelines, one retried, one alerting."""
    rows = rows_of(n)
    small = prepare_rows(rows, 1)
    large = prepare_rows(rows, factor)
    published = publish_total(large, label)
    page_someone().after(published)
    return {"small": small, "large": large, "published": published}


@up.task(retries=1)
def shaky(rows: list) -> list:
    raise ValueError(f"{len(rows)} rows rejected")


@up.pipeline(name="split-ingest",
             alerts=[up.Alert(on=("failure", "success"), webhook="env:UNIPIPE_TEST_WEBHOOK")])
def split_ingest(rows: list):
    """One member fails, the other succeeds: the group fails, its good member's output is used."""
    shaky(rows)
    return count(rows)


@up.pipeline(name="late-group",
             alerts=[up.Alert(on=("failure", "success"), webhook="env:UNIPIPE_TEST_WEBHOOK")])
def late_group(rows: list):
    """Below a failed task: none of its tasks run, so it sends no alert."""
    return count(rows)


@up.pipeline(name="group-member-outcomes")
def group_member_outcomes(n: int = 3):
    rows = rows_of(n)
    counted = split_ingest(rows)
    doubled = double(counted)  # reads the member that succeeded: runs, as on the reference
    bad = shaky(rows)
    late_group(bad)
    return doubled


@up.task
def flaky_once_per_run(rows: list) -> int:
    import json

    from unipipe.runtime.store import read_bytes, write_bytes

    url = f"{up.current().scratch_url()}/tries.json"  # shared by every try of one run
    raw = read_bytes(url)
    tries = (json.loads(raw) if raw else 0) + 1
    write_bytes(url, json.dumps(tries).encode())
    if tries < 2:
        raise ConnectionError(f"try {tries}")
    return len(rows)


@up.pipeline(name="whole-run-over-groups", retries=1, retry_delay="1s")
def whole_run_over_groups(n: int = 3):
    """The run is retried; its group completed in the first try and runs again in the second."""
    counted = check_rows(rows_of(n))
    return flaky_once_per_run(rows_of(counted))


# mapped sub-pipelines (sub.map): one subflow run per item, its task runs task[i]

@up.task
def shard_plan(n: int) -> dict:
    return {"shards": [{"id": i, "rows": list(range(i + 2))} for i in range(n)], "unit": 10}


@up.task
def shard_rows(shard: dict, unit: int) -> list:
    return [r * unit for r in shard["rows"]]


@up.task
def shard_sum(rows: list, shard_id: int) -> int:
    return sum(rows) + shard_id


@up.task
def tag(name: str) -> str:
    return f"tag:{name}"


@up.task
def shard_report(sums: list, tags: list) -> dict:
    return {"sums": sums, "tags": tags}


@up.pipeline(name="per-shard")
def per_shard(shard: dict, unit: int):
    """Sums one shard."""
    return shard_sum(shard_rows(shard, unit), shard["id"])


@up.pipeline(name="tag-one")
def tag_one(name: str):
    return tag(name)


@up.pipeline(name="mapped-subpipelines")
def mapped_subpipelines(n: int = 3):
    """A sub-pipeline mapped over a task's key path two at a time (reading another key of the
    same task), and one mapped over a literal list."""
    plan = shard_plan(n)
    sums = per_shard.map(shard=plan["shards"], unit=plan["unit"], max_parallel=2)
    tags = tag_one.map(name=["a", "b"])
    return shard_report(sums, tags)


@up.task
def broken_plan(n: int) -> dict:
    raise ValueError("no plan today")


@up.pipeline(name="mapped-below-a-failure")
def mapped_below_a_failure(n: int = 2):
    """The task the items come from fails: no copy runs, every member is upstream_failed."""
    plan = broken_plan(n)
    return shard_report(per_shard.map(shard=plan["shards"], unit=plan["unit"]), [])


# ---------------------------------------------------------------- file artifacts in other shapes


@up.task
def write_rows(n: int, table: up.Output[up.Dataset]) -> int:
    with open(table.path, "w") as fh:
        fh.write("".join(f"{i}\n" for i in range(n)))
    return n


@up.task
def read_rows(shard: int, table: up.Input[up.Dataset]) -> int:
    with open(table.path) as fh:
        rows = [int(line) for line in fh]
    up.log_metric("rows", len(rows))  # a map element's metrics: kept per element run only
    return sum(rows) * shard


@up.task(cache=True)
def summarise_rows(table: up.Input[up.Dataset]) -> int:
    with open(table.path) as fh:
        total = sum(int(line) for line in fh)
    up.log_metric("total", total)
    up.report(f"**{total}**")
    return total


@up.pipeline(name="rows-group")
def rows_group(n: int):
    """Writes and summarises its own file (a subflow with artifacts inside)."""
    made = write_rows(n)
    return summarise_rows(table=made.outputs["table"])


@up.pipeline(name="artifact-shapes")
def artifact_shapes(n: int = 3):
    """A mapped consumer of one file, and a sub-pipeline with artifacts of its own."""
    made = write_rows(n)
    per = read_rows.map(shard=[1, 2, 3], table=made.outputs["table"])
    inner = rows_group(n)
    return {"per": per, "inner": inner}


# ---------------------------------------------------------------- issue 14: dates, assets


@up.task
def when_am_i(label: str) -> dict:
    """The run's logical date as the task sees it (up.current().logical_date)."""
    when = up.current().logical_date
    return {"label": label, "logical_date": when.isoformat() if when is not None else None}


@up.task
def when_am_i_slowly(label: str, seconds: float) -> dict:
    """As when_am_i, taking ``seconds`` (runs side by side overlap)."""
    time.sleep(seconds)
    when = up.current().logical_date
    return {"label": label, "logical_date": when.isoformat() if when is not None else None}


@up.pipeline(name="p14-nightly",
             schedule=up.Schedule(cron="30 2 * * *", timezone="Europe/Berlin"))
def nightly(label: str = "nightly", seconds: float = 0.0):
    return when_am_i_slowly(label, seconds)


p14_features = up.Asset("s3://p14-lake/features/")
p14_other = up.Asset("s3://p14-lake/other")


@up.task(produces=[p14_features])
def build_p14_features(fail: bool) -> int:
    if fail:
        raise ValueError("no features today")
    return 42


@up.pipeline(name="p14-producer")
def producer(fail: bool = False):
    return build_p14_features(fail)


@up.pipeline(name="p14-consumer", trigger=up.On(p14_features, p14_other, mode="any"))
def consumer(label: str = "triggered"):
    return when_am_i(label)


@up.pipeline(name="p14-consumer-all", trigger=up.On(p14_features, p14_other))
def consumer_all(label: str = "both"):
    return when_am_i(label)


@up.pipeline(name="p14-windowed",
             schedule=up.Schedule(cron="30 2 * * *", timezone="Europe/Berlin",
                                  start="2024-03-28", end="2024-04-03", catchup=True))
def windowed(label: str = "caught up"):
    return when_am_i(label)


@up.pipeline(name="p14-dated-group")
def dated_group(label: str = "inner"):
    return when_am_i(label)


@up.pipeline(name="p14-dated-outer")
def dated_outer(label: str = "outer"):
    return {"outer": when_am_i(label), "inner": dated_group("inner")}
