"""Sub-pipelines for the kubeflow backend's tests (importable as ``kfp_subpipelines``: the
component processes import the tasks from here through RunOptions.search_path)."""

from __future__ import annotations

import unipipe as up

GROUP_ALERT = up.Alert(on=("success", "failure"), webhook="env:UNIPIPE_TEST_WEBHOOK")


@up.task
def numbers(n: int) -> list:
    return list(range(1, n + 1))


@up.task
def square(x: int) -> int:
    return x * x


@up.task
def total(values: list) -> int:
    return sum(values)


@up.task
def over(value: int, limit: int) -> bool:
    return value > limit


@up.task
def announce(flag: bool) -> str:
    return f"over the limit: {flag}"


@up.task(run_if="all_done")
def tidy() -> str:
    return "tidied"


@up.pipeline(name="sum-squares")
def sum_squares(values: list):
    """Squares each value and sums the squares."""
    return total(square.map(x=values))


@up.pipeline(name="summarise", alerts=[GROUP_ALERT])
def summarise(n: int, limit: int):
    """Sums the squares of 1..n and tells whether the sum is over the limit."""
    return over(sum_squares(numbers(n)), limit)


@up.pipeline(name="nested-groups")
def nested_groups(n: int = 3, limit: int = 10):
    """Nested (summarise calls sum_squares) and repeated sub-pipelines: one read by a task in
    the sub-pipeline around it, one whose result gates a block, one called inside that block,
    and a cleanup waiting for one."""
    first = summarise(n, limit)  # 1 + 4 + 9 = 14: over
    second = summarise(2, limit)  # 1 + 4 = 5: not over
    with up.when(first):
        third = summarise(4, limit)  # called inside up.when(): one dsl.If around the call
        announce(third)
    tidy().after(second)
    return first


# ---------------------------------------------------------------- a member that fails


@up.task
def explode(x: int) -> int:
    raise ValueError(f"{x} does not fit")


@up.task
def double(x: int) -> int:
    return 2 * x


@up.pipeline(name="risky", alerts=[GROUP_ALERT])
def risky(x: int):
    return explode(x)


@up.pipeline(name="wrapper", alerts=[GROUP_ALERT])
def wrapper(x: int):
    return double(risky(x))


@up.pipeline(name="failing-groups")
def failing_groups(x: int = 1):
    """wrapper__risky__explode fails: risky and wrapper fail (one failure alert each),
    wrapper_2 never starts (no alert), the cleanup after it runs, the run fails."""
    second = wrapper(wrapper(x))
    tidy().after(second)


# ---------------------------------------------------------------- shapes KFP refuses


@up.pipeline(name="load-retried", retries=1)
def load_retried(n: int):
    return total(numbers(n))


@up.pipeline(name="group-retry")
def group_retry(n: int = 3):
    return square(load_retried(n))


@up.pipeline(name="gated-inside")
def gated_inside(n: int, limit: int):
    rows = numbers(n)
    with up.when(over(total(rows), limit)):
        inner = total(rows)
    return inner


@up.pipeline(name="read-from-inside-if")
def read_from_inside_if(n: int = 3, limit: int = 10):
    return square(gated_inside(n, limit))


@up.pipeline(name="half-gated")
def half_gated(flag: bool, n: int):
    rows = numbers(n)
    with up.when(flag):
        total(rows)
    return rows


@up.pipeline(name="gate-from-outside")
def gate_from_outside(n: int = 3, limit: int = 10):
    return half_gated(over(n, limit), n)


# ---------------------------------------------------------------- mapped sub-pipelines


@up.task
def shards(n: int) -> list:
    return [{"id": i, "size": i + 2} for i in range(n)]


@up.task
def rows_of(shard: dict) -> list:
    return list(range(shard["size"]))


@up.task(retries=1)
def weigh(rows: list, shard_id: int) -> int:
    if shard_id == 1 and up.current().attempt < 2:
        raise ConnectionError("shard 1 is not ready yet")
    return sum(rows) * (shard_id + 1)


@up.task
def check(label: str) -> str:
    if label == "b":
        raise ValueError(f"label {label} is refused")
    return label.upper()


@up.pipeline(name="per-shard")
def per_shard(shard: dict):
    return weigh(rows_of(shard), shard["id"])


@up.pipeline(name="per-label")
def per_label(label: str):
    return check(label)


@up.pipeline(name="mapped-groups")
def mapped_groups(n: int = 3, labels: list = ["a", "c"]):  # noqa: B006 - a parameter default
    """A sub-pipeline mapped over a task's list output, two copies at a time (a key path on
    the item, a retry in copy 1), one mapped over a parameter, one over a literal list; the
    totals read each as a list."""
    weights = per_shard.map(shard=shards(n), max_parallel=2)
    upper = per_label.map(label=labels)
    fixed = per_label.map(label=["x", "y"])
    return total(weights), upper, fixed


@up.pipeline(name="mapped-group-fails")
def mapped_group_fails(labels: list = ["a", "b", "c"]):  # noqa: B006 - a parameter default
    """Copy 1 fails: the others finish, the reader is upstream-failed."""
    return announce(per_label.map(label=labels))


@up.pipeline(name="map-over-a-key")
def map_over_a_key(n: int = 2):
    return per_label.map(label=shards(n)["names"])


@up.pipeline(name="flagged")
def flagged(x: int):
    return over(x, 1)


@up.pipeline(name="gate-on-a-copy")
def gate_on_a_copy():
    with up.when(flagged.map(x=[1, 2])):
        announce(True)


@up.pipeline(name="sum-each")
def sum_each(n: int, labels: list):
    """Two mapped sub-pipelines inside a plain one: over its task's output and over a
    parameter it takes in; it returns the second's outputs as a list."""
    firsts = per_shard.map(shard=shards(n))
    return total(firsts), per_label.map(label=labels, max_parallel=1)


@up.pipeline(name="mapped-inside-a-group")
def mapped_inside_a_group(n: int = 2, labels: list = ["p", "q"]):  # noqa: B006 - a default
    weight, upper = sum_each(n, labels)
    return summary(upper), weight


@up.task
def summary(values: list) -> str:
    return "/".join(values)
